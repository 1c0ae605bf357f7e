// The configuration of a training run, read from a JSON file (configs/README.md documents every
// field). Every field has a default except `data.train`; the struct holds effective values, so
// derived defaults (run_dir, checkpoint.dir, head.m) are already filled in.
// Parsing and value checks: TrainingConfiguration+Validation.swift; `--set`: +Overrides.swift.
import Foundation

public struct TrainingConfiguration: Equatable, Sendable {
    /// Run name; the default run directory is `runs/<name>`.
    public var name: String
    /// Free text for people (how the data was made, what the run is for).
    public var runDescription: String
    /// Seeds initialisation, sampling, augmentation and dropout (0 … Int.max).
    public var seed: Int
    /// metrics.jsonl, the resolved config and the world size go here.
    public var runDir: String
    public var model: ModelSection
    public var head: HeadSection
    public var data: DataSection
    public var optimizer: OptimizerSection
    public var training: TrainingSection
    public var checkpoint: CheckpointSection
    public var validation: ValidationSection

    /// The document the values came from, before defaults: `--set name=x` then also moves a
    /// run_dir that the file left to its default. Not part of equality.
    var sourceDocument: ConfigJSON?
    /// The file name (or other origin) that errors found later are reported against.
    public internal(set) var source: String

    /// `runDir` "" means `runs/<name>`; `checkpoint.dir` "" means `<runDir>/checkpoints`.
    public init(name: String = "adaface", runDescription: String = "", seed: Int = 1, runDir: String = "",
                model: ModelSection = ModelSection(), head: HeadSection = HeadSection(), data: DataSection,
                optimizer: OptimizerSection = OptimizerSection(), training: TrainingSection = TrainingSection(),
                checkpoint: CheckpointSection = CheckpointSection(), validation: ValidationSection = ValidationSection()) {
        self.name = name
        self.runDescription = runDescription
        self.seed = seed
        self.runDir = runDir.isEmpty ? Self.defaultRunDir(name: name) : runDir
        self.model = model
        self.head = head
        self.data = data
        self.optimizer = optimizer
        self.training = training
        self.checkpoint = checkpoint
        if self.checkpoint.dir.isEmpty { self.checkpoint.dir = Self.defaultCheckpointDir(runDir: self.runDir) }
        self.validation = validation
        self.sourceDocument = nil
        self.source = ""
    }

    static func defaultRunDir(name: String) -> String { "runs/" + name }
    static func defaultCheckpointDir(runDir: String) -> String {
        (runDir.hasSuffix("/") ? runDir : runDir + "/") + "checkpoints"
    }

    public static func == (a: TrainingConfiguration, b: TrainingConfiguration) -> Bool {
        a.name == b.name && a.runDescription == b.runDescription && a.seed == b.seed && a.runDir == b.runDir
            && a.model == b.model && a.head == b.head && a.data == b.data && a.optimizer == b.optimizer
            && a.training == b.training && a.checkpoint == b.checkpoint && a.validation == b.validation
    }

    // MARK: - Sections

    public enum Architecture: String, CaseIterable, Sendable {
        /// ir101 is the name AdaFace uses for IR-100 (the same network).
        case ir18, ir34, ir50, ir100, ir101
    }

    public struct ModelSection: Equatable, Sendable {
        public var arch: Architecture
        public var embeddingSize: Int
        public var dropout: Double

        public init(arch: Architecture = .ir50, embeddingSize: Int = 512, dropout: Double = 0.4) {
            self.arch = arch; self.embeddingSize = embeddingSize; self.dropout = dropout
        }
    }

    public enum Margin: String, CaseIterable, Sendable {
        case adaface, arcface, cosface

        /// The usual margin of each loss: AdaFace 0.4, ArcFace 0.5, CosFace 0.4.
        public var defaultM: Double {
            switch self {
            case .adaface, .cosface: return 0.4
            case .arcface: return 0.5
            }
        }
    }

    public struct HeadSection: Equatable, Sendable {
        public var margin: Margin
        /// Margin m (AdaFace's angular and additive scale, ArcFace's angle, CosFace's cosine).
        public var m: Double
        /// AdaFace's h: how strongly the normalised feature norm moves the margin (ignored by the others).
        public var h: Double
        /// Logit scale s.
        public var s: Double
        /// EMA rate of the batch feature-norm mean and std (AdaFace only).
        public var tAlpha: Double
        /// Partial FC: fraction of each rank's classes in the softmax per step; 1 is the full softmax.
        public var sampleRate: Double

