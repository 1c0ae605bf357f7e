// Loading a verified checkpoint: backbone weights and BatchNorm statistics, the optimizer's momentum,
// and the head re-partitioned to the current world: a rank copies exactly the rows of its class
// range from every saved shard that overlaps it, so any saved rank count loads into any other.
// Every file is checked against the manifest's size and CRC-32C as it is read, so damage that
// appeared after verification is still never loaded.
import Foundation
import Glibc
import Heads
import Layers
import Serialization
import Tensors

/// A checkpoint whose manifest verified (from `CheckpointStore`).
public struct Checkpoint: Sendable {
    public let directory: String
    public let manifest: CheckpointManifest
    public let trainerState: TrainerState

    public var step: Int { manifest.step }
    /// The rank count it was written with.
    public var worldSize: Int { manifest.worldSize }

    /// The saved head shards in rank order, with the class range each holds.
    public var headShards: [(file: String, classRange: Range<Int>)] {
        guard let partition = try? ClassPartition(totalClasses: trainerState.totalClasses, parts: worldSize) else { return [] }
        return (0..<worldSize).map { (CheckpointLayout.headShardFile(rank: $0, of: worldSize), partition.range(of: $0)) }
    }

    /// Backbone weights, BatchNorm running statistics and batch counters (official names).
    public func loadBackbone(into store: ParameterStore) throws {
        let file = try readSafeTensors(CheckpointLayout.backboneFile)
        do {
            try store.loadState(from: file)
        } catch {
            // StateDictError names the file and the key.
            throw CheckpointError(.damaged, "\(error)")
        }
    }

    /// SGD momentum, converted back to the engine's layouts.
    public func loadOptimizer(into optimizer: SGD, of store: ParameterStore) throws {
        let file = try readSafeTensors(CheckpointLayout.optimizerFile)
        precondition(optimizer.velocity.count >= store.parameterCount, "the optimizer does not belong to this store")
        for p in store.parameters {
            guard let info = file.info(p.name) else {
                throw CheckpointError(.damaged, "\(file.source): missing momentum for '\(p.name)'")
            }
            guard info.shape == p.shape, info.dtype == .f32 else {
                throw CheckpointError(.damaged, "\(file.source): '\(p.name)' is \(info.dtype.rawValue) \(info.shape), "
                                      + "the model expects F32 \(p.shape)")
            }
            let values = try file.floats(p.name)
            p.layout.importValues(values, into: optimizer.velocity.data + p.offset)
        }
    }

    /// Kernel and momentum rows of `classRange` (global class indices), gathered from every saved
    /// shard that overlaps it; `kernel` and `momentum` receive classRange.count × D values.
    public func loadHeadRows(_ classRange: Range<Int>, embeddingSize: Int,
                             kernel: UnsafeMutablePointer<Float>, momentum: UnsafeMutablePointer<Float>) throws {
        let state = trainerState
        guard embeddingSize == state.embeddingSize, classRange.lowerBound >= 0,
              classRange.upperBound <= state.totalClasses else {
            throw CheckpointError(.damaged, "\(directory): the checkpoint's head is \(state.totalClasses) classes × "
                                  + "\(state.embeddingSize); classes \(classRange) × \(embeddingSize) were asked for")
        }
        let d = embeddingSize
        for (name, saved) in headShards {
            let lo = max(saved.lowerBound, classRange.lowerBound), hi = min(saved.upperBound, classRange.upperBound)
            guard lo < hi else { continue }
            let file = try readSafeTensors(name)
            let expected: [String: String] = [
                "class_start": String(saved.lowerBound), "class_count": String(saved.count),
                "total_classes": String(state.totalClasses), "embedding_size": String(d),
            ]
            for (key, value) in expected.sorted(by: { $0.key < $1.key }) where file.metadata[key] != value {
                throw CheckpointError(.damaged, "\(file.source): metadata \(key) is \(file.metadata[key] ?? "missing"), "
                                      + "expected \(value) for shard \(name)")
            }
            for (tensor, destination) in [("kernel", kernel), ("momentum", momentum)] {
                guard let info = file.info(tensor), info.dtype == .f32, info.shape == [saved.count, d] else {
                    throw CheckpointError(.damaged, "\(file.source): '\(tensor)' must be F32 [\(saved.count), \(d)]")
                }
                try file.withBytes(tensor) { raw in
                    let source = raw.baseAddress!.assumingMemoryBound(to: Float.self) + (lo - saved.lowerBound) * d
                    (destination + (lo - classRange.lowerBound) * d).update(from: source, count: (hi - lo) * d)
                }
            }
        }
    }

