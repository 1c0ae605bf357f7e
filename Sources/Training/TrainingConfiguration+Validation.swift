// Reading a configuration document field by field, with the checks that name the field by its
// dotted path: unknown keys (with a suggestion), wrong types, values out of range, fields that
// contradict each other; and the later checks against the world size, the data and the disk.
import Foundation
import Serialization

extension TrainingConfiguration {
    /// Decodes and checks a parsed document. Missing fields take their defaults.
    init(document: ConfigJSON, source: String) throws {
        do {
            self = try Self.checked(document)
        } catch var error as ConfigurationError {
            if error.source.isEmpty { error.source = source }
            throw error
        }
        sourceDocument = document
        self.source = source
    }

    private static func checked(_ document: ConfigJSON) throws -> TrainingConfiguration {
        let root = try ConfigSectionReader(document, path: "")
        let name = try root.string("name", default: "adaface")
        try Self.checkName(name, path: "name")
        let runDescription = try root.string("description", default: "", allowEmpty: true)
        let seed = try root.int("seed", default: 1, min: 0)
        let runDir = try root.string("run_dir", default: "", allowEmpty: true)

        let modelReader = try root.section("model")
        let model = ModelSection(
            arch: try modelReader.choice("arch", default: Architecture.ir50),
            embeddingSize: try modelReader.int("embedding_size", default: 512, min: 1),
            dropout: try modelReader.double("dropout", default: 0.4, .closedOpen(0, 1)))

        let headReader = try root.section("head")
        let margin = try headReader.choice("margin", default: Margin.adaface)
        let head = HeadSection(
            margin: margin,
            m: try headReader.double("m", default: margin.defaultM, .closed(0, 1)),
            h: try headReader.double("h", default: 0.333, .closed(0, 1)),
            s: try headReader.double("s", default: 64, .positive),
            tAlpha: try headReader.double("t_alpha", default: 0.01, .openClosed(0, 1)),
            sampleRate: try headReader.double("sample_rate", default: 1, .openClosed(0, 1)))

        let dataReader = try root.section("data")
        let train = try dataReader.string("train", default: nil)
        let numClasses = try dataReader.int("num_classes", default: 0, min: 0)
        if numClasses == 1 {
            throw ConfigurationError(.invalidValue, path: dataReader.path("num_classes"),
                                     "must be 0 (take it from the data) or at least 2, got 1")
        }
        let augment = try dataReader.bool("augment", default: true)
        let augmentationReader = try dataReader.section("augmentation")
        let augmentation = AugmentationSection(
            crop: try augmentationReader.double("crop", default: 0.2, .closed(0, 1)),
            lowResolution: try augmentationReader.double("low_resolution", default: 0.2, .closed(0, 1)),
            photometric: try augmentationReader.double("photometric", default: 0.2, .closed(0, 1)),
            flip: try augmentationReader.double("flip", default: 0.5, .closed(0, 1)))
        let data = DataSection(
            train: train, numClasses: numClasses, augment: augment, augmentation: augmentation,
            loaderThreads: try dataReader.int("loader_threads", default: 0, min: 0, max: 1024),
            queueDepth: try dataReader.int("queue_depth", default: 2, min: 1, max: 64),
            maxBadFraction: try dataReader.double("max_bad_fraction", default: 0.01, .closed(0, 1)))

        let optimizerReader = try root.section("optimizer")
        let lr = try optimizerReader.double("lr", default: 0.1, .positive)
        let referenceBatch = try optimizerReader.int("reference_batch", default: 512, min: 1)
        let scale = try optimizerReader.bool("scale_lr_with_batch", default: true)
        let momentum = try optimizerReader.double("momentum", default: 0.9, .closedOpen(0, 1))
        let weightDecay = try optimizerReader.double("weight_decay", default: 5e-4, .nonNegative)
        let scheduleReader = try optimizerReader.section("schedule")
        let schedule = ScheduleSection(
            type: try scheduleReader.choice("type", default: ScheduleKind.multistep),
            milestones: try scheduleReader.numbers("milestones", default: [12, 20, 24]),
            gamma: try scheduleReader.double("gamma", default: 0.1, .openClosed(0, 1)),
            warmupEpochs: try scheduleReader.double("warmup_epochs", default: 0, .nonNegative),
            power: try scheduleReader.double("power", default: 1, .positive))
        let optimizer = OptimizerSection(lr: lr, referenceBatch: referenceBatch, scaleLRWithBatch: scale,
                                         momentum: momentum, weightDecay: weightDecay, schedule: schedule)

        let trainingReader = try root.section("training")
        let training = TrainingSection(
            epochs: try trainingReader.int("epochs", default: 26, min: 1),
            globalBatch: try trainingReader.int("global_batch", default: 512, min: 1),
            threads: try trainingReader.int("threads", default: 0, min: 0, max: 1024),
            logEvery: try trainingReader.int("log_every", default: 50, min: 1),
            maxSteps: try trainingReader.int("max_steps", default: 0, min: 0),
            nonfinite: try trainingReader.choice("nonfinite", default: NonFinitePolicy.skip),
            maxSkippedSteps: try trainingReader.int("max_skipped_steps", default: 100, min: 0),
            verifyParametersEvery: try trainingReader.int("verify_parameters_every", default: 0, min: 0),
            bucketMB: try trainingReader.double("bucket_mb", default: 25, .positive),
            firstBucketMB: try trainingReader.double("first_bucket_mb", default: 1, .positive),
            timeoutSeconds: try trainingReader.double("timeout_seconds", default: 600, .positive))

        let checkpointReader = try root.section("checkpoint")
        let checkpoint = CheckpointSection(
            dir: try checkpointReader.string("dir", default: "", allowEmpty: true),
            everySteps: try checkpointReader.int("every_steps", default: 1000, min: 0),
            atEpochEnd: try checkpointReader.bool("at_epoch_end", default: true),
            keepLast: try checkpointReader.int("keep_last", default: 3, min: 1),
            compression: try checkpointReader.choice("compression", default: Compression.none),
            compressionLevel: try checkpointReader.int("compression_level", default: 3, min: 1, max: 19),
            onDiskFull: try checkpointReader.choice("on_disk_full", default: DiskFullPolicy.stop))

        let validationReader = try root.section("validation")
        let validation = ValidationSection(
            bins: try validationReader.strings("bins", default: []),
            everySteps: try validationReader.int("every_steps", default: 0, min: 0),
            atEpochEnd: try validationReader.bool("at_epoch_end", default: true),
            batch: try validationReader.int("batch", default: 64, min: 1))

        let configuration = TrainingConfiguration(
            name: name, runDescription: runDescription, seed: seed, runDir: runDir, model: model, head: head,
            data: data, optimizer: optimizer, training: training, checkpoint: checkpoint, validation: validation)
        try configuration.checkConsistency()
        return configuration
    }

