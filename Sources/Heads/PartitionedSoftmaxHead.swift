// The class-partitioned margin softmax (model parallel): each rank holds the kernel rows of its
// class range, sees the whole global batch through an all-gather, and the cross-entropy is
// assembled in log space from MAX and SUM all-reduces (DESIGN.md §2, steps 3–8).
//
// The kernel is never normalised in place: cos = (e·W_j)·(1/‖W_j‖) is a GEMM with the raw rows
// followed by a column scale, and the backward pass folds 1/‖W_j‖ into the logit gradient, so no
// normalised copy of a shard (422 MB for WebFace4M on one rank) is ever stored.
import Collectives
import Foundation
import Tensors

public struct HeadConfiguration: Sendable {
    public var totalClasses: Int
    public var embeddingSize: Int
    public var margin: MarginPolicy
    public var scale: Double
    /// Partial FC: the fraction of each rank's classes a step uses, in (0, 1]. 1 is the full softmax.
    public var sampleRate: Double
    public var seed: UInt64

    public init(totalClasses: Int, embeddingSize: Int = 512, margin: MarginPolicy = .adaFaceDefault,
                scale: Double = 64, sampleRate: Double = 1, seed: UInt64 = 0) {
        self.totalClasses = totalClasses; self.embeddingSize = embeddingSize; self.margin = margin
        self.scale = scale; self.sampleRate = sampleRate; self.seed = seed
    }
}

/// What one step of the head reports (identical on every rank).
public struct HeadStepResult: Sendable {
    public var loss: Double
    public var batchNormMean: Double
    public var batchNormStd: Double
    public var normStatistics: FeatureNormStatistics
    /// Kernel rows this rank used (its whole shard without Partial FC).
    public var activeClasses: Int
}

public final class PartitionedSoftmaxHead {
    public let configuration: HeadConfiguration
    public let group: CollectiveGroup
    public let partition: ClassPartition
    public let classRange: Range<Int>
    /// This rank's rows of the classifier, [C_r × D], and their SGD momentum.
    public let kernel: Tensor
    public let velocity: Tensor
    public var normStatistics = FeatureNormStatistics()

    private var sampler: ClassSampler?
    private var capacity = 0
    private var gathered = Tensor(shape: [0])
    private var gatheredNorms = Tensor(shape: [0])
    private var gatheredLabels = [Int32]()
    private var logits = Tensor(shape: [0])
    private var fullGradient = Tensor(shape: [0])
    private var rowMax = [Float]()
    private var rowSums = [Double]()
    private var zHat = [Double]()
    private var targetColumn = [Int]()
    private var targetSlope = [Float]()
    // Active (sampled) rows: their local indices, a packed copy of the rows, 1/‖W_j‖, the gradient.
    private var active = [Int32]()
    private var activeCount = 0
    private var packedKernel = Tensor(shape: [0])
    private var inverseNorms = Tensor(shape: [0])
    private var activeGradient = Tensor(shape: [0])
    private var lastBatch = 0

    public init(configuration: HeadConfiguration, group: CollectiveGroup) throws {
        guard configuration.sampleRate > 0 && configuration.sampleRate <= 1 else {
            throw HeadError.invalidConfiguration("sample_rate must be in (0, 1], got \(configuration.sampleRate)")
        }
        guard configuration.embeddingSize >= 1 else {
            throw HeadError.invalidConfiguration("embedding size must be positive")
        }
        self.configuration = configuration
        self.group = group
        partition = try ClassPartition(totalClasses: configuration.totalClasses, parts: group.size)
        classRange = partition.range(of: group.rank)
        let d = configuration.embeddingSize
        kernel = Tensor(shape: [classRange.count, d])
        velocity = Tensor(shape: [classRange.count, d])
        if case let .adaFace(_, _, tAlpha) = configuration.margin {
            normStatistics = FeatureNormStatistics(alpha: tAlpha)
        }
        if configuration.sampleRate < 1 {
            sampler = ClassSampler(classRange: classRange, rate: configuration.sampleRate, seed: configuration.seed)
        }
        active = (0..<classRange.count).map { Int32($0) }
        activeCount = classRange.count
        resetKernel()
    }

