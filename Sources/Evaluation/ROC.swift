// The receiver operating characteristic of a binary score, computed as scikit-learn's
// `roc_curve(y_true, y_score, drop_intermediate=True)` computes it, and TAR at a given FAR.

/// An ROC curve. Scores are "higher means same": for verification pairs pass the negated distance.
///
/// The points follow scikit-learn's `roc_curve` exactly:
/// - candidate thresholds are the distinct scores in decreasing order; the point at a threshold
///   counts the samples with `score >= threshold`;
/// - with more than two candidates, a point is dropped when both its false-positive and its
///   true-positive count are collinear with its neighbours (the second difference is zero in both),
///   keeping the first and the last (`drop_intermediate=True`);
/// - the point (0, 0) is prepended with the threshold `+inf`;
/// - `fpr = fp / fp.last` and `tpr = tp / tp.last` (NaN when there are no negatives or no positives,
///   where scikit-learn warns and returns NaN).
public struct ROC: Sendable {
    public let fpr: [Double]
    public let tpr: [Double]
    /// Decreasing; `thresholds[0] == +inf`.
    public let thresholds: [Double]

    /// O(n log n): one sort, one pass.
    public init(scores: [Double], labels: [Bool]) {
        precondition(scores.count == labels.count && !scores.isEmpty, "one label per score, at least one score")
        // Decreasing score. The order within equal scores does not matter: only the counts at the
        // end of each run of equal scores are used.
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        var fps: [Int] = [], tps: [Int] = [], cuts: [Double] = []
        var tp = 0
        for (k, i) in order.enumerated() {
            if labels[i] { tp += 1 }
            // The last sample of a run of equal scores closes a threshold.
            if k == order.count - 1 || scores[order[k + 1]] != scores[i] {
                tps.append(tp); fps.append(k + 1 - tp); cuts.append(scores[i])
            }
        }
        if fps.count > 2 {
            var keep = [0]
            for j in 1..<(fps.count - 1) {
                let dfp = fps[j + 1] - 2 * fps[j] + fps[j - 1], dtp = tps[j + 1] - 2 * tps[j] + tps[j - 1]
                if dfp != 0 || dtp != 0 { keep.append(j) }
            }
            keep.append(fps.count - 1)
            fps = keep.map { fps[$0] }; tps = keep.map { tps[$0] }; cuts = keep.map { cuts[$0] }
        }
        fps.insert(0, at: 0); tps.insert(0, at: 0); cuts.insert(.infinity, at: 0)
        let negatives = Double(fps.last!), positives = Double(tps.last!)
        fpr = fps.map { Double($0) / negatives }
        tpr = tps.map { Double($0) / positives }
        thresholds = cuts
    }

    /// TAR at a FAR, by the IJB convention of InsightFace's IJB evaluation: the ROC point nearest
    /// the FAR, `min_index = argmin |fpr − far|` (the first such point), `TAR = tpr[min_index]`.
    ///
    /// The verification sets (LFW, CFP-FP, AgeDB-30, ...) report TAR@FAR with this same rule,
    /// over all pairs. InsightFace's verification script has another convention (`calculate_val`:
    /// per fold, the threshold reaching the FAR on the training folds is interpolated linearly on a
    /// 0.001 grid and the TAR measured on the held-out fold); it is not used here, so that the
    /// verification sets and IJB-B/C report TAR@FAR the same way.
    public func tar(atFAR far: Double) -> Double {
        var best = 0, bestGap = abs(fpr[0] - far)
        for j in 1..<fpr.count {
            let gap = abs(fpr[j] - far)
            if gap < bestGap { best = j; bestGap = gap }
        }
        return tpr[best]
    }
}
