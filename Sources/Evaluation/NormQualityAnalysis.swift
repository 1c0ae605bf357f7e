// The paper's central claim made checkable: the feature norm of an image is a proxy for its quality.
// Norms of a verification set's images against their known quality levels (from `synth`), and the
// verification accuracy of the pairs split by quality.
import DataPipeline
import Layers
import Tensors

public enum NormQualityAnalysis {
    /// Feature norms (evaluation mode, the image alone, no flip) of `images` of `set`.
    public static func norms(_ set: VerificationSet, indices: Range<Int>, network net: IResNet, batch: Int = 32) throws -> [Float] {
        let size = net.configuration.inputSize, pixelsPerImage = size * size * 3
        if net.batchCapacity < 1 { net.prepare(batchCapacity: min(batch, max(indices.count, 1))) }
        let capacity = net.batchCapacity
        let decoder = try ImageDecoder()
        var pixels = [UInt8](repeating: 0, count: pixelsPerImage)
        var norms: [Float] = []
        var start = indices.lowerBound
        while start < indices.upperBound {
            let count = min(capacity, indices.upperBound - start)
            for j in 0..<count {
                try pixels.withUnsafeMutableBufferPointer { try set.decode(start + j, into: $0, using: decoder, width: size, height: size) }
                InputNormalization.normalize(bgr: pixels, count: pixelsPerImage, into: net.input.data + j * pixelsPerImage)
            }
            net.forward(batch: count, training: false)
            for j in 0..<count { norms.append(net.norms.data[j]) }
            start += count
        }
        return norms
    }

    public static func pearson(_ x: [Double], _ y: [Double]) -> Double {
        precondition(x.count == y.count && x.count >= 2, "two paired samples at least")
        let n = Double(x.count), mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in 0..<x.count { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); syy += (y[i] - my) * (y[i] - my) }
        return sxy / (sxx * syy).squareRoot()
    }

    /// Spearman's rank correlation (average ranks for ties).
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double { pearson(ranks(x), ranks(y)) }

    static func ranks(_ values: [Double]) -> [Double] {
        let order = values.indices.sorted { values[$0] < values[$1] }
        var ranks = [Double](repeating: 0, count: values.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && values[order[j + 1]] == values[order[i]] { j += 1 }
            for k in i...j { ranks[order[k]] = Double(i + j) / 2 + 1 }
            i = j + 1
        }
        return ranks
    }

    /// Accuracy of the pairs whose lower image quality falls in each band, at the protocol's mean
    /// threshold (`distances` and `issame` per pair, `pairQuality` = min of the two images' levels).
    public static func accuracyByQuality(distances: [Double], issame: [Bool], pairQuality: [Double], threshold: Double,
                                         bands: [(name: String, range: Range<Double>)])
        -> [(name: String, pairs: Int, accuracy: Double)] {
        bands.map { band in
            let members = pairQuality.indices.filter { band.range.contains(pairQuality[$0]) }
            let correct = members.filter { (distances[$0] < threshold) == issame[$0] }.count
            return (band.name, members.count, members.isEmpty ? .nan : Double(correct) / Double(members.count))
        }
    }
}
