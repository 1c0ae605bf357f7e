// Checkpoints on shared storage (DESIGN.md §5): the names inside a checkpoint root, the manifest,
// the trainer state, the head shard a rank hands to the writer, and the error they all throw.
//
//   <root>/step-000001200/
//       backbone.safetensors              state_dict, official names, PyTorch layouts
//       backbone_optimizer.safetensors    SGD momentum buffers under the parameter names
//       head-rank00000-of-00004.safetensors   kernel [C_r, D], momentum [C_r, D] (one per rank)
//       trainer_state.json                counters, data position, RNG, norm EMA, config
//       manifest.json                     written last: every file's size and CRC-32C
//   <root>/.tmp-step-000001200-<nonce>/   the same, while it is being written
import Collectives
import Foundation
import Glibc
import Heads
import Serialization
import Tensors

// MARK: - Names

public enum CheckpointLayout {
    public static let formatName = "adaface-dist checkpoint"
    /// Bumped when a reader of the previous version could misread a new checkpoint.
    public static let formatVersion = 1
    public static let manifestFile = "manifest.json"
    public static let trainerStateFile = "trainer_state.json"
    public static let backboneFile = "backbone.safetensors"
    public static let optimizerFile = "backbone_optimizer.safetensors"

    static let directoryPrefix = "step-"
    static let temporaryPrefix = ".tmp-step-"

    /// `step-000001200`; steps past 10⁹ simply get more digits.
    public static func directoryName(step: Int) -> String {
        directoryPrefix + zeroPadded(step, 9)
    }

    /// `head-rank00002-of-00004.safetensors`.
    public static func headShardFile(rank: Int, of worldSize: Int) -> String {
        "head-rank\(zeroPadded(rank, 5))-of-\(zeroPadded(worldSize, 5)).safetensors"
    }

    /// The step of a `step-<digits>` name, nil for anything else.
    public static func step(fromDirectoryName name: String) -> Int? {
        guard name.hasPrefix(directoryPrefix) else { return nil }
        return decimal(name.dropFirst(directoryPrefix.count))
    }

    static func temporaryDirectoryName(step: Int, nonce: UInt64) -> String {
        temporaryPrefix + zeroPadded(step, 9) + "-" + hex(nonce)
    }

    /// The step of a `.tmp-step-<digits>-<nonce>` name, nil for anything else.
    static func step(fromTemporaryName name: String) -> Int? {
        guard name.hasPrefix(temporaryPrefix) else { return nil }
        let rest = name.dropFirst(temporaryPrefix.count)
        guard let dash = rest.firstIndex(of: "-"), rest.index(after: dash) < rest.endIndex else { return nil }
        return decimal(rest[..<dash])
    }

    /// (rank, world size) of a head shard file name.
    static func headShard(fromFile name: String) -> (rank: Int, worldSize: Int)? {
        guard name.hasPrefix("head-rank"), name.hasSuffix(".safetensors") else { return nil }
        let middle = name.dropFirst("head-rank".count).dropLast(".safetensors".count)
        let parts = middle.components(separatedBy: "-of-")
        guard parts.count == 2, let rank = decimal(Substring(parts[0])), let size = decimal(Substring(parts[1])),
              rank < size else { return nil }
        return (rank, size)
    }

    /// Names the pruner may delete inside a checkpoint directory: the files above and the temporary
    /// files of their atomic writes (`.<name>.tmp-…`). Anything else makes it leave the directory.
    static func isOwnFileName(_ name: String) -> Bool {
        let fixed = [manifestFile, trainerStateFile, backboneFile, optimizerFile]
        if fixed.contains(name) || headShard(fromFile: name) != nil { return true }
        guard name.hasPrefix("."), let range = name.range(of: ".tmp-") else { return false }
        let target = String(name[name.index(after: name.startIndex)..<range.lowerBound])
        return fixed.contains(target) || headShard(fromFile: target) != nil
    }