    /// Unit-norm random rows, drawn per global class index so that every partition of the same seed
    /// holds the same classifier.
    public func resetKernel() {
        let d = configuration.embeddingSize, seed = configuration.seed, first = classRange.lowerBound
        let w = kernel.data
        Parallel.forRanges(classRange.count, grain: 64) { rows in
            for local in rows {
                var rng = SplitMix64(seed: seed, 0x4B45_524E, UInt64(first + local))
                let row = w + local * d
                var norm: Float = 0
                for j in 0..<d { row[j] = rng.nextNormal(); norm += row[j] * row[j] }
                let inv = 1 / norm.squareRoot()
                for j in 0..<d { row[j] *= inv }
            }
        }
        velocity.fill(0)
    }

    /// Bytes of the shard's weights and momentum, the logits buffer, and the kernel gradient with the
    /// gathered batch and its gradient.
    public var memory: (weights: Int, momentum: Int, logits: Int, gradientAndBatch: Int) {
        (4 * kernel.capacity, 4 * velocity.capacity, 4 * logits.capacity,
         4 * (gathered.capacity + fullGradient.capacity + packedKernel.capacity + activeGradient.capacity))
    }

    private func prepare(globalBatch n: Int) {
        if n <= capacity { return }
        capacity = n
        let d = configuration.embeddingSize, k = classRange.count
        gathered = Tensor(shape: [n, d])
        gatheredNorms = Tensor(shape: [n])
        gatheredLabels = [Int32](repeating: 0, count: n)
        let maxActive = sampler.map { $0.activeCount(positives: min(n, k)) } ?? k
        logits = Tensor(shape: [n, maxActive])
        fullGradient = Tensor(shape: [n, d])
        rowMax = [Float](repeating: 0, count: n)
        rowSums = [Double](repeating: 0, count: 2 * n)
        zHat = [Double](repeating: 0, count: n)
        targetColumn = [Int](repeating: -1, count: n)
        targetSlope = [Float](repeating: 0, count: n)
        if sampler != nil {
            packedKernel = Tensor(shape: [maxActive, d])
            active = [Int32](repeating: 0, count: k)
        }
        inverseNorms = Tensor(shape: [maxActive])
        activeGradient = Tensor(shape: [maxActive, d])
    }