        /// `m` nil takes the margin's usual value.
        public init(margin: Margin = .adaface, m: Double? = nil, h: Double = 0.333, s: Double = 64,
                    tAlpha: Double = 0.01, sampleRate: Double = 1) {
            self.margin = margin; self.m = m ?? margin.defaultM; self.h = h; self.s = s
            self.tAlpha = tAlpha; self.sampleRate = sampleRate
        }
    }

    /// Probabilities of the official AdaFace augmentations (each an independent draw).
    public struct AugmentationSection: Equatable, Sendable {
        public var crop: Double
        public var lowResolution: Double
        public var photometric: Double
        public var flip: Double

        public init(crop: Double = 0.2, lowResolution: Double = 0.2, photometric: Double = 0.2, flip: Double = 0.5) {
            self.crop = crop; self.lowResolution = lowResolution; self.photometric = photometric; self.flip = flip
        }
    }

    public struct DataSection: Equatable, Sendable {
        /// RecordIO directory (train.rec + train.idx), a .rec file, or an image-folder root.
        public var train: String
        /// 0: the class count of the training data.
        public var numClasses: Int
        /// Off: no augmentation at all, whatever `augmentation` says.
        public var augment: Bool
        public var augmentation: AugmentationSection
        /// 0: cores of the node divided by the ranks on the node.
        public var loaderThreads: Int
        public var queueDepth: Int
        public var maxBadFraction: Double

        public init(train: String, numClasses: Int = 0, augment: Bool = true,
                    augmentation: AugmentationSection = AugmentationSection(), loaderThreads: Int = 0,
                    queueDepth: Int = 2, maxBadFraction: Double = 0.01) {
            self.train = train; self.numClasses = numClasses; self.augment = augment
            self.augmentation = augmentation; self.loaderThreads = loaderThreads
            self.queueDepth = queueDepth; self.maxBadFraction = maxBadFraction
        }

        /// The probabilities the loader applies.
        public var effectiveAugmentation: AugmentationSection {
            augment ? augmentation : AugmentationSection(crop: 0, lowResolution: 0, photometric: 0, flip: 0)
        }
    }

    public enum ScheduleKind: String, CaseIterable, Sendable {
        case multistep, poly, constant
    }

    public struct ScheduleSection: Equatable, Sendable {
        public var type: ScheduleKind
        /// Epochs (fractions allowed) at which multistep multiplies the rate by `gamma`.
        public var milestones: [Double]
        public var gamma: Double
        /// Linear warmup from ~0 to the base rate over this many epochs (0: none).
        public var warmupEpochs: Double
        /// Exponent of the polynomial decay.
        public var power: Double

        public init(type: ScheduleKind = .multistep, milestones: [Double] = [12, 20, 24], gamma: Double = 0.1,
                    warmupEpochs: Double = 0, power: Double = 1) {
            self.type = type; self.milestones = milestones; self.gamma = gamma
            self.warmupEpochs = warmupEpochs; self.power = power
        }
    }

    public struct OptimizerSection: Equatable, Sendable {
        /// Rate for a global batch of `referenceBatch`.
        public var lr: Double
        public var referenceBatch: Int
        /// Linear scaling rule: the rate grows with global_batch / reference_batch.
        public var scaleLRWithBatch: Bool
        public var momentum: Double
        /// On conv and linear weights, biases, PReLU slopes and the head; never on BatchNorm.
        public var weightDecay: Double
        public var schedule: ScheduleSection

        public init(lr: Double = 0.1, referenceBatch: Int = 512, scaleLRWithBatch: Bool = true, momentum: Double = 0.9,
                    weightDecay: Double = 5e-4, schedule: ScheduleSection = ScheduleSection()) {
            self.lr = lr; self.referenceBatch = referenceBatch; self.scaleLRWithBatch = scaleLRWithBatch
            self.momentum = momentum; self.weightDecay = weightDecay; self.schedule = schedule
        }
    }

    public enum NonFinitePolicy: String, CaseIterable, Sendable {
        /// Skip the step (no update) and count it.
        case skip
        /// Stop the run with an error.
        case abort
    }

    public struct TrainingSection: Equatable, Sendable {
        public var epochs: Int
        /// Samples per step over all ranks; every rank takes global_batch / world size.
        public var globalBatch: Int
        /// OpenBLAS and kernel threads per rank; 0: cores of the node divided by its ranks.
        public var threads: Int
        public var logEvery: Int
        /// Stop after this many steps in total (0: run all epochs). The schedule still spans all epochs.
        public var maxSteps: Int
        public var nonfinite: NonFinitePolicy
        /// The run aborts once more steps than this were skipped (0: no limit).
        public var maxSkippedSteps: Int
        /// Compare parameter checksums across ranks every this many steps (0: only at the start).
        public var verifyParametersEvery: Int
        public var bucketMB: Double
        public var firstBucketMB: Double
        /// A rank waiting longer than this in a collective declares the job dead.
        public var timeoutSeconds: Double

