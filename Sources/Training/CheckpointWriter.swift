// Writing a checkpoint from every rank (DESIGN.md §5).
//
// Every rank goes through the same collectives in the same order whatever happens locally, so a
// failure on one rank (a full disk, an I/O error, a NaN) is agreed on by all and nobody is left
// waiting in a collective:
//   agree on the step and the inputs → refuse non-finite values → rank 0 creates
//   `.tmp-step-N-<nonce>/` → every rank writes its head shard, rank 0 the backbone, optimizer and
//   trainer state (each: temporary name, fsync, rename) → the ranks exchange file sizes and CRCs →
//   rank 0 writes manifest.json, renames the directory to `step-N` and fsyncs the root → agree →
//   rank 0 prunes.
// On failure the temporary directory is removed (best effort) and older checkpoints are untouched.
import Collectives
import Foundation
import Glibc
import Heads
import Layers
import Serialization
import Tensors

#if !_endian(little)
#error("checkpoint tensors are written from raw memory, which must be little-endian")
#endif

public struct CheckpointWriteResult: Sendable {
    public let step: Int
    public let directory: String
    /// Every file of the checkpoint but the manifest, as the manifest lists them (on every rank).
    public let files: [CheckpointManifest.FileRecord]
    public let seconds: Double
    /// True when a checkpoint of the same step was already there and has been replaced.
    public let replacedExisting: Bool
    /// What pruning did; rank 0 only, nil elsewhere or without `keepLast`.
    public let pruning: CheckpointPruneReport?

    public var totalBytes: Int { files.reduce(0) { $0 + $1.size } }
}

public struct CheckpointWriter {
    public let root: String
    public let group: CollectiveGroup
    /// Complete checkpoints to keep after a successful write; nil keeps all.
    public var keepLast: Int?
    /// The step the run resumed from: never pruned until a newer complete checkpoint exists.
    public var protectedStep: Int?
    public var compression: Compression

    public init(root: String, group: CollectiveGroup, keepLast: Int? = nil, protectedStep: Int? = nil,
                compression: Compression = .none) {
        self.root = root; self.group = group; self.keepLast = keepLast
        self.protectedStep = protectedStep; self.compression = compression
    }

    /// Writes checkpoint `state.globalStep`; every rank calls it with its own head shard (the
    /// backbone, optimizer and state are taken from rank 0; BatchNorm running statistics are written
    /// as they are, so average them across ranks first). Throws the same `CheckpointError` on every
    /// rank when any rank fails; the previous checkpoints are then untouched.
    public func write(state: TrainerState, backbone: ParameterStore, optimizer: SGD,
                      head: HeadShard) throws -> CheckpointWriteResult {
        let started = Date()
        let step = state.globalStep
        let rank = group.rank
        let context = "checkpoint step \(step) under \(root) not written: "

        var bounds = [Int64(step), -Int64(step)]
        try bounds.withUnsafeMutableBufferPointer { try group.allReduce($0.baseAddress!, count: 2, .max) }
        guard bounds[0] == -bounds[1] else {
            throw CheckpointError(.invalidInput,
                                  "checkpoint not written: the ranks disagree on the step (\(-bounds[1]) to \(bounds[0]))")
        }
        try RankExchange.agree(inputProblem(state, backbone, optimizer, head), group, .invalidInput, context)
        try RankExchange.agree(nonFiniteValue(state, backbone, optimizer, head), group, .nonFiniteValue, context)

        var nonce: UInt64 = rank == 0 ? UInt64.random(in: 1...UInt64.max) : 0
        try group.broadcast(&nonce, count: 1, root: 0)
        let temporary = root + "/" + CheckpointLayout.temporaryDirectoryName(step: step, nonce: nonce)
        let final = root + "/" + CheckpointLayout.directoryName(step: step)
        var failure: String?
        var diskFull = false
        if rank == 0 {
            do { try CheckpointDirectory.create(temporary, under: root) } catch {
                failure = "\(error)"
                diskFull = Self.isDiskFull(error)
            }
        }
        try RankExchange.agree(failure, group, .writeFailed, context, diskFull: diskFull)

        let files: [CheckpointManifest.FileRecord]
        var replaced = false
        do {
            var mine: [CheckpointManifest.FileRecord] = []
            failure = nil
            do {
                mine.append(try writeHeadShard(head, step: step, into: temporary))
                if rank == 0 {
                    mine.append(try writeBackbone(backbone, step: step, into: temporary))
                    mine.append(try writeOptimizer(optimizer, backbone, step: step, into: temporary))
                    let stateFile = try DurableFile(path: temporary + "/" + CheckpointLayout.trainerStateFile)
                    try state.encoded().withUnsafeBytes { try stateFile.append($0) }
                    mine.append(try stateFile.commit())
                }
            } catch {
                failure = "\(error)"
                diskFull = Self.isDiskFull(error)
            }
            try RankExchange.agree(failure, group, .writeFailed, context, diskFull: diskFull)
            files = try gatherRecords(mine)

            failure = nil
            if rank == 0 {
                do {
                    replaced = try publish(files, step: step, temporary: temporary, final: final, nonce: nonce)
                } catch {
                    failure = "\(error)"
                    diskFull = Self.isDiskFull(error)
                }
            }
            try RankExchange.agree(failure, group, .writeFailed, context, diskFull: diskFull)
        } catch {
            if rank == 0 { CheckpointDirectory.removeBestEffort(temporary) }
            throw error
        }

        var pruning: CheckpointPruneReport?
        if rank == 0, let keepLast {
            pruning = CheckpointStore.prune(root: root, keepLast: keepLast, resumedFrom: protectedStep, justWritten: step)
        }
        return CheckpointWriteResult(step: step, directory: final, files: files,
                                     seconds: Date().timeIntervalSince(started),
                                     replacedExisting: replaced, pruning: pruning)
    }