    /// Names become directory names: keep them portable.
    private static func checkName(_ name: String, path: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard name.allSatisfy({ allowed.contains($0) }), name != ".", name != ".." else {
            throw ConfigurationError(.invalidValue, path: path,
                                     "must be letters, digits, '.', '_' or '-' (it names the run folder), got \(jsonQuoted(name))")
        }
    }

    /// Checks between fields of different sections.
    private func checkConsistency() throws {
        let epochs = Double(training.epochs)
        let schedule = optimizer.schedule
        if schedule.type == .multistep {
            for (i, milestone) in schedule.milestones.enumerated() {
                let path = "optimizer.schedule.milestones[\(i)]"
                if i == 0 && milestone <= 0 {
                    throw ConfigurationError(.invalidValue, path: path, "milestones must be positive epochs, got \(configNumber(milestone))")
                }
                if i > 0 && milestone <= schedule.milestones[i - 1] {
                    throw ConfigurationError(.invalidValue, path: path,
                                             "milestones must increase (\(configNumber(milestone)) after \(configNumber(schedule.milestones[i - 1])))")
                }
                if milestone >= epochs {
                    throw ConfigurationError(.invalidValue, path: path,
                                             "milestone \(configNumber(milestone)) is not before the end of training (training.epochs is \(training.epochs))")
                }
            }
        }
        if schedule.warmupEpochs >= epochs {
            throw ConfigurationError(.invalidValue, path: "optimizer.schedule.warmup_epochs",
                                     "warmup of \(configNumber(schedule.warmupEpochs)) epochs does not end before the end of training (training.epochs is \(training.epochs))")
        }
        if training.firstBucketMB > training.bucketMB {
            throw ConfigurationError(.invalidValue, path: "training.first_bucket_mb",
                                     "must not exceed training.bucket_mb (\(configNumber(training.bucketMB))), got \(configNumber(training.firstBucketMB))")
        }
        if checkpoint.dir == runDir {
            throw ConfigurationError(.invalidValue, path: "checkpoint.dir",
                                     "must differ from run_dir (old checkpoints are deleted from it)")
        }
        var seen = Set<String>()
        for (i, bin) in validation.bins.enumerated() where !seen.insert(bin).inserted {
            throw ConfigurationError(.invalidValue, path: "validation.bins[\(i)]", "\(jsonQuoted(bin)) is listed twice")
        }
    }