        public init(epochs: Int = 26, globalBatch: Int = 512, threads: Int = 0, logEvery: Int = 50, maxSteps: Int = 0,
                    nonfinite: NonFinitePolicy = .skip, maxSkippedSteps: Int = 100, verifyParametersEvery: Int = 0,
                    bucketMB: Double = 25, firstBucketMB: Double = 1, timeoutSeconds: Double = 600) {
            self.epochs = epochs; self.globalBatch = globalBatch; self.threads = threads; self.logEvery = logEvery
            self.maxSteps = maxSteps; self.nonfinite = nonfinite; self.maxSkippedSteps = maxSkippedSteps
            self.verifyParametersEvery = verifyParametersEvery; self.bucketMB = bucketMB
            self.firstBucketMB = firstBucketMB; self.timeoutSeconds = timeoutSeconds
        }
    }

    public enum Compression: String, CaseIterable, Sendable {
        case none, zstd
    }

    public enum DiskFullPolicy: String, CaseIterable, Sendable {
        /// Stop the run cleanly; the previous checkpoint stays the newest.
        case stop
        /// Report it, drop the partial checkpoint and go on training.
        case continueTraining = "continue"
    }

    public struct CheckpointSection: Equatable, Sendable {
        /// "" means `<run_dir>/checkpoints`.
        public var dir: String
        /// 0: no step-based checkpoints.
        public var everySteps: Int
        public var atEpochEnd: Bool
        public var keepLast: Int
        public var compression: Compression
        /// zstd level (used only with zstd compression).
        public var compressionLevel: Int
        public var onDiskFull: DiskFullPolicy

        public init(dir: String = "", everySteps: Int = 1000, atEpochEnd: Bool = true, keepLast: Int = 3,
                    compression: Compression = .none, compressionLevel: Int = 3, onDiskFull: DiskFullPolicy = .stop) {
            self.dir = dir; self.everySteps = everySteps; self.atEpochEnd = atEpochEnd; self.keepLast = keepLast
            self.compression = compression; self.compressionLevel = compressionLevel; self.onDiskFull = onDiskFull
        }
    }

    public struct ValidationSection: Equatable, Sendable {
        /// InsightFace verification .bin files.
        public var bins: [String]
        /// 0: not step-based.
        public var everySteps: Int
        /// At the end of every epoch and after the last step of the run.
        public var atEpochEnd: Bool
        public var batch: Int

        public init(bins: [String] = [], everySteps: Int = 0, atEpochEnd: Bool = true, batch: Int = 64) {
            self.bins = bins; self.everySteps = everySteps; self.atEpochEnd = atEpochEnd; self.batch = batch
        }
    }
}

// MARK: - Errors

/// A configuration that cannot be used; `path` names the field by its dotted path.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The file is missing or unreadable.
        case unreadable
        /// Not JSON, or not a JSON object.
        case syntax
        case unknownKey
        case missingKey
        case wrongType
        /// A value outside its range or inconsistent with another field.
        case invalidValue
        /// A value that does not fit the world size or the training data.
        case incompatible
        /// A data path that does not exist.
        case missingFile
    }

    public var kind: Kind
    /// The file, or `--set key=value` for an override.
    public var source: String
    /// Dotted path such as `optimizer.schedule.milestones[1]`; "" for the whole document.
    public var path: String
    public var message: String

    public init(_ kind: Kind, path: String, _ message: String, source: String = "") {
        self.kind = kind; self.path = path; self.message = message; self.source = source
    }

    public var description: String {
        [source, path, message].filter { !$0.isEmpty }.joined(separator: ": ")
    }
}

// MARK: - Loading, the resolved form, derived values

