// Which samples each rank trains on. An epoch is a permutation of the data set seeded by
// (seed, epoch); the global batch of step s is positions [s·N, (s+1)·N) of it, and rank r takes
// positions r, r + P, r + 2P, … of that block (DESIGN.md §2.1). The last incomplete global batch is
// dropped, so every step has exactly N samples. A step's samples depend only on (seed, epoch, step,
// rank, P), so a restart at step k of an epoch continues with exactly the samples not yet seen.
import Tensors

public struct DistributedSampler: Sendable {
    public let datasetSize: Int
    public let worldSize: Int
    public let rank: Int
    public let localBatch: Int
    public let seed: UInt64

    public init(datasetSize: Int, worldSize: Int, rank: Int, localBatch: Int, seed: UInt64) throws {
        guard worldSize >= 1, rank >= 0, rank < worldSize else {
            throw DataError(.badFormat, "rank \(rank) is outside a world of \(worldSize)")
        }
        guard localBatch >= 1 else { throw DataError(.badFormat, "the local batch must be positive") }
        guard datasetSize >= localBatch * worldSize else {
            throw DataError(.emptyDataSet, "\(datasetSize) samples cannot fill one global batch of "
                            + "\(localBatch * worldSize) (\(worldSize) ranks × \(localBatch))")
        }
        self.datasetSize = datasetSize; self.worldSize = worldSize; self.rank = rank
        self.localBatch = localBatch; self.seed = seed
    }

    public var globalBatch: Int { localBatch * worldSize }
    /// Full global batches per epoch (the remainder is dropped).
    public var stepsPerEpoch: Int { datasetSize / globalBatch }

    /// The epoch's order of the data set: a Fisher–Yates shuffle from the (seed, epoch) stream.
    public func permutation(epoch: Int) -> [Int32] {
        var order = (0..<Int32(datasetSize)).map { $0 }
        var rng = SplitMix64(seed: seed, 0x5A4D_504C, UInt64(epoch))
        var i = datasetSize - 1
        while i > 0 {
            let j = Int(rng.next() % UInt64(i + 1))
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }

    /// This rank's sample indices for `step` of an epoch whose permutation is `order`.
    public func indices(step: Int, in order: [Int32]) -> [Int] {
        precondition(step >= 0 && step < stepsPerEpoch, "step \(step) outside the epoch's \(stepsPerEpoch) steps")
        let base = step * globalBatch
        return (0..<localBatch).map { k in Int(order[base + rank + k * worldSize]) }
    }
}