    private static func isDiskFull(_ error: Error) -> Bool { (error as? CheckpointError)?.kind == .diskFull }

    // MARK: Checks

    private func inputProblem(_ state: TrainerState, _ backbone: ParameterStore, _ optimizer: SGD,
                              _ head: HeadShard) -> String? {
        let p = group.size, rank = group.rank
        if root.isEmpty { return "the checkpoint root is empty" }
        if let keepLast, keepLast < 1 { return "keep-last must be at least 1, got \(keepLast)" }
        if state.globalStep < 0 { return "the step is negative (\(state.globalStep))" }
        if state.worldSize != p { return "the trainer state says \(state.worldSize) ranks, the group has \(p)" }
        if head.totalClasses != state.totalClasses || head.embeddingSize != state.embeddingSize {
            return "the head shard is \(head.totalClasses) classes × \(head.embeddingSize), "
                + "the trainer state says \(state.totalClasses) × \(state.embeddingSize)"
        }
        guard let partition = try? ClassPartition(totalClasses: head.totalClasses, parts: p) else {
            return "\(head.totalClasses) classes cannot be partitioned over \(p) ranks"
        }
        let expected = partition.range(of: rank)
        if head.classRange != expected {
            return "the head shard holds classes \(head.classRange), but rank \(rank) of \(p) owns \(expected)"
        }
        if rank == 0 && optimizer.velocity.count < backbone.parameterCount {
            return "the optimizer's momentum holds \(optimizer.velocity.count) values, the backbone has \(backbone.parameterCount)"
        }
        return nil
    }

    /// Names the first tensor or statistic holding NaN or ±∞.
    private func nonFiniteValue(_ state: TrainerState, _ backbone: ParameterStore, _ optimizer: SGD,
                                _ head: HeadShard) -> String? {
        let range = "classes \(head.classRange.lowerBound)..<\(head.classRange.upperBound)"
        if let count = nonFiniteCount(head.kernel.data, head.kernel.count) {
            return "head kernel (\(range)) holds \(count) non-finite values"
        }
        if let count = nonFiniteCount(head.momentum.data, head.momentum.count) {
            return "head momentum (\(range)) holds \(count) non-finite values"
        }
        guard group.rank == 0 else { return nil }
        if let field = state.nonFiniteField { return "\(field) is not finite" }
        for (i, p) in backbone.parameters.enumerated() {
            if let count = nonFiniteCount(backbone.value(i), p.count) {
                return "backbone tensor '\(p.name)' holds \(count) non-finite values"
            }
            if let count = nonFiniteCount(optimizer.velocity.data + p.offset, p.count) {
                return "optimizer momentum for '\(p.name)' holds \(count) non-finite values"
            }
        }
        for (i, b) in backbone.buffers.enumerated() {
            if let count = nonFiniteCount(backbone.buffer(i), b.count) {
                return "backbone buffer '\(b.name)' holds \(count) non-finite values"
            }
        }
        return nil
    }