    private static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(text)
    }

    static func zeroPadded(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func hex32(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}

// MARK: - Errors

public struct CheckpointError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Kind: Sendable, Equatable {
        /// A tensor or a statistic to be saved is NaN or infinite; nothing was written.
        case nonFiniteValue
        /// Writing failed on some rank (an I/O error); the checkpoint does not exist.
        case writeFailed
        /// Writing failed because a file system was full (ENOSPC) or a quota was reached (EDQUOT)
        /// on some rank; the checkpoint does not exist.
        case diskFull
        /// The caller's inputs contradict each other or the world (step, ranks, shapes).
        case invalidInput
        /// A checkpoint on disk fails verification or does not fit the model being loaded.
        case damaged
        /// No such checkpoint.
        case notFound
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// A write failure with `errno` `code`: `.diskFull` for a full file system or quota.
    static func writeFailure(_ message: String, code: Int32) -> CheckpointError {
        CheckpointError(code == ENOSPC || code == EDQUOT ? .diskFull : .writeFailed, message)
    }
}

// MARK: - Manifest

/// What `manifest.json` records. A checkpoint exists only once this verifies.
public struct CheckpointManifest: Equatable, Sendable {
    public struct FileRecord: Equatable, Sendable {
        public let name: String
        public let size: Int
        public let crc32c: UInt32

        public init(name: String, size: Int, crc32c: UInt32) {
            self.name = name; self.size = size; self.crc32c = crc32c
        }
    }

    public var formatVersion: Int
    public var step: Int
    public var worldSize: Int
    /// UTC, ISO 8601.
    public var created: String
    /// Sorted by name; the manifest does not list itself.
    public var files: [FileRecord]

    public init(formatVersion: Int = CheckpointLayout.formatVersion, step: Int, worldSize: Int,
                created: String, files: [FileRecord]) {
        self.formatVersion = formatVersion; self.step = step; self.worldSize = worldSize
        self.created = created; self.files = files.sorted { $0.name < $1.name }
    }

    public func file(_ name: String) -> FileRecord? { files.first { $0.name == name } }

    private struct Stored: Codable {
        struct File: Codable { let name: String; let size: Int; let crc32c: String }
        let format: String
        let format_version: Int
        let step: Int
        let world_size: Int
        let created: String
        let files: [File]
    }

    public func encoded() throws -> [UInt8] {
        let stored = Stored(format: CheckpointLayout.formatName, format_version: formatVersion, step: step,
                            world_size: worldSize, created: created,
                            files: files.map { .init(name: $0.name, size: $0.size, crc32c: CheckpointLayout.hex32($0.crc32c)) })
        return try encodeJSON(stored)
    }

    /// Parses and checks the manifest's own consistency; the message says what is wrong.
    public static func decode(_ bytes: [UInt8]) throws -> CheckpointManifest {
        let stored: Stored
        do {
            stored = try JSONDecoder().decode(Stored.self, from: Data(bytes))
        } catch {
            throw CheckpointError(.damaged, "manifest unparsable: \(describeDecodingError(error))")
        }
        guard stored.format == CheckpointLayout.formatName else {
            throw CheckpointError(.damaged, "manifest format is \"\(stored.format)\", not \"\(CheckpointLayout.formatName)\"")
        }
        guard stored.format_version >= 1, stored.format_version <= CheckpointLayout.formatVersion else {
            throw CheckpointError(.damaged, "manifest format version \(stored.format_version) is not supported "
                                  + "(this build reads 1...\(CheckpointLayout.formatVersion))")
        }
        guard stored.step >= 0, stored.world_size >= 1 else {
            throw CheckpointError(.damaged, "manifest has step \(stored.step) and world size \(stored.world_size)")
        }
        var names = Set<String>()
        var files: [FileRecord] = []
        for file in stored.files {
            // A listed name is joined to the directory, so it must not leave it.
            guard !file.name.isEmpty, !file.name.contains("/"), file.name != ".", file.name != ".." else {
                throw CheckpointError(.damaged, "manifest lists an invalid file name \"\(file.name)\"")
            }
            guard names.insert(file.name).inserted else {
                throw CheckpointError(.damaged, "manifest lists \(file.name) twice")
            }
            guard file.size >= 0, file.crc32c.count == 8, let crc = UInt32(file.crc32c, radix: 16) else {
                throw CheckpointError(.damaged, "manifest entry for \(file.name) has an invalid size or crc32c")
            }
            files.append(FileRecord(name: file.name, size: file.size, crc32c: crc))
        }
        return CheckpointManifest(formatVersion: stored.format_version, step: stored.step,
                                  worldSize: stored.world_size, created: stored.created, files: files)
    }

    /// The files every checkpoint of `worldSize` ranks must list.
    static func requiredFiles(worldSize: Int) -> [String] {
        [CheckpointLayout.backboneFile, CheckpointLayout.optimizerFile, CheckpointLayout.trainerStateFile]
            + (0..<worldSize).map { CheckpointLayout.headShardFile(rank: $0, of: worldSize) }
    }
}

// MARK: - Trainer state

/// Everything besides tensors that a resume needs to continue exactly where the run stopped.
public struct TrainerState: Equatable, Sendable {
    /// Optimizer steps taken so far (the checkpoint's step).
    public var globalStep: Int
    public var epoch: Int
    /// Steps already taken in `epoch`.
    public var stepInEpoch: Int
    /// Positions of the epoch's permutation already consumed; with another rank count the sampler
    /// continues from here.
    public var epochSamplesConsumed: Int
    public var samplesSeen: Int
    public var worldSize: Int
    public var localBatch: Int
    public var globalBatch: Int
    /// The run's seed: the sampler, augmentation and Partial FC streams derive from it and the counters.
    public var seed: UInt64
    /// States of any stateful generators, by name.
    public var rngStates: [String: UInt64]
    /// AdaFace's feature-norm EMA μ and σ.
    public var normMean: Double
    public var normStd: Double
    public var learningRate: Double
    /// Run counters by name (e.g. skipped non-finite steps, bad samples).
    public var counters: [String: Int]
    public var totalClasses: Int
    public var embeddingSize: Int
    public var configName: String
    /// The resolved configuration as JSON text, byte for byte.
    public var configJSON: String
    /// The version the file was written with (the current one for new states).
    public private(set) var formatVersion: Int

    public init(globalStep: Int, epoch: Int, stepInEpoch: Int, epochSamplesConsumed: Int, samplesSeen: Int,
                worldSize: Int, localBatch: Int, globalBatch: Int, seed: UInt64, rngStates: [String: UInt64] = [:],
                normMean: Double, normStd: Double, learningRate: Double, counters: [String: Int] = [:],
                totalClasses: Int, embeddingSize: Int, configName: String, configJSON: String) {
        self.globalStep = globalStep; self.epoch = epoch; self.stepInEpoch = stepInEpoch
        self.epochSamplesConsumed = epochSamplesConsumed; self.samplesSeen = samplesSeen
        self.worldSize = worldSize; self.localBatch = localBatch; self.globalBatch = globalBatch
        self.seed = seed; self.rngStates = rngStates; self.normMean = normMean; self.normStd = normStd
        self.learningRate = learningRate; self.counters = counters; self.totalClasses = totalClasses
        self.embeddingSize = embeddingSize; self.configName = configName; self.configJSON = configJSON
        self.formatVersion = CheckpointLayout.formatVersion
    }

    public var normStatistics: (mean: Double, std: Double) { (normMean, normStd) }

    // Doubles are stored as decimal for people and as IEEE bit patterns for an exact round trip.
    private struct Stored: Codable {
        struct Exact: Codable { let value: Double; let bits: String }
        let format_version: Int
        let global_step: Int
        let epoch: Int
        let step_in_epoch: Int
        let epoch_samples_consumed: Int
        let samples_seen: Int
        let world_size: Int
        let local_batch: Int
        let global_batch: Int
        let seed: UInt64
        let rng_states: [String: String]
        let norm_ema_mean: Exact
        let norm_ema_std: Exact
        let learning_rate: Exact
        let counters: [String: Int]
        let total_classes: Int
        let embedding_size: Int
        let config_name: String
        let config: String
    }

    /// Throws for a non-finite statistic, which JSON cannot hold.
    public func encoded() throws -> [UInt8] {
        if let field = nonFiniteField {
            throw CheckpointError(.nonFiniteValue, "trainer state: \(field) is not finite")
        }
        func exact(_ x: Double) -> Stored.Exact { .init(value: x, bits: CheckpointLayout.hex(x.bitPattern)) }
        let stored = Stored(format_version: formatVersion, global_step: globalStep, epoch: epoch, step_in_epoch: stepInEpoch,
                            epoch_samples_consumed: epochSamplesConsumed, samples_seen: samplesSeen,
                            world_size: worldSize, local_batch: localBatch, global_batch: globalBatch, seed: seed,
                            rng_states: rngStates.mapValues(CheckpointLayout.hex),
                            norm_ema_mean: exact(normMean), norm_ema_std: exact(normStd), learning_rate: exact(learningRate),
                            counters: counters, total_classes: totalClasses, embedding_size: embeddingSize,
                            config_name: configName, config: configJSON)
        return try encodeJSON(stored)
    }

    public static func decode(_ bytes: [UInt8]) throws -> TrainerState {
        let stored: Stored
        do {
            stored = try JSONDecoder().decode(Stored.self, from: Data(bytes))
        } catch {
            throw CheckpointError(.damaged, "trainer state unparsable: \(describeDecodingError(error))")
        }
        func exact(_ field: String, _ e: Stored.Exact) throws -> Double {
            guard e.bits.count == 16, let bits = UInt64(e.bits, radix: 16) else {
                throw CheckpointError(.damaged, "trainer state unparsable: \(field).bits is not 16 hex digits")
            }
            let value = Double(bitPattern: bits)
            // A hand edit of one of the two would otherwise go unnoticed.
            guard value == e.value else {
                throw CheckpointError(.damaged, "trainer state: \(field) value \(e.value) disagrees with its bits \(e.bits)")
            }
            return value
        }
        var rng: [String: UInt64] = [:]
        for (name, text) in stored.rng_states {
            guard let value = UInt64(text, radix: 16) else {
                throw CheckpointError(.damaged, "trainer state unparsable: rng_states.\(name) is not hexadecimal")
            }
            rng[name] = value
        }
        guard stored.format_version >= 1, stored.format_version <= CheckpointLayout.formatVersion else {
            throw CheckpointError(.damaged, "trainer state format version \(stored.format_version) is not supported")
        }
        let nonNegative = [("global_step", stored.global_step), ("epoch", stored.epoch), ("step_in_epoch", stored.step_in_epoch),
                           ("epoch_samples_consumed", stored.epoch_samples_consumed), ("samples_seen", stored.samples_seen)]
        for (field, value) in nonNegative where value < 0 {
            throw CheckpointError(.damaged, "trainer state: \(field) is negative (\(value))")
        }
        let positive = [("world_size", stored.world_size), ("local_batch", stored.local_batch), ("global_batch", stored.global_batch),
                        ("total_classes", stored.total_classes), ("embedding_size", stored.embedding_size)]
        for (field, value) in positive where value < 1 {
            throw CheckpointError(.damaged, "trainer state: \(field) must be positive, got \(value)")
        }
        var state = TrainerState(
            globalStep: stored.global_step, epoch: stored.epoch, stepInEpoch: stored.step_in_epoch,
            epochSamplesConsumed: stored.epoch_samples_consumed, samplesSeen: stored.samples_seen,
            worldSize: stored.world_size, localBatch: stored.local_batch, globalBatch: stored.global_batch,
            seed: stored.seed, rngStates: rng,
            normMean: try exact("norm_ema_mean", stored.norm_ema_mean), normStd: try exact("norm_ema_std", stored.norm_ema_std),
            learningRate: try exact("learning_rate", stored.learning_rate), counters: stored.counters,
            totalClasses: stored.total_classes, embeddingSize: stored.embedding_size,
            configName: stored.config_name, configJSON: stored.config)
        state.formatVersion = stored.format_version
        return state
    }

    /// The name of the first non-finite statistic, if any.
    var nonFiniteField: String? {
        if !normMean.isFinite { return "norm EMA μ (\(normMean))" }
        if !normStd.isFinite { return "norm EMA σ (\(normStd))" }
        if !learningRate.isFinite { return "learning rate (\(learningRate))" }
        return nil
    }
}

// MARK: - Head shard

/// One rank's rows of the classifier and their momentum, as the writer takes them.
public struct HeadShard {
    public let classRange: Range<Int>
    public let totalClasses: Int
    public let embeddingSize: Int
    /// [classRange.count × embeddingSize].
    public let kernel: Tensor
    public let momentum: Tensor

    public init(classRange: Range<Int>, totalClasses: Int, embeddingSize: Int, kernel: Tensor, momentum: Tensor) {
        precondition(kernel.count == classRange.count * embeddingSize && momentum.count == kernel.count,
                     "head shard tensors must hold \(classRange.count) × \(embeddingSize) values")
        self.classRange = classRange; self.totalClasses = totalClasses; self.embeddingSize = embeddingSize
        self.kernel = kernel; self.momentum = momentum
    }

    public init(_ head: PartitionedSoftmaxHead) {
        self.init(classRange: head.classRange, totalClasses: head.configuration.totalClasses,
                  embeddingSize: head.configuration.embeddingSize, kernel: head.kernel, momentum: head.velocity)
    }
}

// MARK: - Shared helpers

func encodeJSON<Value: Encodable>(_ value: Value) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return Array(try encoder.encode(value)) + [0x0A]
}