extension TrainingConfiguration {
    /// Reads and validates a JSON file, applying `overrides` (`--set key=value`) to the file's
    /// document before defaults are filled in.
    public static func load(path: String, overrides: [(key: String, value: String)] = []) throws -> TrainingConfiguration {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            let reason = !exists ? "no such file" : isDirectory.boolValue ? "is a directory, not a JSON file"
                : "cannot be read (\((error as NSError).localizedDescription))"
            throw ConfigurationError(.unreadable, path: "", reason, source: path)
        }
        return try TrainingConfiguration(json: bytes, source: path, overrides: overrides)
    }

    /// Parses and validates a JSON document; `source` names it in errors.
    public init(json bytes: [UInt8], source: String, overrides: [(key: String, value: String)] = []) throws {
        let document: ConfigJSON
        do {
            document = try ConfigJSONParser.parse(bytes)
        } catch let error as ConfigJSONSyntaxError {
            throw ConfigurationError(.syntax, path: "",
                                     "not valid JSON: \(error.message) at line \(error.line), column \(error.column)",
                                     source: source)
        }
        guard case .object = document else {
            throw ConfigurationError(.syntax, path: "", "expected a JSON object at the top, got \(document.kindDescription)",
                                     source: source)
        }
        self = try TrainingConfiguration(document: document, source: source)
        try apply(overrides: overrides)
    }

    public init(jsonText: String, source: String, overrides: [(key: String, value: String)] = []) throws {
        try self.init(json: Array(jsonText.utf8), source: source, overrides: overrides)
    }

    /// The text of `configs/synth_small.json`: the run the README's main command makes.
    public static func embeddedDefault() throws -> TrainingConfiguration {
        try TrainingConfiguration(jsonText: embeddedDefaultJSON, source: "configs/synth_small.json")
    }

    /// Every field, defaults filled in, keys sorted, two-space indentation: the run folder's copy.
    public func resolvedJSON() -> String { resolvedDocument.prettyText }

    /// Compact with sorted keys; equal configurations give equal bytes on every rank.
    public var canonicalJSON: String { resolvedDocument.compactText }

    /// FNV-1a 64 of `canonicalJSON`, for ranks to compare after the broadcast.
    public var canonicalHash: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in canonicalJSON.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// `canonicalHash` as 16 hex digits.
    public var canonicalHashHex: String {
        let hex = String(canonicalHash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The base rate after the linear scaling rule: lr × global_batch / reference_batch.
    public var effectiveLearningRate: Double {
        optimizer.scaleLRWithBatch
            ? optimizer.lr * Double(training.globalBatch) / Double(optimizer.referenceBatch)
            : optimizer.lr
    }

    /// Samples per step on each rank (after `validate(worldSize:)` this divides exactly).
    public func localBatch(worldSize: Int) -> Int { training.globalBatch / worldSize }

    /// The classes of the head: `data.num_classes`, or the data's count when that is 0.
    public func classCount(datasetClasses: Int) -> Int {
        data.numClasses > 0 ? data.numClasses : datasetClasses
    }

    /// Complete global batches in one epoch (the incomplete last one is dropped).
    public func stepsPerEpoch(images: Int) -> Int { images / training.globalBatch }

    /// Steps of the whole run: all epochs, capped by `training.max_steps`.
    public func totalSteps(images: Int) -> Int {
        let all = training.epochs * stepsPerEpoch(images: images)
        return training.maxSteps > 0 ? min(all, training.maxSteps) : all
    }

    /// Every field as a JSON object with its effective value.
    var resolvedDocument: ConfigJSON {
        func object(_ members: [(String, ConfigJSON)]) -> ConfigJSON { .object(members.map { (key: $0.0, value: $0.1) }) }
        func strings(_ values: [String]) -> ConfigJSON { .array(values.map(ConfigJSON.string)) }
        let schedule = optimizer.schedule
        let augmentation = data.augmentation
        return object([
            ("name", .string(name)),
            ("description", .string(runDescription)),
            ("seed", .integer(seed)),
            ("run_dir", .string(runDir)),
            ("model", object([
                ("arch", .string(model.arch.rawValue)),
                ("embedding_size", .integer(model.embeddingSize)),
                ("dropout", .double(model.dropout)),
            ])),
            ("head", object([
                ("margin", .string(head.margin.rawValue)),
                ("m", .double(head.m)),
                ("h", .double(head.h)),
                ("s", .double(head.s)),
                ("t_alpha", .double(head.tAlpha)),
                ("sample_rate", .double(head.sampleRate)),
            ])),
            ("data", object([
                ("train", .string(data.train)),
                ("num_classes", .integer(data.numClasses)),
                ("augment", .bool(data.augment)),
                ("augmentation", object([
                    ("crop", .double(augmentation.crop)),
                    ("low_resolution", .double(augmentation.lowResolution)),
                    ("photometric", .double(augmentation.photometric)),
                    ("flip", .double(augmentation.flip)),
                ])),
                ("loader_threads", .integer(data.loaderThreads)),
                ("queue_depth", .integer(data.queueDepth)),
                ("max_bad_fraction", .double(data.maxBadFraction)),
            ])),
            ("optimizer", object([
                ("lr", .double(optimizer.lr)),
                ("reference_batch", .integer(optimizer.referenceBatch)),
                ("scale_lr_with_batch", .bool(optimizer.scaleLRWithBatch)),
                ("momentum", .double(optimizer.momentum)),
                ("weight_decay", .double(optimizer.weightDecay)),
                ("schedule", object([
                    ("type", .string(schedule.type.rawValue)),
                    ("milestones", .array(schedule.milestones.map(ConfigJSON.double))),
                    ("gamma", .double(schedule.gamma)),
                    ("warmup_epochs", .double(schedule.warmupEpochs)),
                    ("power", .double(schedule.power)),
                ])),
            ])),
            ("training", object([
                ("epochs", .integer(training.epochs)),
                ("global_batch", .integer(training.globalBatch)),
                ("threads", .integer(training.threads)),
                ("log_every", .integer(training.logEvery)),
                ("max_steps", .integer(training.maxSteps)),
                ("nonfinite", .string(training.nonfinite.rawValue)),
                ("max_skipped_steps", .integer(training.maxSkippedSteps)),
                ("verify_parameters_every", .integer(training.verifyParametersEvery)),
                ("bucket_mb", .double(training.bucketMB)),
                ("first_bucket_mb", .double(training.firstBucketMB)),
                ("timeout_seconds", .double(training.timeoutSeconds)),
            ])),
            ("checkpoint", object([
                ("dir", .string(checkpoint.dir)),
                ("every_steps", .integer(checkpoint.everySteps)),
                ("at_epoch_end", .bool(checkpoint.atEpochEnd)),
                ("keep_last", .integer(checkpoint.keepLast)),
                ("compression", .string(checkpoint.compression.rawValue)),
                ("compression_level", .integer(checkpoint.compressionLevel)),
                ("on_disk_full", .string(checkpoint.onDiskFull.rawValue)),
            ])),
            ("validation", object([
                ("bins", strings(validation.bins)),
                ("every_steps", .integer(validation.everySteps)),
                ("at_epoch_end", .bool(validation.atEpochEnd)),
                ("batch", .integer(validation.batch)),
            ])),
        ])
    }

    /// Dotted paths of every field, in document order (sections are not listed, their fields are).
    public static var fieldPaths: [String] {
        var paths: [String] = []
        func walk(_ node: ConfigJSON, _ prefix: String) {
            guard case let .object(members) = node else { paths.append(prefix); return }
            for member in members { walk(member.value, prefix.isEmpty ? member.key : prefix + "." + member.key) }
        }
        walk(schema, "")
        return paths
    }

    /// A configuration with every default: the shape that keys are checked against.
    static let schema = TrainingConfiguration(data: DataSection(train: "data")).resolvedDocument
}

// MARK: - The embedded default

extension TrainingConfiguration {
    /// The text of configs/synth_small.json, so the binary runs its default without the repo
    /// (a test keeps the two identical).
    public static let embeddedDefaultJSON = """
    {
      "name": "synth_small",
      "description": "Short IR-18 run on synthetic faces for a 2-core machine (mpirun -n 2). Make the data first: adaface-dist synth --out data/synth --identities 128 --images-per-identity 10 --pairs 200",
      "seed": 1,
      "run_dir": "runs/synth_small",
      "model": {"arch": "ir18", "embedding_size": 512, "dropout": 0.4},
      "head": {"margin": "adaface", "m": 0.4, "h": 0.333, "s": 64.0, "t_alpha": 0.01, "sample_rate": 1.0},
      "data": {
        "train": "data/synth",
        "num_classes": 0,
        "augment": true,
        "augmentation": {"crop": 0.2, "low_resolution": 0.2, "photometric": 0.2, "flip": 0.5},
        "loader_threads": 0,
        "queue_depth": 2,
        "max_bad_fraction": 0.01
      },
      "optimizer": {
        "lr": 0.1,
        "reference_batch": 64,
        "scale_lr_with_batch": true,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": {"type": "poly", "milestones": [], "gamma": 0.1, "warmup_epochs": 0.5, "power": 1.0}
      },
      "training": {
        "epochs": 4,
        "global_batch": 64,
        "threads": 0,
        "log_every": 5,
        "max_steps": 0,
        "nonfinite": "skip",
        "max_skipped_steps": 10,
        "verify_parameters_every": 20,
        "bucket_mb": 25.0,
        "first_bucket_mb": 1.0,
        "timeout_seconds": 300
      },
      "checkpoint": {
        "dir": "",
        "every_steps": 25,
        "at_epoch_end": true,
        "keep_last": 2,
        "compression": "none",
        "compression_level": 3,
        "on_disk_full": "stop"
      },
      "validation": {
        "bins": ["data/synth/val.bin"],
        "every_steps": 0,
        "at_epoch_end": false,
        "batch": 64
      }
    }

    """
}
