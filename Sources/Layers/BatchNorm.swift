// BatchNorm over the channel axis of [rows × channels] activations (BatchNorm2d on NHWC, BatchNorm1d
// on [batch × features]), PyTorch semantics: eps 1e-5, momentum 0.1, biased variance to normalise,
// unbiased variance into running_var, optional affine parameters.
//
// The layer never applies itself: `prepare` turns the statistics into a per-channel scale and shift,
// and callers fuse that into one pass with whatever follows (PReLU, the residual add).
import Tensors

public final class BatchNorm {
    public let channels: Int
    public let affine: Bool
    public let epsilon: Float = 1e-5
    public let momentum: Float = 0.1
    unowned let store: ParameterStore
    public let weightIndex: Int?
    public let biasIndex: Int?
    let runningMeanIndex: Int
    let runningVarIndex: Int
    let counterIndex: Int

    /// Per-channel scale and shift of the last `prepare` (y = x·scale + shift).
    public let scale: Tensor
    public let shift: Tensor
    /// Batch statistics of the last training-mode `prepare`, kept for the backward pass.
    let batchMean: Tensor
    let batchInvStd: Tensor
    let batchVariance: Tensor
    // Backward coefficients and reduction outputs.
    let coefA: Tensor, coefB: Tensor, coefC: Tensor
    let sums: UnsafeMutablePointer<Double>
    private var lastRows = 0
    private var preparedForTraining = false
    /// Frozen: training passes normalise with the running statistics (and leave them alone), and
    /// backward treats the layer as the fixed affine map it then is. Makes every sample's output
    /// independent of the rest of its batch (fine-tuning, and tests that compare batch splits).
    public var frozen = false

    public init(_ prefix: String, channels: Int, affine: Bool = true, store: ParameterStore) {
        self.channels = channels
        self.affine = affine
        self.store = store
        if affine {
            weightIndex = store.registerParameter(prefix + ".weight", shape: [channels], group: .notDecayed)
            biasIndex = store.registerParameter(prefix + ".bias", shape: [channels], group: .notDecayed)
        } else {
            weightIndex = nil
            biasIndex = nil
        }
        runningMeanIndex = store.registerBuffer(prefix + ".running_mean", shape: [channels])
        runningVarIndex = store.registerBuffer(prefix + ".running_var", shape: [channels])
        counterIndex = store.registerCounter(prefix + ".num_batches_tracked")
        scale = Tensor(shape: [channels]); shift = Tensor(shape: [channels])
        batchMean = Tensor(shape: [channels]); batchInvStd = Tensor(shape: [channels]); batchVariance = Tensor(shape: [channels])
        coefA = Tensor(shape: [channels]); coefB = Tensor(shape: [channels]); coefC = Tensor(shape: [channels])
        sums = .allocate(capacity: 2 * channels)
    }

    deinit { sums.deallocate() }

    /// Default initialisation: weight 1, bias 0, running mean 0, running variance 1.
    public func resetParameters() {
        if let w = weightIndex { store.value(w).update(repeating: 1, count: channels) }
        if let b = biasIndex { store.value(b).update(repeating: 0, count: channels) }
        store.buffer(runningMeanIndex).update(repeating: 0, count: channels)
        store.buffer(runningVarIndex).update(repeating: 1, count: channels)
        store.batchCounters[counterIndex] = 0
    }

    public var runningMean: UnsafeMutablePointer<Float> { store.buffer(runningMeanIndex) }
    public var runningVariance: UnsafeMutablePointer<Float> { store.buffer(runningVarIndex) }

    /// Computes `scale` and `shift` for this batch: from batch statistics in training (updating the
    /// running statistics), from the running statistics in evaluation.
    public func prepare(_ x: UnsafePointer<Float>, rows: Int, training: Bool) {
        KernelProfiler.measure("bn statistics") { prepareUnmeasured(x, rows: rows, training: training) }
    }