    /// Forward and backward for this rank's `batch` rows of the global batch: returns the loss of
    /// the global batch and writes this rank's embedding gradient into `gradEmbeddings` ([batch × D]).
    ///
    /// The embedding gradient is scaled by the world size: the backbone all-reduce averages over the
    /// ranks, and the average of the ranks' gradients must equal the gradient of the global-mean loss.
    public func step(embeddings: UnsafePointer<Float>, norms: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                     batch: Int, step: Int, gradEmbeddings: UnsafeMutablePointer<Float>) throws -> HeadStepResult {
        let p = group.size, d = configuration.embeddingSize
        var sizes: [Int64] = [Int64(batch), -Int64(batch)]
        try sizes.withUnsafeMutableBufferPointer { try group.allReduce($0.baseAddress!, count: 2, .max) }
        guard sizes[0] == Int64(batch) && -sizes[1] == Int64(batch) else {
            throw HeadError.invalidBatch("ranks disagree on the local batch size (from \(-sizes[1]) to \(sizes[0]))")
        }
        guard batch >= 1 else { throw HeadError.invalidBatch("the local batch is empty") }
        let n = batch * p
        prepare(globalBatch: n)
        try KernelProfiler.measure("head all-gather") {
            try group.allGather(embeddings, count: batch * d, into: gathered.data)
            try group.allGather(norms, count: batch, into: gatheredNorms.data)
            try gatheredLabels.withUnsafeMutableBufferPointer { try group.allGather(labels, count: batch, into: $0.baseAddress!) }
        }
        for i in 0..<n where gatheredLabels[i] < 0 || Int(gatheredLabels[i]) >= configuration.totalClasses {
            throw HeadError.invalidBatch("label \(gatheredLabels[i]) of sample \(i % batch) on rank \(i / batch) "
                                         + "is outside [0, \(configuration.totalClasses))")
        }
        var batchStats = (mean: 0.0, std: 0.0)
        if case let .adaFace(_, h, _) = configuration.margin {
            batchStats = normStatistics.update(norms: gatheredNorms.data, count: n)
            for i in 0..<n { zHat[i] = normStatistics.normalizedNorm(gatheredNorms.data[i], h: h) }
        }

        let weights = selectActiveRows(step: step, globalBatch: n)
        let k = activeCount
        KernelProfiler.measure("head logits", flops: 2 * Double(n * k * d)) {
            BLAS.gemm(transB: true, m: n, n: k, k: d, a: gathered.data, b: weights, c: logits.data)
            scaleAndClamp(rows: n, columns: k)
        }
        applyMargins(rows: n)
        let loss = try crossEntropy(rows: n, columns: k)
        KernelProfiler.measure("head softmax backward") { logitGradient(rows: n, columns: k) }
        // dE for the whole batch, then each rank keeps its own rows, summed over the class shards.
        try KernelProfiler.measure("head embedding gradient", flops: 2 * Double(n * k * d)) {
            BLAS.gemm(m: n, n: d, k: k, a: logits.data, b: weights, c: fullGradient.data)
            try group.reduceScatter(fullGradient.data, blockCount: batch * d, into: gradEmbeddings, .sum)
        }
        let worldScale = Float(p)
        for i in 0..<(batch * d) { gradEmbeddings[i] *= worldScale }
        KernelProfiler.measure("head kernel gradient", flops: 2 * Double(n * k * d)) {
            kernelGradient(weights: weights, rows: n, columns: k)
        }
        lastBatch = batch
        return HeadStepResult(loss: loss, batchNormMean: batchStats.mean, batchNormStd: batchStats.std,
                              normStatistics: normStatistics, activeClasses: k)
    }

    /// The rows this step uses: the whole shard, or the Partial FC sample packed contiguously.
    private func selectActiveRows(step: Int, globalBatch n: Int) -> UnsafeMutablePointer<Float> {
        let d = configuration.embeddingSize
        let rows: UnsafeMutablePointer<Float>
        if sampler != nil {
            activeCount = gatheredLabels.withUnsafeBufferPointer { labels in
                active.withUnsafeMutableBufferPointer { sampler!.sample(labels: labels.baseAddress!, count: n, step: step,
                                                                        into: $0.baseAddress!) }
            }
            let packed = packedKernel.data, source = kernel.data
            active.withUnsafeBufferPointer { idx in
                Parallel.forRanges(activeCount, grain: 256) { range in
                    for j in range { (packed + j * d).update(from: source + Int(idx[j]) * d, count: d) }
                }
            }
            rows = packed
        } else {
            activeCount = classRange.count
            rows = kernel.data
        }
        let inv = inverseNorms.data
        Parallel.forRanges(activeCount, grain: 256) { range in
            for j in range {
                let row = rows + j * d
                var acc = Vec16(repeating: 0)
                var c = 0
                while c + 16 <= d { let v = load16(row + c); acc += v * v; c += 16 }
                var s = acc.sum()
                while c < d { s += row[c] * row[c]; c += 1 }
                inv[j] = 1 / s.squareRoot()
            }
        }
        return rows
    }

    /// z = s·clamp(cos, −1+ε, 1−ε), with cos = (e·W_j)/‖W_j‖.
    private func scaleAndClamp(rows n: Int, columns k: Int) {
        let s = Float(configuration.scale), bound = Float(1 - marginEpsilon)
        let z = logits.data, inv = inverseNorms.data
        Parallel.forRanges(n, grain: 1) { range in
            let lo = Vec16(repeating: -bound), hi = Vec16(repeating: bound), sv = Vec16(repeating: s)
            for i in range {
                let row = z + i * k
                var j = 0
                while j + 16 <= k {
                    store16(clamp16(load16(row + j) * load16(inv + j), lo, hi) * sv, row + j)
                    j += 16
                }
                while j < k { row[j] = min(max(row[j] * inv[j], -bound), bound) * s; j += 1 }
            }
        }
    }

