// The training configuration: every file in configs/ parses, defaults, errors that name the field
// by its dotted path, --set overrides, the resolved form and the hash ranks compare.
import Foundation
import Training
import XCTest

/// The repository's configs/ folder, found from this file's location.
let trainingConfigsDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("configs").path

final class TrainingConfigurationTests: XCTestCase {
    private func config(_ json: String, overrides: [(key: String, value: String)] = []) throws -> TrainingConfiguration {
        try TrainingConfiguration(jsonText: json, source: "test.json", overrides: overrides)
    }

    /// The error `body` throws; fails when it throws none or another type.
    private func configurationError(_ body: () throws -> Void, file: StaticString = #filePath,
                                    line: UInt = #line) -> ConfigurationError? {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch let error as ConfigurationError {
            return error
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
        return nil
    }

    /// Parsing `json` fails with `kind` at `path`, and the message contains `message`.
    private func assertRejected(_ json: String, _ kind: ConfigurationError.Kind, path: String, _ message: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        guard let error = configurationError({ _ = try config(json) }, file: file, line: line) else { return }
        XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
        XCTAssertEqual(error.path, path, "\(error)", file: file, line: line)
        XCTAssertTrue(error.message.contains(message), "\"\(error.message)\" lacks \"\(message)\"", file: file, line: line)
        XCTAssertEqual(error.source, "test.json", file: file, line: line)
    }

    /// A document with data.train plus `sections` (JSON members without the braces).
    private func document(_ sections: String = "") -> String {
        sections.isEmpty ? #"{"data": {"train": "data/x"}}"# : #"{"data": {"train": "data/x"}, "# + sections + "}"
    }