    private func prepareUnmeasured(_ x: UnsafePointer<Float>, rows: Int, training: Bool) {
        let mean = batchMean.data, invStd = batchInvStd.data, variance = batchVariance.data
        let gamma = weightIndex.map { UnsafePointer(store.value($0)) }
        let beta = biasIndex.map { UnsafePointer(store.value($0)) }
        if training && !frozen {
            precondition(rows > 1, "BatchNorm in training mode needs more than one value per channel, got \(rows) rows")
            ChannelKernels.meanVariance(x, rows: rows, channels: channels, mean: mean, variance: variance, scratch: sums)
            let rm = runningMean, rv = runningVariance
            let unbias = Float(rows) / Float(rows - 1)
            for c in 0..<channels {
                invStd[c] = 1 / (variance[c] + epsilon).squareRoot()
                rm[c] = (1 - momentum) * rm[c] + momentum * mean[c]
                rv[c] = (1 - momentum) * rv[c] + momentum * variance[c] * unbias
            }
            store.batchCounters[counterIndex] += 1
        } else {
            let rm = runningMean, rv = runningVariance
            for c in 0..<channels {
                mean[c] = rm[c]
                invStd[c] = 1 / (rv[c] + epsilon).squareRoot()
            }
        }
        for c in 0..<channels {
            let g = gamma?[c] ?? 1, b = beta?[c] ?? 0
            scale.data[c] = g * invStd[c]
            shift.data[c] = b - mean[c] * g * invStd[c]
        }
        lastRows = rows
        preparedForTraining = training
    }

    /// This BatchNorm (after `prepare`), optionally with a PReLU, as a transform a convolution can fold.
    public func folded(preluSlope: UnsafePointer<Float>? = nil) -> ChannelAffine {
        ChannelAffine(scale: scale.data, shift: shift.data, preluSlope: preluSlope)
    }

    /// y = BN(x) as one pass, with an optional PReLU slope fused in.
    public func apply(_ x: UnsafePointer<Float>, rows: Int, preluSlope: UnsafePointer<Float>? = nil,
                      into y: UnsafeMutablePointer<Float>) {
        KernelProfiler.measure(preluSlope == nil ? "bn apply" : "bn+prelu apply") {
            ChannelKernels.scaleShift(x, rows: rows, channels: channels, scale: scale.data, shift: shift.data,
                                      preluSlope: preluSlope, into: y)
        }
    }

    /// Backward of a training-mode BatchNorm: from dy (the gradient of its output) and x (its input),
    /// writes the parameter gradients and dx (added to `dx` when `accumulate`). `dy` and `dx` may alias.
    public func backward(gradOutput dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, rows: Int,
                         gradInput dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        KernelProfiler.measure("bn backward") {
            backwardUnmeasured(gradOutput: dy, input: x, rows: rows, gradInput: dx, accumulate: accumulate)
        }
    }

    private func backwardUnmeasured(gradOutput dy: UnsafePointer<Float>, input x: UnsafePointer<Float>, rows: Int,
                                    gradInput dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        precondition(preparedForTraining && rows == lastRows,
                     "BatchNorm.backward needs the training-mode prepare of the same batch")
        let sumDy = sums, sumDyXc = sums + channels
        ChannelKernels.gradientSums(dy: dy, x: x, shift: batchMean.data, rows: rows, channels: channels,
                                    sumDy: sumDy, sumDyX: sumDyXc)
        let n = Float(rows)
        let mean = batchMean.data, invStd = batchInvStd.data
        let gamma = weightIndex.map { UnsafePointer(store.value($0)) }
        let dGamma = weightIndex.map { store.gradient($0) }
        let dBeta = biasIndex.map { store.gradient($0) }
        for c in 0..<channels {
            let dBetaC = Float(sumDy[c])
            let dGammaC = Float(sumDyXc[c]) * invStd[c]   // Σ dy·x̂
            dGamma?[c] = dGammaC
            dBeta?[c] = dBetaC
            let a = (gamma?[c] ?? 1) * invStd[c]
            if frozen {
                // Fixed statistics: dx = γ·invstd·dy.
                coefA.data[c] = a; coefB.data[c] = 0; coefC.data[c] = 0
                continue
            }
            // dx = γ·invstd·(dy − Σdy/n − x̂·Σ(dy·x̂)/n), rewritten as a·dy + b·x + c.
            let b = -a * invStd[c] * dGammaC / n
            coefA.data[c] = a
            coefB.data[c] = b
            coefC.data[c] = -a * dBetaC / n - b * mean[c]
        }
        ChannelKernels.affineCombination(dy: dy, x: x, a: coefA.data, b: coefB.data, c: coefC.data,
                                         rows: rows, channels: channels, into: dx, accumulate: accumulate)
    }
}