    // MARK: Files

    private func writeHeadShard(_ head: HeadShard, step: Int, into directory: String) throws -> CheckpointManifest.FileRecord {
        let name = CheckpointLayout.headShardFile(rank: group.rank, of: group.size)
        var file = SafeTensorsStream()
        file.metadata = [
            "class_start": String(head.classRange.lowerBound), "class_count": String(head.classRange.count),
            "total_classes": String(head.totalClasses), "embedding_size": String(head.embeddingSize),
            "rank": String(group.rank), "world_size": String(group.size), "step": String(step),
        ]
        let shape = [head.classRange.count, head.embeddingSize]
        file.add("kernel", shape: shape, tensor: head.kernel)
        file.add("momentum", shape: shape, tensor: head.momentum)
        return try file.write(to: directory + "/" + name, compression: compression)
    }

    private func writeBackbone(_ store: ParameterStore, step: Int, into directory: String) throws -> CheckpointManifest.FileRecord {
        var file = SafeTensorsStream()
        // "pt" tells the Python tooling these are PyTorch tensors.
        file.metadata = ["format": "pt", "step": String(step)]
        for tensor in store.exportState() {
            switch tensor.values {
            case .float32(let values): file.add(tensor.name, shape: tensor.shape, floats: values)
            case .int64(let values): file.add(tensor.name, shape: tensor.shape, int64s: values)
            }
        }
        return try file.write(to: directory + "/" + CheckpointLayout.backboneFile, compression: compression)
    }

    private func writeOptimizer(_ optimizer: SGD, _ store: ParameterStore, step: Int,
                                into directory: String) throws -> CheckpointManifest.FileRecord {
        var file = SafeTensorsStream()
        // The engine's velocity follows torch.optim.SGD: v ← μ·v + g + λ·w, w ← w − lr·v.
        file.metadata = ["format": "pt", "step": String(step), "optimizer": "SGD", "state": "momentum_buffer",
                         "momentum": "\(optimizer.momentum)", "weight_decay": "\(optimizer.weightDecay)"]
        for p in store.parameters {
            file.add(p.name, shape: p.shape,
                     floats: p.layout.exportValues(optimizer.velocity.data + p.offset, count: p.count))
        }
        return try file.write(to: directory + "/" + CheckpointLayout.optimizerFile, compression: compression)
    }

    // MARK: Exchange and publish

    private func gatherRecords(_ mine: [CheckpointManifest.FileRecord]) throws -> [CheckpointManifest.FileRecord] {
        let text = mine.map { "\($0.name)\t\($0.size)\t\($0.crc32c)\n" }.joined()
        var all: [CheckpointManifest.FileRecord] = []
        for part in try RankExchange.allGather(Array(text.utf8), group) {
            for line in String(decoding: part, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                guard fields.count == 3, let size = Int(fields[1]), let crc = UInt32(fields[2]) else {
                    throw CheckpointError(.writeFailed, "garbled file record from a rank: \(line)")
                }
                all.append(.init(name: String(fields[0]), size: size, crc32c: crc))
            }
        }
        return all.sorted { $0.name < $1.name }
    }

    /// Rank 0: manifest last, then the directory rename that makes the checkpoint exist.
    private func publish(_ files: [CheckpointManifest.FileRecord], step: Int, temporary: String, final: String,
                         nonce: UInt64) throws -> Bool {
        let required = CheckpointManifest.requiredFiles(worldSize: group.size)
        let names = files.map(\.name)
        guard Set(names) == Set(required), names.count == required.count else {
            throw CheckpointError(.writeFailed, "the ranks reported files \(names), expected \(required.sorted())")
        }
        let manifest = CheckpointManifest(step: step, worldSize: group.size, created: timestampNow(), files: files)
        let file = try DurableFile(path: temporary + "/" + CheckpointLayout.manifestFile)
        try manifest.encoded().withUnsafeBytes { try file.append($0) }
        _ = try file.commit()

        // A checkpoint of this step already there (a re-run of the same step) is moved aside first:
        // rename cannot replace a non-empty directory.
        var aside: String?
        if CheckpointDirectory.exists(final) {
            guard CheckpointDirectory.isDirectory(final) else {
                throw CheckpointError(.writeFailed, "\(final) exists and is not a checkpoint directory")
            }
            let name = CheckpointLayout.temporaryDirectoryName(step: step, nonce: nonce) + "-replaced"
            aside = root + "/" + name
            guard Glibc.rename(final, aside!) == 0 else {
                let code = errno
                throw CheckpointError.writeFailure("\(final): moving the existing checkpoint aside failed: "
                                                   + errnoText(code), code: code)
            }
        }
        guard Glibc.rename(temporary, final) == 0 else {
            let code = errno
            if let aside { _ = Glibc.rename(aside, final) }
            throw CheckpointError.writeFailure("\(final): renaming the temporary directory into place failed: "
                                               + errnoText(code), code: code)
        }
        try CheckpointDirectory.sync(root)
        if let aside { CheckpointDirectory.removeBestEffort(aside) }
        return aside != nil
    }
}

