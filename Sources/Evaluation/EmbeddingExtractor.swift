// Embeddings of verification images as AdaFace evaluates them: the backbone in evaluation mode on
// the image and on its horizontal flip, the two un-normalised embeddings summed, then normalised.
import DataPipeline
import Layers
import Tensors

public enum EmbeddingExtractor {
    /// Un-normalised flip-fused features [count × D]: for each image, the embedding of the image and
    /// that of its mirror, each scaled back by its norm, summed. `fill(i, pixels)` writes image i as
    /// 112×112 BGR bytes. A network already prepared (for training) is used as it is; otherwise it is
    /// prepared for `batch` images and their mirrors. `progress` gets the number of images done.
    public static func flipFusedFeatures(count total: Int, network net: IResNet, batch: Int = 32,
                                         fill: (Int, UnsafeMutableBufferPointer<UInt8>) throws -> Void,
                                         progress: ((Int) -> Void)? = nil) throws -> [Float] {
        let size = net.configuration.inputSize, d = net.configuration.embeddingSize
        let pixelsPerImage = size * size * 3
        if net.batchCapacity < 2 { net.prepare(batchCapacity: 2 * min(batch, max(total, 1))) }
        let capacity = net.batchCapacity / 2
        var pixels = [UInt8](repeating: 0, count: pixelsPerImage)
        var features = [Float](repeating: 0, count: total * d)
        var start = 0
        while start < total {
            let count = min(capacity, total - start)
            for j in 0..<count {
                try pixels.withUnsafeMutableBufferPointer { try fill(start + j, $0) }
                let original = net.input.data + (2 * j) * pixelsPerImage
                InputNormalization.normalize(bgr: pixels, count: pixelsPerImage, into: original)
                // The mirror image goes right after the original.
                let mirror = original + pixelsPerImage
                for y in 0..<size {
                    for x in 0..<size {
                        let from = original + (y * size + x) * 3, to = mirror + (y * size + size - 1 - x) * 3
                        to[0] = from[0]; to[1] = from[1]; to[2] = from[2]
                    }
                }
            }
            net.forward(batch: 2 * count, training: false)
            for j in 0..<count {
                let a = net.embeddings.data + 2 * j * d, b = a + d
                let na = net.norms.data[2 * j], nb = net.norms.data[2 * j + 1]
                let row = (start + j) * d
                for c in 0..<d { features[row + c] = a[c] * na + b[c] * nb }
            }
            start += count
            progress?(start)
        }
        return features
    }

    /// Flip-fused unit embeddings [count × D] of the images in `indices` of `set`.
    public static func flipFused(_ set: VerificationSet, indices: Range<Int>, network net: IResNet,
                                 batch: Int = 32) throws -> [Float] {
        let size = net.configuration.inputSize, d = net.configuration.embeddingSize
        let decoder = try ImageDecoder()
        var fused = try flipFusedFeatures(count: indices.count, network: net, batch: batch) { i, pixels in
            try set.decode(indices.lowerBound + i, into: pixels, using: decoder, width: size, height: size)
        }
        for row in 0..<indices.count {
            var norm: Float = 0
            for c in 0..<d { norm += fused[row * d + c] * fused[row * d + c] }
            let inv = norm > 0 ? 1 / norm.squareRoot() : 0
            for c in 0..<d { fused[row * d + c] *= inv }
        }
        return fused
    }

    /// Verification accuracy of `net` on `set` (10-fold, squared L2, flip fusion).
    public static func verify(_ set: VerificationSet, network net: IResNet, batch: Int = 32) throws -> VerificationResult {
        let embeddings = try flipFused(set, indices: 0..<(2 * set.pairCount), network: net, batch: batch)
        let distances = embeddings.withUnsafeBufferPointer {
            VerificationProtocol.pairDistances($0.baseAddress!, pairs: set.pairCount, dimension: net.configuration.embeddingSize)
        }
        return VerificationProtocol.evaluate(distances: distances, issame: set.issame)
    }
}
