// BasicBlockIR: residual = BN → Conv3×3 → BN → PReLU → Conv3×3(stride s) → BN; shortcut = MaxPool(1, s)
// when the width is unchanged, else Conv1×1(stride s) → BN; output = residual + shortcut.
//
// Saved for backward: c1 (conv1 output), p (PReLU output), c2 (conv2 output), the shortcut
// convolution's output and the unit output. The first BN is folded into conv1's im2col (its output
// is never stored). In evaluation the other BatchNorms and the PReLU are folded into the
// convolutions' output chunks too, so a unit is three convolutions and one residual add.
import Tensors

public final class ResidualUnit {
    public let inChannels: Int, outChannels: Int, stride: Int, inSize: Int, outSize: Int
    let bn1: BatchNorm, conv1: Conv2d, bn2: BatchNorm, prelu: PReLU, conv2: Conv2d, bn3: BatchNorm
    let shortcutConv: Conv2d?, shortcutBN: BatchNorm?

    private(set) var conv1Out = Tensor(shape: [0]), activated = Tensor(shape: [0]), conv2Out = Tensor(shape: [0])
    private(set) var shortcutOut = Tensor(shape: [0])
    public private(set) var output = Tensor(shape: [0])

    public init(_ prefix: String, inChannels: Int, outChannels: Int, stride: Int, inSize: Int, store: ParameterStore) {
        self.inChannels = inChannels; self.outChannels = outChannels; self.stride = stride
        self.inSize = inSize; self.outSize = (inSize - 1) / stride + 1
        // Registration follows the official module order: shortcut_layer is created before res_layer.
        if inChannels == outChannels {
            shortcutConv = nil; shortcutBN = nil
        } else {
            shortcutConv = Conv2d(prefix + ".shortcut_layer.0.weight", geometry: ConvGeometry(
                inHeight: inSize, inWidth: inSize, inChannels: inChannels, outChannels: outChannels,
                kernel: 1, stride: stride, padding: 0), store: store)
            shortcutBN = BatchNorm(prefix + ".shortcut_layer.1", channels: outChannels, store: store)
        }
        let r = prefix + ".res_layer."
        bn1 = BatchNorm(r + "0", channels: inChannels, store: store)
        conv1 = Conv2d(r + "1.weight", geometry: ConvGeometry(
            inHeight: inSize, inWidth: inSize, inChannels: inChannels, outChannels: outChannels,
            kernel: 3, stride: 1, padding: 1), store: store)
        bn2 = BatchNorm(r + "2", channels: outChannels, store: store)
        prelu = PReLU(r + "3.weight", channels: outChannels, store: store)
        conv2 = Conv2d(r + "4.weight", geometry: ConvGeometry(
            inHeight: inSize, inWidth: inSize, inChannels: outChannels, outChannels: outChannels,
            kernel: 3, stride: stride, padding: 1), store: store)
        bn3 = BatchNorm(r + "5", channels: outChannels, store: store)
    }

    /// Indices of this unit's parameters in the store.
    var parameterIndices: [Int] {
        convolutions.map(\.weightIndex) + batchNorms.flatMap { [$0.weightIndex, $0.biasIndex].compactMap { $0 } }
            + [prelu.slopeIndex]
    }

    var batchNorms: [BatchNorm] { [bn1, bn2, bn3] + (shortcutBN.map { [$0] } ?? []) }
    var convolutions: [Conv2d] { [conv1, conv2] + (shortcutConv.map { [$0] } ?? []) }
    var macsPerImage: Int { convolutions.reduce(0) { $0 + $1.geometry.macsPerImage } }

    public func resetParameters(_ rng: inout SplitMix64) {
        shortcutConv?.resetParameters(&rng); shortcutBN?.resetParameters()
        bn1.resetParameters(); conv1.resetParameters(&rng); bn2.resetParameters(); prelu.resetParameters()
        conv2.resetParameters(&rng); bn3.resetParameters()
    }

    public func largestActivation(batch b: Int) -> Int {
        b * inSize * inSize * max(inChannels, outChannels)
    }

    var activationFloats: Int {
        [conv1Out, activated, conv2Out, shortcutOut, output].reduce(0) { $0 + $1.capacity }
    }

