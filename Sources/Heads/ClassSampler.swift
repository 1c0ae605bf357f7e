// Partial FC sampling: every positive class of the global batch in this rank's range, plus uniform
// negatives up to ⌈rate·C_r⌉ classes. The draw depends only on (seed, step, range start), so a
// resumed run samples exactly what the uninterrupted one did.
import Tensors

struct ClassSampler {
    let classRange: Range<Int>
    let rate: Double
    let seed: UInt64
    private var isPositive: [Bool]
    private var candidates: [Int32]

    init(classRange: Range<Int>, rate: Double, seed: UInt64) {
        self.classRange = classRange
        self.rate = rate
        self.seed = seed
        isPositive = [Bool](repeating: false, count: classRange.count)
        candidates = [Int32](repeating: 0, count: classRange.count)
    }

    /// Number of classes a step keeps when it has `positives` positives.
    func activeCount(positives: Int) -> Int {
        let target = Int((rate * Double(classRange.count)).rounded(.up))
        return min(classRange.count, max(positives, target))
    }

    /// Writes the sorted local indices of the kept classes into `active` and returns their count.
    mutating func sample(labels: UnsafePointer<Int32>, count n: Int, step: Int,
                         into active: UnsafeMutablePointer<Int32>) -> Int {
        var positives = 0
        for i in 0..<n {
            let c = Int(labels[i])
            if classRange.contains(c) && !isPositive[c - classRange.lowerBound] {
                isPositive[c - classRange.lowerBound] = true
                positives += 1
            }
        }
        let keep = activeCount(positives: positives)
        var written = 0, free = 0
        for local in 0..<classRange.count {
            if isPositive[local] { active[written] = Int32(local); written += 1 }
            else { candidates[free] = Int32(local); free += 1 }
        }
        // Partial Fisher–Yates over the negatives.
        var rng = SplitMix64(seed: seed, UInt64(step), UInt64(classRange.lowerBound))
        let negatives = keep - positives
        for k in 0..<negatives {
            let pick = k + Int(rng.next() % UInt64(free - k))
            candidates.swapAt(k, pick)
            active[written + k] = candidates[k]
        }
        var kept = UnsafeMutableBufferPointer(start: active, count: keep)
        kept.sort()
        for i in 0..<n {
            let c = Int(labels[i])
            if classRange.contains(c) { isPositive[c - classRange.lowerBound] = false }
        }
        return keep
    }
}