    /// The column of `classIndex` among the active rows, if this rank uses it this step.
    private func activeColumn(of classIndex: Int) -> Int? {
        guard classRange.contains(classIndex) else { return nil }
        let local = Int32(classIndex - classRange.lowerBound)
        if sampler == nil { return Int(local) }
        var lo = 0, hi = activeCount
        while lo < hi {
            let mid = (lo + hi) / 2
            if active[mid] < local { lo = mid + 1 } else { hi = mid }
        }
        return lo < activeCount && active[lo] == local ? lo : nil
    }

    /// Replaces the target logits this rank owns by their margin versions, and keeps the slope
    /// d(target)/d(cos) for the backward pass (0 where a clamp or clip is active).
    private func applyMargins(rows n: Int) {
        let s = configuration.scale, k = activeCount
        let bound = 1 - marginEpsilon
        for i in 0..<n {
            guard let column = activeColumn(of: Int(gatheredLabels[i])) else {
                targetColumn[i] = -1
                continue
            }
            let position = i * k + column
            let cosine = Double(logits.data[position]) / s
            let (logit, slope) = marginTarget(cosine: cosine, zHat: zHat[i], policy: configuration.margin, scale: s)
            // A cosine sitting on its clamp passes no gradient.
            let clamped = abs(cosine) >= bound * (1 - 1e-7)
            logits.data[position] = Float(logit)
            targetColumn[i] = column
            targetSlope[i] = clamped ? 0 : Float(slope)
        }
    }

    /// loss = mean over the global batch of log Σ_j exp(z_ij) − z_{i,y_i}, assembled from a MAX
    /// all-reduce of the row maxima and a SUM all-reduce of the shifted sums and the target logits.
    private func crossEntropy(rows n: Int, columns k: Int) throws -> Double {
        let z = logits.data
        rowMax.withUnsafeMutableBufferPointer { maxima in
            let m = maxima.baseAddress!
            Parallel.forRanges(n, grain: 1) { range in
                for i in range {
                    let row = z + i * k
                    var best = Vec16(repeating: -.infinity)
                    var j = 0
                    while j + 16 <= k { best = max16(best, load16(row + j)); j += 16 }
                    var value = best.max()
                    while j < k { value = max(value, row[j]); j += 1 }
                    m[i] = value
                }
            }
        }
        try KernelProfiler.measure("head all-reduce") {
            try rowMax.withUnsafeMutableBufferPointer { try group.allReduce($0.baseAddress!, count: n, .max) }
        }
        rowSums.withUnsafeMutableBufferPointer { sums in
            let sp = sums.baseAddress!
            rowMax.withUnsafeBufferPointer { maxima in
                let m = maxima.baseAddress!
                Parallel.forRanges(n, grain: 1) { range in
                    for i in range {
                        let row = z + i * k
                        let shift = Vec16(repeating: m[i])
                        var acc = Vec16(repeating: 0)
                        var j = 0
                        while j + 16 <= k { acc += exp16(load16(row + j) - shift); j += 16 }
                        var total = Double(acc.sum())
                        while j < k { total += Double(exp1(row[j] - m[i])); j += 1 }
                        sp[i] = total
                    }
                }
            }
            for i in 0..<n {
                sp[n + i] = targetColumn[i] >= 0 ? Double(z[i * k + targetColumn[i]]) : 0
            }
        }
        try KernelProfiler.measure("head all-reduce") {
            try rowSums.withUnsafeMutableBufferPointer { try group.allReduce($0.baseAddress!, count: 2 * n, .sum) }
        }
        var total = 0.0
        for i in 0..<n { total += log(rowSums[i]) + Double(rowMax[i]) - rowSums[n + i] }
        return total / Double(n)
    }