// MARK: - Durable files

/// A file written under a temporary name in its final directory, CRC-32C and size counted as the
/// bytes go out, then fsynced, renamed into place and made durable with a directory fsync.
final class DurableFile {
    let path: String
    private let directory: String
    private let temporary: String
    private var fd: Int32 = -1
    private(set) var size = 0
    private(set) var crc: UInt32 = 0
    private var name: String { String(path[path.index(after: path.lastIndex(of: "/") ?? path.startIndex)...]) }

    init(path: String) throws {
        self.path = path
        let slash = path.lastIndex(of: "/")
        directory = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var candidate = ""
        while true {
            candidate = directory + "/." + base + ".tmp-\(getpid())-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 || (errno != EEXIST && errno != EINTR) { break }
        }
        temporary = candidate
        guard fd >= 0 else { throw failure("creating a temporary file", errno) }
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(temporary)
        }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard var next = bytes.baseAddress else { return }
        crc = Checksum.crc32c(bytes, seed: crc)
        var remaining = bytes.count
        while remaining > 0 {
            let n = Glibc.write(fd, next, min(remaining, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("write", errno)
            }
            next += n
            remaining -= n
        }
        size += bytes.count
    }

    /// Makes the file durable under its final name; the object is done afterwards.
    func commit() throws -> CheckpointManifest.FileRecord {
        guard fsync(fd) == 0 else { throw failure("fsync", errno) }
        let closed = close(fd)
        let closeError = errno
        fd = -1
        // close reports deferred write errors on network file systems.
        guard closed == 0 else { unlink(temporary); throw failure("close", closeError) }
        guard Glibc.rename(temporary, path) == 0 else { let error = failure("rename", errno); unlink(temporary); throw error }
        try CheckpointDirectory.sync(directory)
        return .init(name: name, size: size, crc32c: crc)
    }

    /// `code` is the errno of the failed call, taken before anything else can change it.
    private func failure(_ action: String, _ code: Int32) -> CheckpointError {
        CheckpointError.writeFailure("\(name): \(action) failed: \(errnoText(code))", code: code)
    }
}

func errnoText(_ code: Int32 = errno) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}

func timestampNow() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter.string(from: Date())
}

/// Directory operations of the writer and the pruner.
enum CheckpointDirectory {
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `root` if needed, then the new directory `path` inside it.
    static func create(_ path: String, under root: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(.writeFailed, "\(root): cannot create the checkpoint root: \(error.localizedDescription)")
        }
        guard mkdir(path, 0o755) == 0 else {
            let code = errno
            throw CheckpointError.writeFailure("\(path): mkdir failed: \(errnoText(code))", code: code)
        }
    }

    /// fsync of a directory makes renames inside it durable; file systems that cannot (EINVAL) are
    /// not failing.
    static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError(.writeFailed, "\(path): open for fsync failed: \(errnoText())") }
        defer { close(fd) }
        if fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP {
            throw CheckpointError(.writeFailed, "\(path): directory fsync failed: \(errnoText())")
        }
    }

    /// Entries of a directory, without "." and "..".
    static func entries(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            throw CheckpointError(.notFound, "\(path): cannot list: \(errnoText())")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes a checkpoint or temporary directory only if it holds nothing but checkpoint files:
    /// the pruner must never delete what it did not write. Returns why it did not, if it did not.
    @discardableResult
    static func removeOwn(_ path: String) -> String? {
        let names: [String]
        do { names = try entries(path) } catch { return "\(error)" }
        if let foreign = names.first(where: { !CheckpointLayout.isOwnFileName($0) }) {
            return "\(path) holds \"\(foreign)\", which is not a checkpoint file; left in place"
        }
        for name in names where unlink(path + "/" + name) != 0 && errno != ENOENT {
            return "\(path)/\(name): unlink failed: \(errnoText())"
        }
        guard rmdir(path) == 0 else { return "\(path): rmdir failed: \(errnoText())" }
        return nil
    }

    static func removeBestEffort(_ path: String) {
        removeOwn(path)
    }
}

