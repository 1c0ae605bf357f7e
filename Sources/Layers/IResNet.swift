// IResNet (IR-18/34/50/100), as in the official AdaFace code: 112×112 BGR input, BasicBlockIR units,
// a BN–Dropout–Linear–BN1d output layer, and a forward pass that returns the unit embedding and its
// norm. Activations are NHWC, allocated once by `prepare(batchCapacity:)` and reused every step.
import Tensors

public enum IResNetArchitecture: String, CaseIterable, Sendable {
    case ir18, ir34, ir50, ir100

    /// Accepts the names people use: "ir50", "IR-50", "ir_50", "ir101" (an alias of IR-100).
    public init?(name: String) {
        let key = name.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "_", with: "")
        switch key {
        case "ir18": self = .ir18
        case "ir34": self = .ir34
        case "ir50": self = .ir50
        case "ir100", "ir101": self = .ir100
        default: return nil
        }
    }

    public var unitsPerStage: [Int] {
        switch self {
        case .ir18: return [2, 2, 2, 2]
        case .ir34: return [3, 4, 6, 3]
        case .ir50: return [3, 4, 14, 3]
        case .ir100: return [3, 13, 30, 3]
        }
    }
}

/// Shapes of a network instance; tests use small ones, training uses the standard one.
public struct IResNetConfiguration: Sendable {
    public var unitsPerStage: [Int]
    public var stageWidths: [Int]
    public var inputSize: Int
    public var embeddingSize: Int
    public var dropout: Float

    public init(unitsPerStage: [Int], stageWidths: [Int] = [64, 128, 256, 512], inputSize: Int = 112,
                embeddingSize: Int = 512, dropout: Float = 0.4) {
        precondition(unitsPerStage.count == stageWidths.count && unitsPerStage.allSatisfy { $0 >= 1 },
                     "every stage needs at least one unit")
        precondition(inputSize % (1 << stageWidths.count) == 0,
                     "input size \(inputSize) must be divisible by 2^\(stageWidths.count)")
        self.unitsPerStage = unitsPerStage; self.stageWidths = stageWidths
        self.inputSize = inputSize; self.embeddingSize = embeddingSize; self.dropout = dropout
    }

    public init(_ architecture: IResNetArchitecture) { self.init(unitsPerStage: architecture.unitsPerStage) }

    public var finalSize: Int { inputSize >> stageWidths.count }
}

public final class IResNet {
    public let configuration: IResNetConfiguration
    public let store = ParameterStore()

    let inputConv: Conv2d
    let inputBN: BatchNorm
    let inputPReLU: PReLU
    let units: [ResidualUnit]
    let outputBN: BatchNorm
    let linear: Linear
    let embeddingBN: BatchNorm

    public private(set) var batchCapacity = 0
    /// The caller writes a batch here, NHWC [batch × size × size × 3], BGR, normalised.
    public private(set) var input = Tensor(shape: [0])
    /// Results of the last forward pass: unit embeddings [batch × D] and their norms [batch].
    public private(set) var embeddings = Tensor(shape: [0])
    public private(set) var norms = Tensor(shape: [0])

    private var inputConvOut = Tensor(shape: [0]), inputActivation = Tensor(shape: [0])
    private var droppedFeatures = Tensor(shape: [0]), linearOut = Tensor(shape: [0]), features = Tensor(shape: [0])
    private var gradA = Tensor(shape: [0]), gradB = Tensor(shape: [0])
    private var scratchA = Tensor(shape: [0]), scratchB = Tensor(shape: [0])
    private var workspace = Tensor(shape: [0])
    private var lastBatch = 0
    private var lastTraining = false
    private var lastDropoutSeed: UInt64 = 0

    /// Called during `backward` with an arena offset: every parameter gradient at or above it is
    /// final. Backward runs from the output layer to the input, so the offsets only decrease; the
    /// data-parallel trainer starts all-reducing gradient buckets from here while backward goes on.
    public var gradientsReady: ((Int) -> Void)?

    /// Seed of the dropout mask of the next training forward pass; the trainer sets it per step
    /// (from the run seed and the step) so that a resumed run draws the same masks.
    public var dropoutSeed: UInt64 = 0x5EED

    public convenience init(_ architecture: IResNetArchitecture) {
        self.init(configuration: IResNetConfiguration(architecture))
    }