    // MARK: - Checks the trainer makes once it knows more

    /// Checks against the number of ranks: the global batch must split evenly, every rank needs
    /// two samples for BatchNorm and at least one class of the head.
    public func validate(worldSize: Int) throws {
        precondition(worldSize >= 1, "world size must be positive")
        let batch = training.globalBatch
        if batch % worldSize != 0 {
            let lower = batch / worldSize * worldSize, upper = lower + worldSize
            throw ConfigurationError(.incompatible, path: "training.global_batch",
                                     "\(batch) is not divisible by the world size \(worldSize) (try \(lower > 0 ? "\(lower) or " : "")\(upper))",
                                     source: source)
        }
        if batch / worldSize < 2 {
            throw ConfigurationError(.incompatible, path: "training.global_batch",
                                     "\(batch) over \(worldSize) ranks leaves \(batch / worldSize) sample per rank; BatchNorm needs at least 2",
                                     source: source)
        }
        if data.numClasses > 0 && data.numClasses < worldSize {
            throw ConfigurationError(.incompatible, path: "data.num_classes",
                                     "\(data.numClasses) classes cannot be split over \(worldSize) ranks (every rank owns at least one)",
                                     source: source)
        }
    }

    /// Checks against the opened training set: `num_classes` must cover every label, and one
    /// global batch must fit in the data.
    public func validate(datasetClasses: Int, images: Int, worldSize: Int = 1) throws {
        if data.numClasses > 0 && data.numClasses < datasetClasses {
            throw ConfigurationError(.incompatible, path: "data.num_classes",
                                     "\(data.numClasses) is smaller than the \(datasetClasses) classes of \(data.train) (labels 0..<\(datasetClasses))",
                                     source: source)
        }
        let classes = classCount(datasetClasses: datasetClasses)
        if classes < 2 {
            throw ConfigurationError(.incompatible, path: "data.train",
                                     "\(data.train) has \(classes) class\(classes == 1 ? "" : "es"); training needs at least 2",
                                     source: source)
        }
        if classes < worldSize {
            throw ConfigurationError(.incompatible, path: "data.num_classes",
                                     "\(classes) classes cannot be split over \(worldSize) ranks (every rank owns at least one)",
                                     source: source)
        }
        if images < training.globalBatch {
            throw ConfigurationError(.incompatible, path: "training.global_batch",
                                     "\(training.globalBatch) is more than the \(images) images of \(data.train); not one complete global batch",
                                     source: source)
        }
    }

    /// The training set and every verification file must exist (paths relative to the working
    /// directory). `exists` is replaceable for tests.
    public func validatePaths(exists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) throws {
        if !exists(data.train) {
            throw ConfigurationError(.missingFile, path: "data.train", "no such file or directory: \(data.train)", source: source)
        }
        for (i, bin) in validation.bins.enumerated() where !exists(bin) {
            throw ConfigurationError(.missingFile, path: "validation.bins[\(i)]", "no such file: \(bin)", source: source)
        }
    }
}

/// Numbers in messages: integers without ".0".
func configNumber(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
    return value.description
}

// MARK: - Reading one object of the document

