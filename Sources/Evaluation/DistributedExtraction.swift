// Verification under mpirun: the ranks split a set's images into contiguous slices, extract their
// flip-fused embeddings, and all-gather them, so every rank ends with the whole [2K × D] matrix in
// image order (the same matrix one process computes alone).
import Collectives
import DataPipeline
import Layers

public enum DistributedExtraction {
    /// The slice of `count` images rank `rank` of `size` extracts.
    public static func slice(count: Int, rank: Int, size: Int) -> Range<Int> {
        (count * rank / size)..<(count * (rank + 1) / size)
    }

    public static func flipFused(_ set: VerificationSet, network net: IResNet, group: CollectiveGroup,
                                 batch: Int = 32) throws -> [Float] {
        let images = 2 * set.pairCount, d = net.configuration.embeddingSize
        let mine = slice(count: images, rank: group.rank, size: group.size)
        let local = mine.isEmpty ? [] : try EmbeddingExtractor.flipFused(set, indices: mine, network: net, batch: batch)
        var all = [Float](repeating: 0, count: images * d)
        let counts = (0..<group.size).map { slice(count: images, rank: $0, size: group.size).count * d }
        var source = local.isEmpty ? [Float](repeating: 0, count: 1) : local
        try source.withUnsafeMutableBufferPointer { src in
            try all.withUnsafeMutableBufferPointer {
                try group.allGatherV(UnsafePointer(src.baseAddress!), counts: counts, into: $0.baseAddress!)
            }
        }
        return all
    }

    /// The 10-fold protocol on `set` with the extraction shared by the ranks (every rank gets the result).
    public static func verify(_ set: VerificationSet, network net: IResNet, group: CollectiveGroup,
                              batch: Int = 32) throws -> VerificationResult {
        let embeddings = try flipFused(set, network: net, group: group, batch: batch)
        let distances = embeddings.withUnsafeBufferPointer {
            VerificationProtocol.pairDistances($0.baseAddress!, pairs: set.pairCount, dimension: net.configuration.embeddingSize)
        }
        return VerificationProtocol.evaluate(distances: distances, issame: set.issame)
    }
}
