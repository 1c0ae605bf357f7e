// AdaFace's running statistics of the feature norm, over the global batch. Every rank computes them
// from the same all-gathered norms in the same order, so the values are bit-identical everywhere.

public struct FeatureNormStatistics: Equatable, Sendable {
    public var mean: Double
    public var std: Double
    public let alpha: Double

    public static let clipRange: ClosedRange<Double> = 0.001...100

    public init(mean: Double = 20, std: Double = 100, alpha: Double = 0.01) {
        self.mean = mean; self.std = std; self.alpha = alpha
    }

    /// Updates the EMA with the batch mean and unbiased std of the clipped norms (before they are
    /// used in the same step) and returns the batch values.
    @discardableResult
    public mutating func update(norms: UnsafePointer<Float>, count n: Int) -> (mean: Double, std: Double) {
        precondition(n >= 2, "the unbiased std needs at least two samples")
        var sum = 0.0
        for i in 0..<n { sum += Self.clip(norms[i]) }
        let batchMean = sum / Double(n)
        var squares = 0.0
        for i in 0..<n { let d = Self.clip(norms[i]) - batchMean; squares += d * d }
        let batchStd = (squares / Double(n - 1)).squareRoot()
        mean = alpha * batchMean + (1 - alpha) * mean
        std = alpha * batchStd + (1 - alpha) * std
        return (batchMean, batchStd)
    }

    @inline(__always)
    public static func clip(_ norm: Float) -> Double { min(max(Double(norm), clipRange.lowerBound), clipRange.upperBound) }

    /// ẑ = clip(h·(ñ − μ)/(σ + ε), −1, 1).
    @inline(__always)
    public func normalizedNorm(_ norm: Float, h: Double) -> Double {
        min(max(h * (Self.clip(norm) - mean) / (std + marginEpsilon), -1), 1)
    }
}