    private func configFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: trainingConfigsDirectory).filter { $0.hasSuffix(".json") }.sorted()
    }

    // MARK: - The files in configs/

    func testEveryConfigFileParsesAndRoundTrips() throws {
        let files = try configFiles()
        for expected in ["ir101_webface4m.json", "ir18_casia.json", "ir50_webface4m.json", "synth_small.json"] {
            XCTAssertTrue(files.contains(expected), "configs/\(expected) is missing")
        }
        for file in files {
            let path = trainingConfigsDirectory + "/" + file
            let configuration = try TrainingConfiguration.load(path: path)
            XCTAssertEqual(configuration.name, String(file.dropLast(5)), file)
            XCTAssertEqual(configuration.runDir, "runs/" + configuration.name, file)
            XCTAssertEqual(configuration.checkpoint.dir, "runs/\(configuration.name)/checkpoints", file)
            XCTAssertEqual(configuration.source, path)
            try configuration.validate(worldSize: 1)
            try configuration.validate(worldSize: 2)
            let reread = try TrainingConfiguration(jsonText: configuration.resolvedJSON(), source: "resolved")
            XCTAssertEqual(reread, configuration, file)
            XCTAssertEqual(reread.canonicalHash, configuration.canonicalHash, file)
        }
    }

    func testRecipeConfigsFollowTheOfficialAdaFaceRecipe() throws {
        let expectations: [(file: String, arch: TrainingConfiguration.Architecture, classes: Int)] = [
            ("ir50_webface4m.json", .ir50, 205_990), ("ir101_webface4m.json", .ir101, 205_990), ("ir18_casia.json", .ir18, 10_572),
        ]
        for (file, arch, classes) in expectations {
            let c = try TrainingConfiguration.load(path: trainingConfigsDirectory + "/" + file)
            XCTAssertEqual(c.model.arch, arch, file)
            XCTAssertEqual(c.model.embeddingSize, 512, file)
            XCTAssertEqual(c.model.dropout, 0.4, file)
            XCTAssertEqual(c.data.numClasses, classes, file)
            XCTAssertTrue(c.data.augment, file)
            XCTAssertEqual(c.data.augmentation, TrainingConfiguration.AugmentationSection(), file)
            XCTAssertEqual(c.head, TrainingConfiguration.HeadSection(margin: .adaface, m: 0.4, h: 0.333, s: 64, tAlpha: 0.01,
                                                                      sampleRate: 1), file)
            XCTAssertEqual(c.training.globalBatch, 512, file)
            XCTAssertEqual(c.training.epochs, 26, file)
            XCTAssertEqual(c.optimizer.lr, 0.1, file)
            XCTAssertEqual(c.effectiveLearningRate, 0.1, file)
            XCTAssertEqual(c.optimizer.momentum, 0.9, file)
            XCTAssertEqual(c.optimizer.weightDecay, 5e-4, file)
            XCTAssertEqual(c.optimizer.schedule.type, .multistep, file)
            XCTAssertEqual(c.optimizer.schedule.milestones, [12, 20, 24], file)
            XCTAssertEqual(c.optimizer.schedule.gamma, 0.1, file)
            XCTAssertEqual(c.optimizer.schedule.warmupEpochs, 0, file)
            XCTAssertEqual(c.validation.bins.count, 5, file)
        }
    }

    func testSynthSmallIsTheEmbeddedDefault() throws {
        let path = trainingConfigsDirectory + "/synth_small.json"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertEqual(text, TrainingConfiguration.embeddedDefaultJSON, "configs/synth_small.json and embeddedDefaultJSON differ")
        let embedded = try TrainingConfiguration.embeddedDefault()
        XCTAssertEqual(embedded, try TrainingConfiguration.load(path: path))
        XCTAssertEqual(embedded.model.arch, .ir18)
        XCTAssertEqual(embedded.data.train, "data/synth")
        XCTAssertEqual(embedded.validation.bins, ["data/synth/val.bin"])
        XCTAssertEqual(embedded.training.globalBatch % 2, 0, "must split over mpirun -n 2")
        try embedded.validate(worldSize: 2)
        // 128 identities × 10 images, as its description tells `adaface-dist synth` to make.
        try embedded.validate(datasetClasses: 128, images: 1280, worldSize: 2)
        XCTAssertEqual(embedded.totalSteps(images: 1280), 80)
    }

    func testReadmeDocumentsEveryField() throws {
        let readme = try String(contentsOfFile: trainingConfigsDirectory + "/README.md", encoding: .utf8)
        let paths = TrainingConfiguration.fieldPaths
        XCTAssertEqual(paths.count, Set(paths).count)
        XCTAssertGreaterThan(paths.count, 50)
        for path in paths {
            XCTAssertTrue(readme.contains("| `\(path)` |"), "configs/README.md has no table row for \(path)")
        }
    }

    // MARK: - Defaults

    func testMinimalDocumentTakesEveryDefault() throws {
        let c = try config(document())
        XCTAssertEqual(c, TrainingConfiguration(data: .init(train: "data/x")))
        XCTAssertEqual(c.name, "adaface")
        XCTAssertEqual(c.seed, 1)
        XCTAssertEqual(c.runDir, "runs/adaface")
        XCTAssertEqual(c.checkpoint.dir, "runs/adaface/checkpoints")
        XCTAssertEqual(c.model, .init(arch: .ir50, embeddingSize: 512, dropout: 0.4))
        XCTAssertEqual(c.head.margin, .adaface)
        XCTAssertEqual(c.head.m, 0.4)
        XCTAssertEqual(c.head.h, 0.333)
        XCTAssertEqual(c.head.s, 64)
        XCTAssertEqual(c.head.tAlpha, 0.01)
        XCTAssertEqual(c.head.sampleRate, 1)
        XCTAssertEqual(c.data.numClasses, 0)
        XCTAssertEqual(c.data.loaderThreads, 0)
        XCTAssertEqual(c.data.queueDepth, 2)
        XCTAssertEqual(c.data.maxBadFraction, 0.01)
        XCTAssertEqual(c.optimizer, .init(lr: 0.1, referenceBatch: 512, scaleLRWithBatch: true, momentum: 0.9, weightDecay: 5e-4,
                                          schedule: .init(type: .multistep, milestones: [12, 20, 24], gamma: 0.1,
                                                          warmupEpochs: 0, power: 1)))
        XCTAssertEqual(c.training, .init(epochs: 26, globalBatch: 512, threads: 0, logEvery: 50, maxSteps: 0, nonfinite: .skip,
                                         maxSkippedSteps: 100, verifyParametersEvery: 0, bucketMB: 25, firstBucketMB: 1,
                                         timeoutSeconds: 600))
        XCTAssertEqual(c.checkpoint.everySteps, 1000)
        XCTAssertTrue(c.checkpoint.atEpochEnd)
        XCTAssertEqual(c.checkpoint.keepLast, 3)
        XCTAssertEqual(c.checkpoint.compression, TrainingConfiguration.Compression.none)
        XCTAssertEqual(c.checkpoint.onDiskFull, .stop)
        XCTAssertEqual(c.validation, .init(bins: [], everySteps: 0, atEpochEnd: true, batch: 64))
    }

    func testDerivedDefaults() throws {
        var c = try config(#"{"name": "r1", "data": {"train": "d"}}"#)
        XCTAssertEqual(c.runDir, "runs/r1")
        XCTAssertEqual(c.checkpoint.dir, "runs/r1/checkpoints")
        c = try config(#"{"run_dir": "/scratch/r/", "data": {"train": "d"}, "checkpoint": {"dir": ""}}"#)
        XCTAssertEqual(c.checkpoint.dir, "/scratch/r/checkpoints")
        c = try config(#"{"data": {"train": "d"}, "checkpoint": {"dir": "ckpt"}}"#)
        XCTAssertEqual(c.checkpoint.dir, "ckpt")
        // The margin's own default m.
        XCTAssertEqual(try config(document(#""head": {"margin": "arcface"}"#)).head.m, 0.5)
        XCTAssertEqual(try config(document(#""head": {"margin": "cosface"}"#)).head.m, 0.4)
        XCTAssertEqual(try config(document(#""head": {"margin": "arcface", "m": 0.3}"#)).head.m, 0.3)
        // augment off switches every augmentation off.
        c = try config(#"{"data": {"train": "d", "augment": false}}"#)
        XCTAssertEqual(c.data.effectiveAugmentation.flip, 0)
        XCTAssertEqual(c.data.effectiveAugmentation.crop, 0)
    }

    func testWholeNumbersAreAcceptedForIntegerFields() throws {
        XCTAssertEqual(try config(document(#""training": {"global_batch": 512.0}"#)).training.globalBatch, 512)
        XCTAssertEqual(try config(document(#""training": {"epochs": 1e2}"#)).training.epochs, 100)
        XCTAssertEqual(try config(document(#""head": {"s": 64}"#)).head.s, 64)
    }

    func testLinearScalingRuleAndStepCounts() throws {
        XCTAssertEqual(try config(document(#""training": {"global_batch": 1024}"#)).effectiveLearningRate, 0.2)
        XCTAssertEqual(try config(document(#""training": {"global_batch": 128}"#)).effectiveLearningRate, 0.025)
        let unscaled = try config(document(#""training": {"global_batch": 128}, "optimizer": {"scale_lr_with_batch": false}"#))
        XCTAssertEqual(unscaled.effectiveLearningRate, 0.1)
        let c = try config(document(#""training": {"global_batch": 64, "epochs": 3, "max_steps": 50}, "optimizer": {"schedule": {"milestones": [1, 2]}}"#))
        XCTAssertEqual(c.stepsPerEpoch(images: 1000), 15)
        XCTAssertEqual(c.totalSteps(images: 1000), 45)
        XCTAssertEqual(c.totalSteps(images: 10_000), 50)
        XCTAssertEqual(c.localBatch(worldSize: 4), 16)
        XCTAssertEqual(c.classCount(datasetClasses: 77), 77)
    }

    // MARK: - Errors that name the field

    func testUnknownKeysAreNamedWithASuggestion() {
        assertRejected(#"{"data": {"tran": "data/x"}}"#, .unknownKey, path: "data.tran", "unknown key 'tran' (did you mean 'train'?)")
        assertRejected(document(#""optimizer": {"schedule": {"milestone": [1]}}"#), .unknownKey,
                       path: "optimizer.schedule.milestone", "did you mean 'milestones'?")
        assertRejected(document(#""training": {"globalBatch": 64}"#), .unknownKey, path: "training.globalBatch",
                       "did you mean 'global_batch'?")
        assertRejected(document(#""lr": 0.1"#), .unknownKey, path: "lr", "did you mean 'optimizer.lr'?")
        assertRejected(document(#""checkpoint": {"zzz": 1}"#), .unknownKey, path: "checkpoint.zzz", "known keys of checkpoint: dir,")
        assertRejected(document(#""optimiser": {}"#), .unknownKey, path: "optimiser", "did you mean 'optimizer'?")
    }

    func testWrongTypesAreNamed() {
        assertRejected(document(#""training": {"global_batch": "512"}"#), .wrongType, path: "training.global_batch",
                       #"expected an integer, got "512""#)
        assertRejected(document(#""training": {"global_batch": 512.5}"#), .wrongType, path: "training.global_batch",
                       "expected an integer, got 512.5")
        assertRejected(document(#""optimizer": {"lr": "fast"}"#), .wrongType, path: "optimizer.lr", #"expected a number, got "fast""#)
        assertRejected(#"{"data": {"train": "d", "augment": "yes"}}"#, .wrongType, path: "data.augment", "expected true or false")
        assertRejected(document(#""model": 5"#), .wrongType, path: "model", "expected an object, got 5")
        assertRejected(document(#""optimizer": {"schedule": {"milestones": [12, "20"]}}"#), .wrongType,
                       path: "optimizer.schedule.milestones[1]", #"expected a number, got "20""#)
        assertRejected(document(#""validation": {"bins": "a.bin"}"#), .wrongType, path: "validation.bins",
                       "expected an array of strings")
        assertRejected(document(#""validation": {"bins": ["a.bin", 3]}"#), .wrongType, path: "validation.bins[1]",
                       "expected a string, got 3")
        assertRejected(document(#""name": null"#), .wrongType, path: "name", "expected a string, got null")
        assertRejected(document(#""head": {"margin": 1}"#), .wrongType, path: "head.margin",
                       "expected one of adaface, arcface, cosface, got 1")
    }

    func testImpossibleValuesAreNamed() {
        assertRejected(document(#""training": {"global_batch": -4}"#), .invalidValue, path: "training.global_batch",
                       "must be positive, got -4")
        assertRejected(document(#""training": {"epochs": 0}"#), .invalidValue, path: "training.epochs", "must be positive, got 0")
        assertRejected(#"{"data": {"train": "d", "loader_threads": -1}}"#, .invalidValue, path: "data.loader_threads", "must not be negative, got -1")
        assertRejected(document(#""head": {"sample_rate": 1.5}"#), .invalidValue, path: "head.sample_rate",
                       "must be in (0, 1], got 1.5")
        assertRejected(document(#""head": {"sample_rate": 0}"#), .invalidValue, path: "head.sample_rate", "must be in (0, 1], got 0")
        assertRejected(document(#""head": {"s": -64}"#), .invalidValue, path: "head.s", "must be positive, got -64")
        assertRejected(document(#""head": {"margin": "arcfce"}"#), .invalidValue, path: "head.margin",
                       #"expected one of adaface, arcface, cosface, got "arcfce" (did you mean 'arcface'?)"#)
        assertRejected(document(#""model": {"arch": "ir52"}"#), .invalidValue, path: "model.arch", "expected one of ir18, ir34, ir50, ir100, ir101")
        assertRejected(document(#""model": {"dropout": 1}"#), .invalidValue, path: "model.dropout", "must be in [0, 1), got 1")
        assertRejected(document(#""optimizer": {"momentum": 1.2}"#), .invalidValue, path: "optimizer.momentum", "must be in [0, 1)")
        assertRejected(document(#""checkpoint": {"keep_last": 0}"#), .invalidValue, path: "checkpoint.keep_last",
                       "must be positive, got 0")
        assertRejected(document(#""checkpoint": {"compression": "gzip"}"#), .invalidValue, path: "checkpoint.compression",
                       "expected one of none, zstd")
        assertRejected(document(#""checkpoint": {"on_disk_full": "ignore"}"#), .invalidValue, path: "checkpoint.on_disk_full",
                       "expected one of stop, continue")
        assertRejected(document(#""training": {"nonfinite": "warn"}"#), .invalidValue, path: "training.nonfinite",
                       "expected one of skip, abort")
        assertRejected(#"{"data": {"train": "d", "num_classes": 1}}"#, .invalidValue, path: "data.num_classes",
                       "must be 0 (take it from the data) or at least 2")
        assertRejected(#"{"data": {"train": ""}}"#, .invalidValue, path: "data.train", "must not be empty")
        assertRejected(document(#""name": "a/b""#), .invalidValue, path: "name", "it names the run folder")
        assertRejected(document(#""seed": -1"#), .invalidValue, path: "seed", "must not be negative")
    }

    func testFieldsThatContradictEachOther() {
        assertRejected(document(#""optimizer": {"schedule": {"milestones": [12, 24, 20]}}"#), .invalidValue,
                       path: "optimizer.schedule.milestones[2]", "milestones must increase (20 after 24)")
        assertRejected(document(#""optimizer": {"schedule": {"milestones": [12, 12]}}"#), .invalidValue,
                       path: "optimizer.schedule.milestones[1]", "milestones must increase (12 after 12)")
        assertRejected(document(#""optimizer": {"schedule": {"milestones": [0, 5]}}"#), .invalidValue,
                       path: "optimizer.schedule.milestones[0]", "must be positive")
        assertRejected(document(#""training": {"epochs": 20}"#), .invalidValue, path: "optimizer.schedule.milestones[1]",
                       "milestone 20 is not before the end of training (training.epochs is 20)")
        assertRejected(document(#""optimizer": {"schedule": {"warmup_epochs": 26}}"#), .invalidValue,
                       path: "optimizer.schedule.warmup_epochs", "does not end before the end of training")
        assertRejected(document(#""training": {"bucket_mb": 1, "first_bucket_mb": 2}"#), .invalidValue,
                       path: "training.first_bucket_mb", "must not exceed training.bucket_mb (1), got 2")
        assertRejected(document(#""validation": {"bins": ["a.bin", "b.bin", "a.bin"]}"#), .invalidValue,
                       path: "validation.bins[2]", "listed twice")
        assertRejected(document(#""run_dir": "r", "checkpoint": {"dir": "r"}"#), .invalidValue, path: "checkpoint.dir",
                       "must differ from run_dir")
        // Milestones are a multistep setting: other schedules ignore them.
        XCTAssertNoThrow(try config(document(#""training": {"epochs": 3}, "optimizer": {"schedule": {"type": "poly"}}"#)))
    }

    func testMissingRequiredField() {
        assertRejected("{}", .missingKey, path: "data.train", "required")
        assertRejected(#"{"data": {"num_classes": 10}}"#, .missingKey, path: "data.train", "required")
    }

    func testErrorDescriptionNamesFileFieldAndProblem() {
        let error = configurationError { _ = try config(document(#""training": {"global_batch": -4}"#)) }
        XCTAssertEqual(error?.description, "test.json: training.global_batch: must be positive, got -4")
    }

    func testSyntaxErrorsGiveLineAndColumn() {
        let cases: [(json: String, message: String)] = [
            ("{\n  \"data\": {\"train\": \"d\"},\n}", "trailing comma before '}' at line 3, column 1"),
            ("{\n  \"seed\": 1\n  \"name\": \"x\"\n}", "expected ',' or '}' at line 3, column 3"),
            ("{\"seed\": 1, \"seed\": 2}", "duplicate key \"seed\" at line 1, column 13"),
            ("{\"name\": 'x'}", "unexpected character ''' at line 1, column 10"),
            ("{\"seed\": 01}", "leading zero"),
            ("{\"data\": {\"train\": \"d\"} // note\n}", "comments are not allowed"),
            ("", "the file is empty"),
            ("{\"name\": \"x", "unterminated string"),
        ]
        for (json, message) in cases {
            guard let error = configurationError({ _ = try config(json) }) else { continue }
            XCTAssertEqual(error.kind, .syntax, json)
            XCTAssertEqual(error.path, "", json)
            XCTAssertTrue(error.message.contains(message), "\(json): \(error.message)")
        }
        let notObject = configurationError { _ = try config("[1, 2]") }
        XCTAssertEqual(notObject?.message, "expected a JSON object at the top, got an array")
    }

    func testLoadErrors() throws {
        let missing = configurationError { _ = try TrainingConfiguration.load(path: "no/such/config.json") }
        XCTAssertEqual(missing?.kind, .unreadable)
        XCTAssertEqual(missing?.description, "no/such/config.json: no such file")
        let directory = configurationError { _ = try TrainingConfiguration.load(path: trainingConfigsDirectory) }
        XCTAssertEqual(directory?.kind, .unreadable)
        XCTAssertTrue(directory?.message.contains("is a directory") ?? false)

        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("config-test-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try Data("{\"data\": {\"train\": \"d\"}, \"training\": {\"epochs\": \"many\"}}".utf8).write(to: URL(fileURLWithPath: scratch))
        let wrong = configurationError { _ = try TrainingConfiguration.load(path: scratch) }
        XCTAssertEqual(wrong?.description, #"\#(scratch): training.epochs: expected an integer, got "many""#)
    }

    // MARK: - Checks against the world size, the data and the disk

    func testWorldSizeChecks() throws {
        let c = try config(document())
        for worldSize in [1, 2, 4, 8, 256] { XCTAssertNoThrow(try c.validate(worldSize: worldSize), "\(worldSize)") }
        let indivisible = configurationError { try c.validate(worldSize: 3) }
        XCTAssertEqual(indivisible?.kind, .incompatible)
        XCTAssertEqual(indivisible?.path, "training.global_batch")
        XCTAssertEqual(indivisible?.description,
                       "test.json: training.global_batch: 512 is not divisible by the world size 3 (try 510 or 513)")
        let tiny = configurationError { try c.validate(worldSize: 512) }
        XCTAssertEqual(tiny?.path, "training.global_batch")
        XCTAssertTrue(tiny?.message.contains("BatchNorm needs at least 2") ?? false)
        let fewClasses = try config(#"{"data": {"train": "d", "num_classes": 3}, "training": {"global_batch": 64}}"#)
        let classes = configurationError { try fewClasses.validate(worldSize: 4) }
        XCTAssertEqual(classes?.path, "data.num_classes")
        XCTAssertTrue(classes?.message.contains("3 classes cannot be split over 4 ranks") ?? false)
    }

    func testDataChecks() throws {
        let c = try config(#"{"data": {"train": "data/synth", "num_classes": 100}, "training": {"global_batch": 64}}"#)
        XCTAssertNoThrow(try c.validate(datasetClasses: 100, images: 64))
        XCTAssertNoThrow(try c.validate(datasetClasses: 90, images: 1000), "extra classes without samples are allowed")
        let smaller = configurationError { try c.validate(datasetClasses: 128, images: 1000) }
        XCTAssertEqual(smaller?.kind, .incompatible)
        XCTAssertEqual(smaller?.path, "data.num_classes")
        XCTAssertEqual(smaller?.message, "100 is smaller than the 128 classes of data/synth (labels 0..<128)")
        let fewImages = configurationError { try c.validate(datasetClasses: 100, images: 63) }
        XCTAssertEqual(fewImages?.path, "training.global_batch")
        XCTAssertTrue(fewImages?.message.contains("more than the 63 images of data/synth") ?? false)

        let fromData = try config(#"{"data": {"train": "d"}, "training": {"global_batch": 64}}"#)
        XCTAssertEqual(fromData.classCount(datasetClasses: 3), 3)
        XCTAssertEqual(configurationError { try fromData.validate(datasetClasses: 3, images: 100, worldSize: 4) }?.path,
                       "data.num_classes")
        XCTAssertEqual(configurationError { try fromData.validate(datasetClasses: 1, images: 100) }?.path, "data.train")
    }

    func testMissingPathsAreNamed() throws {
        let c = try config(#"{"data": {"train": "no/such/train"}, "validation": {"bins": ["a.bin", "b.bin"]}}"#)
        XCTAssertNoThrow(try c.validatePaths(exists: { _ in true }))
        let train = configurationError { try c.validatePaths(exists: { $0 != "no/such/train" }) }
        XCTAssertEqual(train?.kind, .missingFile)
        XCTAssertEqual(train?.description, "test.json: data.train: no such file or directory: no/such/train")
        let bin = configurationError { try c.validatePaths(exists: { $0 != "b.bin" }) }
        XCTAssertEqual(bin?.path, "validation.bins[1]")
        XCTAssertEqual(configurationError { try c.validatePaths() }?.path, "data.train")
    }

    // MARK: - --set overrides

    func testOverridesOfNumbersStringsArraysAndBooleans() throws {
        let base = try TrainingConfiguration.load(path: trainingConfigsDirectory + "/ir50_webface4m.json")
        var c = base
        try c.apply(overrides: [
            ("optimizer.lr", "0.05"), ("training.global_batch", "256"), ("head.margin", "arcface"),
            ("optimizer.schedule.milestones", "[10,18,22]"), ("validation.bins", #"["v/lfw.bin"]"#),
            ("data.augment", "false"), ("data.train", "/data/webface4m"), ("checkpoint.compression", "zstd"),
        ])
        XCTAssertEqual(c.optimizer.lr, 0.05)
        XCTAssertEqual(c.training.globalBatch, 256)
        XCTAssertEqual(c.effectiveLearningRate, 0.025)
        XCTAssertEqual(c.head.margin, .arcface)
        XCTAssertEqual(c.head.m, 0.4, "the file sets m, so it stays")
        XCTAssertEqual(c.optimizer.schedule.milestones, [10, 18, 22])
        XCTAssertEqual(c.validation.bins, ["v/lfw.bin"])
        XCTAssertFalse(c.data.augment)
        XCTAssertEqual(c.data.train, "/data/webface4m")
        XCTAssertEqual(c.checkpoint.compression, .zstd)
        XCTAssertEqual(c.model, base.model)

        // A later override wins; a text field takes digits as text; a whole section may be replaced.
        try c.apply(overrides: [("optimizer.lr", "0.2"), ("optimizer.lr", "0.3"), ("description", "123"),
                                ("optimizer.schedule", #"{"type": "poly", "power": 2}"#)])
        XCTAssertEqual(c.optimizer.lr, 0.3)
        XCTAssertEqual(c.runDescription, "123")
        XCTAssertEqual(c.optimizer.schedule, .init(type: .poly, power: 2))
        try c.apply(overrides: [("name", #""quoted""#)])
        XCTAssertEqual(c.name, "quoted")
    }

    func testOverridesActOnTheFileSoDerivedDefaultsFollow() throws {
        var c = try config(#"{"name": "a", "data": {"train": "d"}}"#, overrides: [("name", "b"), ("head.margin", "arcface")])
        XCTAssertEqual(c.runDir, "runs/b")
        XCTAssertEqual(c.checkpoint.dir, "runs/b/checkpoints")
        XCTAssertEqual(c.head.m, 0.5)
        try c.apply(overrides: [("run_dir", "elsewhere")])
        XCTAssertEqual(c.checkpoint.dir, "elsewhere/checkpoints")
        // After a change in code the overrides start from the changed value.
        c.training.epochs = 30
        try c.apply(overrides: [("optimizer.lr", "0.01")])
        XCTAssertEqual(c.training.epochs, 30)
        XCTAssertEqual(c.optimizer.lr, 0.01)
        // Sections the file leaves out can be overridden too.
        let fresh = try config(#"{"data": {"train": "d"}}"#, overrides: [("validation.every_steps", "500")])
        XCTAssertEqual(fresh.validation.everySteps, 500)
    }

    func testOverrideErrorsNameTheKeyAndTheOverride() throws {
        let c = try config(document())
        func overrideError(_ key: String, _ value: String) -> ConfigurationError? {
            var copy = c
            return configurationError { try copy.apply(overrides: [(key, value)]) }
        }
        let unknown = overrideError("optimizer.lrr", "0.1")
        XCTAssertEqual(unknown?.kind, .unknownKey)
        XCTAssertEqual(unknown?.description, "--set optimizer.lrr=0.1: optimizer.lrr: unknown key 'lrr' (did you mean 'lr'?)")
        XCTAssertEqual(overrideError("optim.lr", "0.1")?.path, "optim")
        XCTAssertEqual(overrideError("global_batch", "64")?.message, "unknown key 'global_batch' (did you mean 'training.global_batch'?)")
        XCTAssertTrue(overrideError("optimizer.lr.x", "1")?.message.contains("optimizer.lr is a value, not a section") ?? false)
        XCTAssertEqual(overrideError("optimizer.schedule.milestones[0]", "3")?.kind, .invalidValue)

        let wrongType = overrideError("training.global_batch", "abc")
        XCTAssertEqual(wrongType?.description, #"--set training.global_batch=abc: training.global_batch: expected an integer, got "abc""#)
        let quoted = overrideError("training.global_batch", #""512""#)
        XCTAssertEqual(quoted?.kind, .wrongType)
        let range = overrideError("head.sample_rate", "2")
        XCTAssertEqual(range?.description, "--set head.sample_rate=2: head.sample_rate: must be in (0, 1], got 2")
        let element = overrideError("optimizer.schedule.milestones", "[5, 3]")
        XCTAssertEqual(element?.path, "optimizer.schedule.milestones[1]")
        XCTAssertEqual(element?.source, "--set optimizer.schedule.milestones=[5, 3]")
        // An error in a field no override touched is the file's.
        XCTAssertEqual(overrideError("training.epochs", "10")?.source, "test.json")
        XCTAssertEqual(c.training.epochs, 26, "a failed override leaves the value alone")
    }

    func testParseOverrideArguments() throws {
        let pair = try TrainingConfiguration.parseOverride("data.train=a=b")
        XCTAssertEqual(pair.key, "data.train")
        XCTAssertEqual(pair.value, "a=b")
        XCTAssertEqual(try TrainingConfiguration.parseOverride("name=").value, "")
        XCTAssertEqual(configurationError { _ = try TrainingConfiguration.parseOverride("optimizer.lr") }?.kind, .syntax)
    }

    func testLoadWithOverrides() throws {
        let c = try TrainingConfiguration.load(path: trainingConfigsDirectory + "/synth_small.json",
                                               overrides: [("training.max_steps", "5"), ("training.global_batch", "32")])
        XCTAssertEqual(c.training.maxSteps, 5)
        XCTAssertEqual(c.training.globalBatch, 32)
        XCTAssertEqual(c.effectiveLearningRate, 0.05)
    }

    // MARK: - Resolved form and hash

    func testResolvedJSONRoundTripsEveryFieldChanged() throws {
        var c = TrainingConfiguration(
            name: "every-field.1", runDescription: "tab\t\"quote\" ünïcode", seed: 42, runDir: "r/x",
            model: .init(arch: .ir101, embeddingSize: 256, dropout: 0),
            head: .init(margin: .cosface, m: 0.35, h: 0.5, s: 30, tAlpha: 0.5, sampleRate: 0.1),
            data: .init(train: "t", numClasses: 1000, augment: false,
                        augmentation: .init(crop: 0.1, lowResolution: 0.3, photometric: 0, flip: 1),
                        loaderThreads: 3, queueDepth: 5, maxBadFraction: 0.5),
            optimizer: .init(lr: 1e-5, referenceBatch: 256, scaleLRWithBatch: false, momentum: 0.95, weightDecay: 0,
                             schedule: .init(type: .poly, milestones: [0.5, 1.25], gamma: 0.5, warmupEpochs: 0.25,
                                             power: 3)),
            training: .init(epochs: 2, globalBatch: 12, threads: 7, logEvery: 3, maxSteps: 9, nonfinite: .abort,
                            maxSkippedSteps: 0, verifyParametersEvery: 11, bucketMB: 2.5, firstBucketMB: 0.25,
                            timeoutSeconds: 12.5),
            checkpoint: .init(dir: "c", everySteps: 0, atEpochEnd: false, keepLast: 9, compression: .zstd,
                              compressionLevel: 19, onDiskFull: .continueTraining),
            validation: .init(bins: ["a.bin", "b.bin"], everySteps: 4, atEpochEnd: false, batch: 8))
        let text = c.resolvedJSON()
        let reread = try TrainingConfiguration(jsonText: text, source: "resolved")
        XCTAssertEqual(reread, c)
        XCTAssertEqual(reread.resolvedJSON(), text)
        XCTAssertTrue(text.contains(#""on_disk_full": "continue""#))
        XCTAssertTrue(text.contains(#""milestones": [0.5, 1.25]"#))
        XCTAssertTrue(text.contains(#""timeout_seconds": 12.5"#))
        XCTAssertTrue(try config(document()).resolvedJSON().contains(#""milestones": [12, 20, 24]"#))
        // Every field differs from its default, so a decoder that skipped one would not round-trip.
        let defaults = TrainingConfiguration(data: .init(train: "t"))
        for path in TrainingConfiguration.fieldPaths where path != "data.train" {
            let value = { (c: TrainingConfiguration) in Self.field(path, in: c.resolvedJSON()) }
            XCTAssertNotEqual(value(c), value(defaults), path)
        }
        c.seed = 43
        XCTAssertNotEqual(try TrainingConfiguration(jsonText: c.resolvedJSON(), source: "r"), reread)
    }

    /// The line of `path`'s last component inside its section in a pretty-printed document.
    private static func field(_ path: String, in text: String) -> String {
        var lines = text.split(separator: "\n").map(String.init)[...]
        let components = path.split(separator: ".").map(String.init)
        for (i, component) in components.enumerated() {
            let depth = i + 1
            let prefix = String(repeating: "  ", count: depth) + "\"\(component)\": "
            guard let index = lines.firstIndex(where: { $0.hasPrefix(prefix) }) else { return "missing" }
            if i == components.count - 1 { return lines[index] }
            lines = lines[(index + 1)...]
        }
        return "missing"
    }

    func testResolvedJSONIsSortedAndComplete() throws {
        let text = try config(document()).resolvedJSON()
        XCTAssertTrue(text.hasSuffix("}\n"))
        let topKeys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") && !$0.hasPrefix("   ") }
            .map { $0.split(separator: "\"")[1] }
        XCTAssertEqual(topKeys, topKeys.sorted())
        XCTAssertEqual(topKeys, ["checkpoint", "data", "description", "head", "model", "name", "optimizer", "run_dir", "seed",
                                 "training", "validation"])
        for path in TrainingConfiguration.fieldPaths { XCTAssertNotEqual(Self.field(path, in: text), "missing", path) }
    }

    func testHashIsEqualForEqualConfigsAndChangesWithAnOverride() throws {
        let a = try config(#"{"data": {"train": "d"}, "head": {"s": 64, "m": 0.4}}"#)
        let b = try config(#"""
            {
              "head": {"m": 4e-1, "s": 64.0},
              "data": {"train": "d", "num_classes": 0}
            }
            """#)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.canonicalJSON, b.canonicalJSON)
        XCTAssertEqual(a.canonicalHash, b.canonicalHash)
        XCTAssertEqual(a.canonicalHashHex.count, 16)
        XCTAssertFalse(a.canonicalJSON.contains(" "))
        var c = a
        try c.apply(overrides: [("optimizer.lr", "0.05")])
        XCTAssertNotEqual(c.canonicalHash, a.canonicalHash)
        try c.apply(overrides: [("optimizer.lr", "0.1")])
        XCTAssertEqual(c.canonicalHash, a.canonicalHash)
        // Rank 0 broadcasts the resolved text; the other ranks parse it and must agree.
        let received = try TrainingConfiguration(jsonText: a.resolvedJSON(), source: "rank 0")
        XCTAssertEqual(received.canonicalHash, a.canonicalHash)
    }
}
