// The verification protocol of InsightFace and AdaFace for LFW-style pair lists: squared L2
// distances between unit embeddings, thresholds 0:0.01:4, 10-fold cross-validation without
// shuffling (the threshold is chosen on 9 folds and the accuracy measured on the held-out one).

public struct VerificationResult: Sendable {
    public let accuracyMean: Double
    public let accuracyStd: Double
    /// Mean over folds of the threshold chosen on the training folds.
    public let bestThreshold: Double
    public let foldAccuracies: [Double]
    /// TAR at each of `VerificationProtocol.farTargets`, over all pairs (scores = −squared distance),
    /// the ROC point nearest each FAR (`ROC.tar(atFAR:)`).
    public let tarAtFAR: [(far: Double, tar: Double)]
    /// The ROC over all pairs (scores = −squared distance), for plotting.
    public let roc: ROC
}

public enum VerificationProtocol {
    public static let thresholds: [Double] = (0...400).map { Double($0) * 0.01 }
    /// The FARs at which `evaluate` reports TAR.
    public static let farTargets: [Double] = [1e-3, 1e-4]

    /// Squared L2 distance of each pair (rows 2i and 2i+1 of `embeddings`, [2K × D], unit rows).
    public static func pairDistances(_ embeddings: UnsafePointer<Float>, pairs: Int, dimension d: Int) -> [Double] {
        (0..<pairs).map { i in
            let a = embeddings + 2 * i * d, b = a + d
            var s = 0.0
            for j in 0..<d { let t = Double(a[j] - b[j]); s += t * t }
            return s
        }
    }

    /// 10-fold accuracy. Folds are contiguous, as scikit-learn's KFold(shuffle=False) makes them.
    public static func evaluate(distances: [Double], issame: [Bool], folds: Int = 10) -> VerificationResult {
        precondition(distances.count == issame.count && distances.count >= folds, "one label per pair, at least one per fold")
        let n = distances.count, m = thresholds.count
        // KFold: the first n % folds folds hold one extra sample.
        let base = n / folds, extra = n % folds
        let bounds = (0...folds).map { $0 * base + min($0, extra) }
        // correct[f * m + t]: pairs of fold f that threshold t classifies right. A threshold's
        // accuracy on the training folds is the total minus the held-out fold's count.
        var correct = [Int](repeating: 0, count: folds * m)
        for f in 0..<folds {
            for i in bounds[f]..<bounds[f + 1] {
                for (t, threshold) in thresholds.enumerated() where (distances[i] < threshold) == issame[i] {
                    correct[f * m + t] += 1
                }
            }
        }
        let total = (0..<m).map { t in (0..<folds).reduce(0) { $0 + correct[$1 * m + t] } }
        var accuracies: [Double] = [], chosen: [Double] = []
        for f in 0..<folds {
            let testCount = bounds[f + 1] - bounds[f]
            var bestAccuracy = -1.0, best = 0
            for t in 0..<m {
                let accuracy = Double(total[t] - correct[f * m + t]) / Double(n - testCount)
                // The first threshold reaching the best accuracy, as numpy's argmax picks it.
                if accuracy > bestAccuracy { bestAccuracy = accuracy; best = t }
            }
            accuracies.append(Double(correct[f * m + best]) / Double(testCount))
            chosen.append(thresholds[best])
        }
        let mean = accuracies.reduce(0, +) / Double(folds)
        let variance = accuracies.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(folds)
        let roc = ROC(scores: distances.map { -$0 }, labels: issame)
        return VerificationResult(accuracyMean: mean, accuracyStd: variance.squareRoot(),
                                  bestThreshold: chosen.reduce(0, +) / Double(folds), foldAccuracies: accuracies,
                                  tarAtFAR: farTargets.map { (far: $0, tar: roc.tar(atFAR: $0)) }, roc: roc)
    }
}