    public init(configuration: IResNetConfiguration) {
        self.configuration = configuration
        let s = store
        let width0 = configuration.stageWidths[0]
        let size = configuration.inputSize
        inputConv = Conv2d("input_layer.0.weight", geometry: ConvGeometry(
            inHeight: size, inWidth: size, inChannels: 3, outChannels: width0, kernel: 3, stride: 1, padding: 1), store: s)
        inputBN = BatchNorm("input_layer.1", channels: width0, store: s)
        inputPReLU = PReLU("input_layer.2.weight", channels: width0, store: s)
        var units: [ResidualUnit] = []
        var inChannels = width0, spatial = size
        for (stage, count) in configuration.unitsPerStage.enumerated() {
            let depth = configuration.stageWidths[stage]
            for u in 0..<count {
                let stride = u == 0 ? 2 : 1
                units.append(ResidualUnit("body.\(units.count)", inChannels: inChannels, outChannels: depth,
                                          stride: stride, inSize: spatial, store: s))
                if stride == 2 { spatial /= 2 }
                inChannels = depth
            }
        }
        self.units = units
        let last = configuration.stageWidths.last!, fin = configuration.finalSize
        outputBN = BatchNorm("output_layer.0", channels: last, store: s)
        linear = Linear("output_layer.3", inFeatures: last * fin * fin, outFeatures: configuration.embeddingSize,
                        flattenedFrom: (c: last, h: fin, w: fin), store: s)
        embeddingBN = BatchNorm("output_layer.4", channels: configuration.embeddingSize, affine: false, store: s)
        s.finalize()
        var rng = SplitMix64(seed: 0)
        resetParameters(&rng)
    }

    /// Kaiming-normal (fan_out, ReLU gain) convolution and linear weights, zero biases, BatchNorm 1/0,
    /// PReLU 0.25 — the official initialisation.
    public func resetParameters(_ rng: inout SplitMix64) {
        inputConv.resetParameters(&rng); inputBN.resetParameters(); inputPReLU.resetParameters()
        for unit in units { unit.resetParameters(&rng) }
        outputBN.resetParameters(); linear.resetParameters(&rng); embeddingBN.resetParameters()
    }

    /// Freezes every BatchNorm (see `BatchNorm.frozen`): training passes then use and keep the
    /// running statistics.
    public var frozenBatchNorm = false {
        didSet { for bn in batchNorms { bn.frozen = frozenBatchNorm } }
    }

    public var batchNorms: [BatchNorm] {
        [inputBN] + units.flatMap { $0.batchNorms } + [outputBN, embeddingBN]
    }

    /// Forward multiply-adds per image (convolutions and the linear layer).
    public var macsPerImage: Int {
        inputConv.geometry.macsPerImage + units.reduce(0) { $0 + $1.macsPerImage } + linear.inFeatures * linear.outFeatures
    }

    /// Allocates activations, gradients and workspace for batches of up to `batchCapacity` images.
    public func prepare(batchCapacity b: Int) {
        precondition(b >= 1, "batch capacity must be positive")
        if b == batchCapacity { return }
        batchCapacity = b
        let size = configuration.inputSize, w0 = configuration.stageWidths[0]
        input = Tensor(shape: [b, size, size, 3])
        inputConvOut = Tensor(shape: [b, size, size, w0])
        inputActivation = Tensor(shape: [b, size, size, w0])
        for unit in units { unit.prepare(batchCapacity: b) }
        let flat = linear.inFeatures, d = configuration.embeddingSize
        droppedFeatures = Tensor(shape: [b, flat])
        linearOut = Tensor(shape: [b, d]); features = Tensor(shape: [b, d])
        embeddings = Tensor(shape: [b, d]); norms = Tensor(shape: [b])
        // Gradient and scratch buffers are shared by all layers: the largest activation bounds them.
        let largest = max(units.map { $0.largestActivation(batch: b) }.max()!, b * size * size * w0, b * flat)
        gradA = Tensor(shape: [largest]); gradB = Tensor(shape: [largest])
        scratchA = Tensor(shape: [largest]); scratchB = Tensor(shape: [largest])
        let convs = [inputConv] + units.flatMap { $0.convolutions }
        workspace = Tensor(shape: [convs.map { ConvolutionKernels.workspaceFloats($0.geometry, batch: b) }.max()!])
    }

    /// Bytes held by activations, gradients and workspace.
    public var activationBytes: Int {
        let own = [input, inputConvOut, inputActivation, droppedFeatures, linearOut, features, embeddings, norms,
                   gradA, gradB, scratchA, scratchB, workspace].reduce(0) { $0 + $1.capacity }
        return 4 * (own + units.reduce(0) { $0 + $1.activationFloats })
    }