// MARK: - Streaming safetensors

/// A safetensors file written straight from the tensors' memory (the head shard is not copied), in
/// the layout `SafeTensorsWriter` produces: 8-byte header length, JSON header padded with spaces to a
/// multiple of 8, then the data in the order added.
struct SafeTensorsStream {
    enum Payload {
        case floats([Float])
        case int64s([Int64])
        case tensor(Tensor)
    }

    private var entries: [(name: String, dtype: TensorDType, shape: [Int], payload: Payload, bytes: Int)] = []
    var metadata: [String: String] = [:]

    mutating func add(_ name: String, shape: [Int], floats: [Float]) {
        precondition(floats.count == shape.reduce(1, *), "'\(name)': \(floats.count) values for shape \(shape)")
        entries.append((name, .f32, shape, .floats(floats), 4 * floats.count))
    }

    mutating func add(_ name: String, shape: [Int], int64s: [Int64]) {
        precondition(int64s.count == shape.reduce(1, *), "'\(name)': \(int64s.count) values for shape \(shape)")
        entries.append((name, .i64, shape, .int64s(int64s), 8 * int64s.count))
    }

    mutating func add(_ name: String, shape: [Int], tensor: Tensor) {
        precondition(tensor.count == shape.reduce(1, *), "'\(name)': tensor of \(tensor.shape) for shape \(shape)")
        entries.append((name, .f32, shape, .tensor(tensor), 4 * tensor.count))
    }

    func header() -> [UInt8] {
        var members: [String] = []
        if !metadata.isEmpty {
            members.append("\"__metadata__\":{"
                + metadata.keys.sorted().map { "\(jsonQuoted($0)):\(jsonQuoted(metadata[$0]!))" }.joined(separator: ",") + "}")
        }
        var offset = 0
        for entry in entries {
            members.append("\(jsonQuoted(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":["
                + entry.shape.map(String.init).joined(separator: ",")
                + "],\"data_offsets\":[\(offset),\(offset + entry.bytes)]}")
            offset += entry.bytes
        }
        var json = Array("{\(members.joined(separator: ","))}".utf8)
        json += repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8)
        var length = UInt64(json.count).littleEndian
        return withUnsafeBytes(of: &length) { Array($0) } + json
    }

    func write(to path: String, compression: Compression) throws -> CheckpointManifest.FileRecord {
        let file = try DurableFile(path: path)
        switch compression {
        case .none:
            try header().withUnsafeBytes { try file.append($0) }
            for entry in entries { try withBytes(entry.payload) { try file.append($0) } }
        case .zstd(let level):
            var all = header()
            for entry in entries { withBytes(entry.payload) { all.append(contentsOf: $0) } }
            let frame: [UInt8]
            do {
                frame = try Zstd.compress(all, level: level)
            } catch {
                throw CheckpointError(.writeFailed, "\(path): \(error)")
            }
            try frame.withUnsafeBytes { try file.append($0) }
        }
        return try file.commit()
    }

    private func withBytes<Result>(_ payload: Payload, _ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch payload {
        case .floats(let values): return try values.withUnsafeBytes(body)
        case .int64s(let values): return try values.withUnsafeBytes(body)
        case .tensor(let tensor):
            return try body(UnsafeRawBufferPointer(start: tensor.data, count: 4 * tensor.count))
        }
    }

}

// MARK: - Value checks

/// The number of NaN or infinite values, nil when there are none. Bit test so the loop vectorises.
func nonFiniteCount(_ values: UnsafePointer<Float>, _ count: Int) -> Int? {
    let bad = UnsafeRawPointer(values).withMemoryRebound(to: UInt32.self, capacity: max(count, 1)) { bits in
        var bad = 0
        for i in 0..<count where bits[i] & 0x7F80_0000 == 0x7F80_0000 { bad += 1 }
        return bad
    }
    return bad == 0 ? nil : bad
}
