// Embeddings of verification images as AdaFace evaluates them: the backbone in evaluation mode on
// the image and on its horizontal flip, the two un-normalised embeddings summed, then normalised.
import DataPipeline
import Layers
import Tensors

public enum EmbeddingExtractor {
    /// Flip-fused unit embeddings [count × D] of the images in `indices` of `set`. `batch` images (and
    /// their mirrors) per pass when the network is not prepared yet; otherwise its prepared capacity.
    public static func flipFused(_ set: VerificationSet, indices: Range<Int>, network net: IResNet,
                                 batch: Int = 32) throws -> [Float] {
        let size = net.configuration.inputSize, d = net.configuration.embeddingSize
        let pixelsPerImage = size * size * 3
        // A network already prepared (for training) is used as it is: no second set of activations.
        if net.batchCapacity < 2 { net.prepare(batchCapacity: 2 * min(batch, max(indices.count, 1))) }
        let capacity = net.batchCapacity / 2
        let decoder = try ImageDecoder()
        var pixels = [UInt8](repeating: 0, count: pixelsPerImage)
        var fused = [Float](repeating: 0, count: indices.count * d)
        var start = indices.lowerBound
        while start < indices.upperBound {
            let count = min(capacity, indices.upperBound - start)
            for j in 0..<count {
                try pixels.withUnsafeMutableBufferPointer {
                    try set.decode(start + j, into: $0, using: decoder, width: size, height: size)
                }
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
                var norm: Float = 0
                let row = (start - indices.lowerBound + j) * d
                for c in 0..<d {
                    let v = a[c] * na + b[c] * nb
                    fused[row + c] = v
                    norm += v * v
                }
                let inv = norm > 0 ? 1 / norm.squareRoot() : 0
                for c in 0..<d { fused[row + c] *= inv }
            }
            start += count
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