    /// Runs the batch in `input`; results land in `embeddings` and `norms`.
    public func forward(batch: Int, training: Bool) {
        precondition(batch >= 1 && batch <= batchCapacity, "batch \(batch) outside the prepared capacity \(batchCapacity)")
        let size = configuration.inputSize
        if training {
            inputConv.forward(input.data, batch: batch, into: inputConvOut.data, workspace: workspace)
            inputBN.prepare(inputConvOut.data, rows: batch * size * size, training: true)
            inputBN.apply(inputConvOut.data, rows: batch * size * size, preluSlope: inputPReLU.slope, into: inputActivation.data)
        } else {
            inputBN.prepare(input.data, rows: 0, training: false)
            inputConv.forward(input.data, batch: batch, into: inputActivation.data, workspace: workspace,
                              epilogue: inputBN.folded(preluSlope: inputPReLU.slope))
        }
        var x = UnsafePointer(inputActivation.data)
        for unit in units {
            unit.forward(x, batch: batch, training: training, workspace: workspace)
            x = UnsafePointer(unit.output.data)
        }
        let fin = configuration.finalSize
        let rows = batch * fin * fin
        outputBN.prepare(x, rows: rows, training: training)
        outputBN.apply(x, rows: rows, into: droppedFeatures.data)
        lastDropoutSeed = dropoutSeed
        if training && configuration.dropout > 0 {
            ElementwiseKernels.dropout(droppedFeatures.data, count: batch * linear.inFeatures,
                                       probability: configuration.dropout, seed: lastDropoutSeed, into: droppedFeatures.data)
        }
        linear.forward(droppedFeatures.data, batch: batch, into: linearOut.data)
        embeddingBN.prepare(linearOut.data, rows: batch, training: training)
        embeddingBN.apply(linearOut.data, rows: batch, into: features.data)
        ElementwiseKernels.normalizeRows(features.data, rows: batch, columns: configuration.embeddingSize,
                                         unit: embeddings.data, norms: norms.data)
        lastBatch = batch
        lastTraining = training
    }

    /// Backward of the last training-mode forward, from the gradient of the unit embeddings
    /// ([batch × D]). Parameter gradients are overwritten in `store.gradients`.
    public func backward(gradEmbeddings: UnsafePointer<Float>) {
        precondition(lastTraining, "backward needs a training-mode forward pass")
        let batch = lastBatch, d = configuration.embeddingSize, size = configuration.inputSize
        let fin = configuration.finalSize
        // Through e = x/‖x‖, then the non-affine BatchNorm1d (in place), then the linear layer.
        ElementwiseKernels.normalizeRowsBackward(unit: embeddings.data, norms: norms.data, gradUnit: gradEmbeddings,
                                                 rows: batch, columns: d, into: scratchB.data)
        embeddingBN.backward(gradOutput: scratchB.data, input: linearOut.data, rows: batch,
                             gradInput: scratchB.data, accumulate: false)
        linear.backward(input: droppedFeatures.data, gradOutput: scratchB.data, batch: batch, gradInput: gradA.data)
        if configuration.dropout > 0 {
            // The dropout mask is recomputed from its seed; scaling the gradient is the same map.
            ElementwiseKernels.dropout(gradA.data, count: batch * linear.inFeatures, probability: configuration.dropout,
                                       seed: lastDropoutSeed, into: gradA.data)
        }
        let lastOut = units.last!.output.data
        outputBN.backward(gradOutput: gradA.data, input: lastOut, rows: batch * fin * fin,
                          gradInput: gradB.data, accumulate: false)
        gradientsReady?(outputLayerOffset)
        var gradOut = gradB, gradIn = gradA
        for (i, unit) in units.enumerated().reversed() {
            let x = i == 0 ? inputActivation.data : units[i - 1].output.data
            unit.backward(input: x, gradOutput: gradOut.data, gradInput: gradIn.data, batch: batch,
                          scratchA: scratchA.data, scratchB: scratchB.data, workspace: workspace)
            swap(&gradOut, &gradIn)
            gradientsReady?(unitOffsets[i])
        }
        // Input layer: fused PReLU+BN backward in place, then the convolution's weight gradient only.
        let rows = batch * size * size
        ChannelKernels.preluBackwardInPlace(grad: gradOut.data, x: inputConvOut.data, scale: inputBN.scale.data,
                                            shift: inputBN.shift.data, slope: inputPReLU.slope, rows: rows,
                                            channels: inputPReLU.channels, slopeGrad: inputPReLU.slopeGradient)
        inputBN.backward(gradOutput: gradOut.data, input: inputConvOut.data, rows: rows, gradInput: gradOut.data, accumulate: false)
        inputConv.backward(input: input.data, gradOutput: gradOut.data, batch: batch, gradInput: nil,
                           accumulate: false, workspace: workspace)
        gradientsReady?(0)
    }

    /// Arena offset of each unit's first parameter, and of the output layer's.
    private lazy var unitOffsets: [Int] = units.map { unit in
        unit.parameterIndices.map { store.parameters[$0].offset }.min()!
    }
    private lazy var outputLayerOffset: Int = [outputBN.weightIndex!, linear.weightIndex]
        .map { store.parameters[$0].offset }.min()!
}