    /// In place over the logits: g_ij = dL/dcos_ij · 1/‖W_j‖, with dL/dz = (softmax − onehot)/N.
    private func logitGradient(rows n: Int, columns k: Int) {
        let z = logits.data, inv = inverseNorms.data
        let s = Float(configuration.scale), edge = Float(configuration.scale * (1 - marginEpsilon))
        let invN = 1 / Float(n)
        rowMax.withUnsafeBufferPointer { maxima in
            rowSums.withUnsafeBufferPointer { sums in
                let m = maxima.baseAddress!, sp = sums.baseAddress!
                Parallel.forRanges(n, grain: 1) { range in
                    for i in range {
                        let row = z + i * k
                        let target = targetColumn[i]
                        let targetLogit = target >= 0 ? row[target] : 0
                        let shift = Vec16(repeating: m[i])
                        let factor = Vec16(repeating: s * invN / Float(sp[i]))
                        let edgeV = Vec16(repeating: edge)
                        var j = 0
                        while j + 16 <= k {
                            let logit = load16(row + j)
                            // Cosines on their clamp (|z| = s(1−ε)) pass no gradient.
                            let g = (exp16(logit - shift) * factor * load16(inv + j))
                                .replacing(with: 0, where: (logit .>= edgeV) .| (logit .<= -edgeV))
                            store16(g, row + j)
                            j += 16
                        }
                        while j < k {
                            let logit = row[j]
                            row[j] = abs(logit) >= edge ? 0 : exp1(logit - m[i]) * s * invN / Float(sp[i]) * inv[j]
                            j += 1
                        }
                        if target >= 0 {
                            let probability = exp1(targetLogit - m[i]) / Float(sp[i])
                            row[target] = (probability - 1) * invN * targetSlope[i] * inv[target]
                        }
                    }
                }
            }
        }
    }

    /// dW_j = G_j − W_j·(W_j·G_j)/‖W_j‖² with G = (scaled logit gradient)ᵀ·E, i.e. the gradient
    /// through the row normalisation Ŵ_j = W_j/‖W_j‖.
    private func kernelGradient(weights: UnsafeMutablePointer<Float>, rows n: Int, columns k: Int) {
        let d = configuration.embeddingSize
        let grad = activeGradient.data, inv = inverseNorms.data
        BLAS.gemm(transA: true, m: k, n: d, k: n, a: logits.data, b: gathered.data, c: grad)
        Parallel.forRanges(k, grain: 256) { range in
            for j in range {
                let w = weights + j * d, g = grad + j * d
                var dot: Float = 0
                for c in 0..<d { dot += w[c] * g[c] }
                let coefficient = dot * inv[j] * inv[j]
                for c in 0..<d { g[c] -= coefficient * w[c] }
            }
        }
    }

    /// SGD with momentum and weight decay on the rows the last step used (truly sparse under
    /// Partial FC: the other rows and their momentum are untouched). Never all-reduced: the
    /// gradient already covers the global batch.
    public func applySGD(learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 5e-4) {
        let d = configuration.embeddingSize
        if sampler == nil {
            OptimizerKernels.sgdMomentum(weights: kernel.data, gradients: activeGradient.data, velocity: velocity.data,
                                         count: activeCount * d, learningRate: learningRate, momentum: momentum,
                                         weightDecay: weightDecay)
            return
        }
        let w = kernel.data, v = velocity.data, g = activeGradient.data
        active.withUnsafeBufferPointer { idx in
            Parallel.forRanges(activeCount, grain: 256) { range in
                for j in range {
                    let row = Int(idx[j]) * d
                    OptimizerKernels.sgdMomentum(weights: w + row, gradients: g + j * d, velocity: v + row, count: d,
                                                 learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
                }
            }
        }
    }

    /// The last step's kernel gradient scattered over the whole shard ([C_r × D], zero for rows
    /// the step did not use).
    public func shardGradient() -> [Float] {
        let d = configuration.embeddingSize
        var out = [Float](repeating: 0, count: classRange.count * d)
        for j in 0..<activeCount {
            let row = Int(active[j])
            for c in 0..<d { out[row * d + c] = activeGradient.data[j * d + c] }
        }
        return out
    }

    /// Local indices of the rows the last step used.
    public var lastActiveRows: [Int] { (0..<activeCount).map { Int(active[$0]) } }
}
