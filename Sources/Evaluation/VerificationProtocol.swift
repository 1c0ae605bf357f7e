// The verification protocol of InsightFace and AdaFace for LFW-style pair lists: squared L2
// distances between unit embeddings, thresholds 0:0.01:4, 10-fold cross-validation without
// shuffling (the threshold is chosen on 9 folds and the accuracy measured on the held-out one).

public struct VerificationResult: Sendable {
    public let accuracyMean: Double
    public let accuracyStd: Double
    /// Mean over folds of the threshold chosen on the training folds.
    public let bestThreshold: Double
    public let foldAccuracies: [Double]
}

public enum VerificationProtocol {
    public static let thresholds: [Double] = (0...400).map { Double($0) * 0.01 }

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
        let n = distances.count
        var accuracies: [Double] = [], chosen: [Double] = []
        for f in 0..<folds {
            // KFold: the first n % folds folds hold one extra sample.
            let base = n / folds, extra = n % folds
            let start = f * base + min(f, extra)
            let test = start..<(start + base + (f < extra ? 1 : 0))
            var bestAccuracy = -1.0, bestThreshold = 0.0
            for t in thresholds {
                var correct = 0, total = 0
                for i in 0..<n where !test.contains(i) {
                    if (distances[i] < t) == issame[i] { correct += 1 }
                    total += 1
                }
                let accuracy = Double(correct) / Double(total)
                // The first threshold reaching the best accuracy, as numpy's argmax picks it.
                if accuracy > bestAccuracy { bestAccuracy = accuracy; bestThreshold = t }
            }
            var correct = 0
            for i in test where (distances[i] < bestThreshold) == issame[i] { correct += 1 }
            accuracies.append(Double(correct) / Double(test.count))
            chosen.append(bestThreshold)
        }
        let mean = accuracies.reduce(0, +) / Double(folds)
        let variance = accuracies.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(folds)
        return VerificationResult(accuracyMean: mean, accuracyStd: variance.squareRoot(),
                                  bestThreshold: chosen.reduce(0, +) / Double(folds), foldAccuracies: accuracies)
    }
}