    public func prepare(batchCapacity b: Int) {
        conv1Out = Tensor(shape: [b, inSize, inSize, outChannels])
        activated = Tensor(shape: [b, inSize, inSize, outChannels])
        conv2Out = Tensor(shape: [b, outSize, outSize, outChannels])
        shortcutOut = Tensor(shape: shortcutConv == nil ? [0] : [b, outSize, outSize, outChannels])
        output = Tensor(shape: [b, outSize, outSize, outChannels])
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, training: Bool, workspace: Tensor) {
        let inRows = batch * inSize * inSize, outRows = batch * outSize * outSize
        bn1.prepare(x, rows: inRows, training: training)
        if !training {
            forwardFolded(x, batch: batch, workspace: workspace)
            return
        }
        conv1.forward(x, batch: batch, into: conv1Out.data, workspace: workspace, inputTransform: bn1.folded())
        bn2.prepare(conv1Out.data, rows: inRows, training: training)
        bn2.apply(conv1Out.data, rows: inRows, preluSlope: prelu.slope, into: activated.data)
        conv2.forward(activated.data, batch: batch, into: conv2Out.data, workspace: workspace)
        bn3.prepare(conv2Out.data, rows: outRows, training: training)
        if let shortcutConv, let shortcutBN {
            shortcutConv.forward(x, batch: batch, into: shortcutOut.data, workspace: workspace)
            shortcutBN.prepare(shortcutOut.data, rows: outRows, training: training)
            KernelProfiler.measure("bn+bn residual add") {
                ChannelKernels.scaleShiftAdd(conv2Out.data, scale1: bn3.scale.data, shift1: bn3.shift.data,
                                             shortcutOut.data, scale2: shortcutBN.scale.data, shift2: shortcutBN.shift.data,
                                             rows: outRows, channels: outChannels, into: output.data)
            }
        } else {
            bn3.apply(conv2Out.data, rows: outRows, into: output.data)
            KernelProfiler.measure("subsampled residual add") {
                ElementwiseKernels.addSubsampled(x, batch: batch, height: inSize, width: inSize, channels: inChannels,
                                                 stride: stride, into: output.data)
            }
        }
    }

    /// Evaluation with running statistics: BN1 folded into conv1's input, BN2+PReLU into its output,
    /// BN3 (and the shortcut BN) into conv2's (and the shortcut convolution's) output.
    private func forwardFolded(_ x: UnsafePointer<Float>, batch: Int, workspace: Tensor) {
        bn2.prepare(x, rows: 0, training: false)
        bn3.prepare(x, rows: 0, training: false)
        shortcutBN?.prepare(x, rows: 0, training: false)
        conv1.forward(x, batch: batch, into: activated.data, workspace: workspace,
                      inputTransform: bn1.folded(), epilogue: bn2.folded(preluSlope: prelu.slope))
        conv2.forward(activated.data, batch: batch, into: output.data, workspace: workspace, epilogue: bn3.folded())
        let outCount = batch * outSize * outSize * outChannels
        if let shortcutConv, let shortcutBN {
            shortcutConv.forward(x, batch: batch, into: shortcutOut.data, workspace: workspace, epilogue: shortcutBN.folded())
            KernelProfiler.measure("residual add") { ElementwiseKernels.add(shortcutOut.data, count: outCount, into: output.data) }
        } else {
            KernelProfiler.measure("subsampled residual add") {
                ElementwiseKernels.addSubsampled(x, batch: batch, height: inSize, width: inSize, channels: inChannels,
                                                 stride: stride, into: output.data)
            }
        }
    }

    /// dx = ∂L/∂x from g = ∂L/∂output. `gradOutput` is consumed (reused as scratch); `scratchA` and
    /// `scratchB` are free buffers of the largest activation size.
    public func backward(input x: UnsafePointer<Float>, gradOutput g: UnsafeMutablePointer<Float>,
                  gradInput dx: UnsafeMutablePointer<Float>, batch: Int,
                  scratchA: UnsafeMutablePointer<Float>, scratchB: UnsafeMutablePointer<Float>, workspace: Tensor) {
        let inRows = batch * inSize * inSize, outRows = batch * outSize * outSize
        // Shortcut branch writes dx first; the residual branch adds to it at the end.
        if let shortcutConv, let shortcutBN {
            shortcutBN.backward(gradOutput: g, input: shortcutOut.data, rows: outRows, gradInput: scratchA, accumulate: false)
            shortcutConv.backward(input: x, gradOutput: scratchA, batch: batch, gradInput: dx, accumulate: false,
                                  workspace: workspace)
        } else {
            KernelProfiler.measure("subsampled residual scatter") {
                ElementwiseKernels.scatterSubsampled(g, batch: batch, height: inSize, width: inSize, channels: inChannels,
                                                     stride: stride, into: dx)
            }
        }
        bn3.backward(gradOutput: g, input: conv2Out.data, rows: outRows, gradInput: scratchA, accumulate: false)
        conv2.backward(input: activated.data, gradOutput: scratchA, batch: batch, gradInput: scratchB,
                       accumulate: false, workspace: workspace)
        KernelProfiler.measure("prelu backward") {
            ChannelKernels.preluBackwardInPlace(grad: scratchB, x: conv1Out.data, scale: bn2.scale.data,
                                                shift: bn2.shift.data, slope: prelu.slope, rows: inRows,
                                                channels: outChannels, slopeGrad: prelu.slopeGradient)
        }
        bn2.backward(gradOutput: scratchB, input: conv1Out.data, rows: inRows, gradInput: scratchB, accumulate: false)
        conv1.backward(input: x, gradOutput: scratchB, batch: batch, gradInput: scratchA, accumulate: false,
                       workspace: workspace, inputTransform: bn1.folded())
        bn1.backward(gradOutput: scratchA, input: x, rows: inRows, gradInput: dx, accumulate: true)
    }
}