func describeDecodingError(_ error: Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, let context):
        return "missing field \(path(context.codingPath + [key]))"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
        return "field \(path(context.codingPath)) has the wrong type"
    case DecodingError.dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not valid JSON" : "field \(path(context.codingPath)) is invalid"
    default:
        return "\(error)"
    }
}

private func path(_ keys: [CodingKey]) -> String {
    keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

/// Collective helpers with the same control flow on every rank, so a failure on one rank never
/// leaves another waiting in a collective.
enum RankExchange {
    /// Every rank contributes bytes; every rank receives all contributions, in rank order.
    static func allGather(_ bytes: [UInt8], _ group: CollectiveGroup) throws -> [[UInt8]] {
        let p = group.size
        var lengths = [Int64](repeating: 0, count: p)
        var mine = Int64(bytes.count)
        try lengths.withUnsafeMutableBufferPointer { try group.allGather(&mine, count: 1, into: $0.baseAddress!) }
        let counts = lengths.map { Int($0) }
        let total = counts.reduce(0, +)
        if total == 0 { return Array(repeating: [], count: p) }
        var all = [UInt8](repeating: 0, count: total)
        // A zero-length contribution still needs a valid pointer.
        let input = bytes.isEmpty ? [0] : bytes
        try input.withUnsafeBufferPointer { source in
            try all.withUnsafeMutableBufferPointer {
                try group.allGatherV(source.baseAddress!, counts: counts, into: $0.baseAddress!)
            }
        }
        var parts: [[UInt8]] = []
        var start = 0
        for count in counts {
            parts.append(Array(all[start..<(start + count)]))
            start += count
        }
        return parts
    }

    /// Rank 0's bytes, on every rank.
    static func broadcastFromRoot(_ bytes: [UInt8], _ group: CollectiveGroup) throws -> [UInt8] {
        try allGather(group.rank == 0 ? bytes : [], group)[0]
    }

    /// Throws on every rank when any rank failed; the message names the failing ranks and files.
    /// The error is `.diskFull` when any rank failed for lack of space, `kind` otherwise.
    static func agree(_ failure: String?, _ group: CollectiveGroup, _ kind: CheckpointError.Kind,
                      _ context: String, diskFull: Bool = false) throws {
        // A failing rank's text starts with one marker byte: "F" for a full disk, "E" otherwise.
        let mine = failure.map { (diskFull ? "F" : "E") + ($0.isEmpty ? "failed" : $0) } ?? ""
        let texts = try allGather(Array(mine.utf8), group)
        let failures = texts.enumerated().filter { !$0.element.isEmpty }
        guard !failures.isEmpty else { return }
        let lines = failures.map { rank, text in
            (group.size > 1 ? "rank \(rank): " : "") + String(decoding: text.dropFirst(), as: UTF8.self)
        }
        let full = failures.contains { $0.element.first == UInt8(ascii: "F") }
        throw CheckpointError(full ? .diskFull : kind, context + lines.joined(separator: "; "))
    }
}