/// Allowed values of a number.
enum ConfigValueRange {
    case positive, nonNegative
    case closed(Double, Double), closedOpen(Double, Double), openClosed(Double, Double)

    func contains(_ x: Double) -> Bool {
        switch self {
        case .positive: return x > 0
        case .nonNegative: return x >= 0
        case let .closed(a, b): return x >= a && x <= b
        case let .closedOpen(a, b): return x >= a && x < b
        case let .openClosed(a, b): return x > a && x <= b
        }
    }

    var requirement: String {
        switch self {
        case .positive: return "must be positive"
        case .nonNegative: return "must not be negative"
        case let .closed(a, b): return "must be in [\(configNumber(a)), \(configNumber(b))]"
        case let .closedOpen(a, b): return "must be in [\(configNumber(a)), \(configNumber(b)))"
        case let .openClosed(a, b): return "must be in (\(configNumber(a)), \(configNumber(b))]"
        }
    }
}

/// One JSON object of the configuration: rejects keys the schema does not have (before any value
/// is read, so a misspelt required key is reported as misspelt), then typed getters with defaults.
final class ConfigSectionReader {
    let prefix: String
    private let members: [(key: String, value: ConfigJSON)]

    /// `value` nil (the section is absent) reads as an empty object.
    init(_ value: ConfigJSON?, path: String) throws {
        prefix = path
        switch value {
        case nil: members = []
        case let .object(m)?: members = m
        case let other?:
            throw ConfigurationError(.wrongType, path: path, "expected an object, got \(ConfigSectionReader.show(other))")
        }
        let known = ConfigSectionReader.schemaKeys(at: path)
        for member in members where !known.contains(member.key) {
            throw ConfigurationError(.unknownKey, path: self.path(member.key),
                                     ConfigSectionReader.unknownKeyMessage(member.key, known: known, section: path))
        }
    }

    /// Keys of the schema object at a dotted section path ("" for the top level).
    static func schemaKeys(at path: String) -> [String] {
        var node = TrainingConfiguration.schema
        for component in path.split(separator: ".") { node = node[String(component)] ?? .null }
        guard case let .object(members) = node else { return [] }
        return members.map(\.key)
    }

    /// "unknown key 'tran' (did you mean 'train'?)", or where the key belongs, or the keys there are.
    static func unknownKeyMessage(_ key: String, known: [String], section: String) -> String {
        var message = "unknown key '\(key)'"
        if let suggestion = suggestion(for: key, among: known) {
            message += " (did you mean '\(suggestion)'?)"
        } else if let elsewhere = TrainingConfiguration.fieldPaths.first(where: {
            $0.split(separator: ".").last.map(String.init) == key
        }) {
            message += " (did you mean '\(elsewhere)'?)"
        } else {
            message += "; known keys\(section.isEmpty ? "" : " of " + section): " + known.joined(separator: ", ")
        }
        return message
    }

    func path(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }

    private func value(_ key: String) -> ConfigJSON? {
        members.first { $0.key == key }?.value
    }

    func section(_ key: String) throws -> ConfigSectionReader {
        try ConfigSectionReader(value(key), path: path(key))
    }

    func string(_ key: String, default fallback: String?, allowEmpty: Bool = false) throws -> String {
        guard let v = value(key) else {
            guard let fallback else { throw ConfigurationError(.missingKey, path: path(key), "required, but missing") }
            return fallback
        }
        guard case let .string(s) = v else { throw wrongType(key, "a string", v) }
        if s.isEmpty && !allowEmpty { throw ConfigurationError(.invalidValue, path: path(key), "must not be empty") }
        return s
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let v = value(key) else { return fallback }
        guard case let .bool(b) = v else { throw wrongType(key, "true or false", v) }
        return b
    }

    func int(_ key: String, default fallback: Int, min: Int, max: Int? = nil) throws -> Int {
        guard let v = value(key) else { return fallback }
        guard let i = ConfigSectionReader.integer(v) else { throw wrongType(key, "an integer", v) }
        try ConfigSectionReader.check(i, min: min, max: max, path: path(key))
        return i
    }