    /// This rank's shard of `partition` (any rank count, whatever the saved one).
    public func loadHeadShard(partition: ClassPartition, rank: Int, kernel: Tensor, momentum: Tensor) throws {
        let range = partition.range(of: rank)
        let d = trainerState.embeddingSize
        guard partition.totalClasses == trainerState.totalClasses else {
            throw CheckpointError(.damaged, "\(directory): the checkpoint has \(trainerState.totalClasses) classes, "
                                  + "the model \(partition.totalClasses)")
        }
        precondition(kernel.count == range.count * d && momentum.count == range.count * d,
                     "head tensors must hold \(range.count) × \(d) values")
        try loadHeadRows(range, embeddingSize: d, kernel: kernel.data, momentum: momentum.data)
    }

    /// The head's kernel and momentum for its own rank, and its norm EMA μ and σ.
    public func restoreHead(_ head: PartitionedSoftmaxHead) throws {
        guard head.configuration.embeddingSize == trainerState.embeddingSize else {
            throw CheckpointError(.damaged, "\(directory): the checkpoint's embeddings have \(trainerState.embeddingSize) "
                                  + "dimensions, the model \(head.configuration.embeddingSize)")
        }
        try loadHeadShard(partition: head.partition, rank: head.group.rank, kernel: head.kernel, momentum: head.velocity)
        head.normStatistics.mean = trainerState.normMean
        head.normStatistics.std = trainerState.normStd
    }

    /// Reads a listed file whole, checks it against the manifest, and parses it.
    func readSafeTensors(_ name: String) throws -> SafeTensorsFile {
        let path = directory + "/" + name
        guard let record = manifest.file(name) else {
            throw CheckpointError(.damaged, "\(directory): the manifest does not list \(name)")
        }
        var bytes = try readWholeFile(path)
        guard bytes.count == record.size else {
            throw CheckpointError(.damaged, "\(path): size \(bytes.count), manifest says \(record.size)")
        }
        guard Checksum.crc32c(bytes) == record.crc32c else {
            throw CheckpointError(.damaged, "\(path): CRC mismatch with the manifest")
        }
        do {
            if bytes.withUnsafeBytes(Zstd.isFrame) { bytes = try Zstd.decompress(bytes, source: path) }
            return try SafeTensorsFile(bytes: bytes, source: path)
        } catch {
            throw CheckpointError(.damaged, "\(error)")
        }
    }
}

/// The whole file, read with one allocation of its size.
func readWholeFile(_ path: String) throws -> [UInt8] {
    // O_NONBLOCK: a FIFO in place of a checkpoint file must not block the open (see fstat below).
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw CheckpointError(.damaged, "\(path): cannot open: \(errnoText())") }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw CheckpointError(.damaged, "\(path): stat failed: \(errnoText())") }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw CheckpointError(.damaged, "\(path): not a regular file") }
    let size = Int(info.st_size)
    var failure: Int32 = 0
    let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
        while initialized < size {
            let n = read(fd, buffer.baseAddress! + initialized, min(size - initialized, 1 << 30))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { failure = errno; break }
            if n == 0 { break }
            initialized += n
        }
    }
    guard failure == 0 else { throw CheckpointError(.damaged, "\(path): read failed: \(errnoText(failure))") }
    return bytes
}