    func double(_ key: String, default fallback: Double, _ range: ConfigValueRange) throws -> Double {
        guard let v = value(key) else { return fallback }
        guard let d = ConfigSectionReader.number(v) else { throw wrongType(key, "a number", v) }
        guard range.contains(d) else {
            throw ConfigurationError(.invalidValue, path: path(key), "\(range.requirement), got \(configNumber(d))")
        }
        return d
    }

    func choice<Choice: RawRepresentable & CaseIterable>(_ key: String, default fallback: Choice) throws -> Choice
    where Choice.RawValue == String {
        guard let v = value(key) else { return fallback }
        let names = Choice.allCases.map(\.rawValue)
        let expected = "one of " + names.joined(separator: ", ")
        guard case let .string(s) = v else { throw wrongType(key, expected, v) }
        guard let choice = Choice(rawValue: s) else {
            var message = "expected \(expected), got \(jsonQuoted(s))"
            if let suggestion = ConfigSectionReader.suggestion(for: s, among: names) { message += " (did you mean '\(suggestion)'?)" }
            throw ConfigurationError(.invalidValue, path: path(key), message)
        }
        return choice
    }

    func numbers(_ key: String, default fallback: [Double]) throws -> [Double] {
        guard let v = value(key) else { return fallback }
        guard case let .array(elements) = v else { throw wrongType(key, "an array of numbers", v) }
        return try elements.enumerated().map { i, element in
            guard let d = ConfigSectionReader.number(element) else {
                throw ConfigurationError(.wrongType, path: "\(path(key))[\(i)]", "expected a number, got \(ConfigSectionReader.show(element))")
            }
            return d
        }
    }

    func strings(_ key: String, default fallback: [String]) throws -> [String] {
        guard let v = value(key) else { return fallback }
        guard case let .array(elements) = v else { throw wrongType(key, "an array of strings", v) }
        return try elements.enumerated().map { i, element in
            guard case let .string(s) = element else {
                throw ConfigurationError(.wrongType, path: "\(path(key))[\(i)]", "expected a string, got \(ConfigSectionReader.show(element))")
            }
            if s.isEmpty { throw ConfigurationError(.invalidValue, path: "\(path(key))[\(i)]", "must not be empty") }
            return s
        }
    }

    private func wrongType(_ key: String, _ expected: String, _ got: ConfigJSON) -> ConfigurationError {
        ConfigurationError(.wrongType, path: path(key), "expected \(expected), got \(ConfigSectionReader.show(got))")
    }

    static func check(_ i: Int, min: Int, max: Int?, path: String) throws {
        if i < min {
            let requirement = min == 1 ? "must be positive" : min == 0 ? "must not be negative" : "must be at least \(min)"
            throw ConfigurationError(.invalidValue, path: path, "\(requirement), got \(i)")
        }
        if let max, i > max {
            throw ConfigurationError(.invalidValue, path: path, "must be at most \(max), got \(i)")
        }
    }

    /// Integers, and numbers such as 512.0 or 1e3 that are whole.
    static func integer(_ v: ConfigJSON) -> Int? {
        switch v {
        case let .integer(i): return i
        case let .double(d) where d == d.rounded() && abs(d) <= 9_007_199_254_740_992: return Int(d)
        default: return nil
        }
    }

    static func number(_ v: ConfigJSON) -> Double? {
        switch v {
        case let .integer(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// A value as it would appear in the file, shortened.
    static func show(_ v: ConfigJSON) -> String {
        let text = v.compactText
        return text.count <= 40 ? text : String(text.prefix(37)) + "…"
    }

    /// The known name closest to `name`: same letters ignoring case, '_' and '-', or within a
    /// small edit distance.
    static func suggestion(for name: String, among candidates: [String]) -> String? {
        func folded(_ s: String) -> String { s.lowercased().filter { $0 != "_" && $0 != "-" } }
        if let same = candidates.first(where: { folded($0) == folded(name) }) { return same }
        let limit = max(1, min(3, name.count / 3))
        let scored = candidates.map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= limit else { return nil }
        return best.0
    }

    /// Levenshtein distance with adjacent transpositions counted as one edit.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { d[i][0] = i }
        for j in 0...y.count { d[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[x.count][y.count]
    }
}
