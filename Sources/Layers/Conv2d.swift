// A bias-free 2-D convolution (the only kind IResNet has), NHWC, weights in HWIO.
// See `ConvolutionKernels` for why this layout and algorithm.
import Tensors

public final class Conv2d {
    public let geometry: ConvGeometry
    unowned let store: ParameterStore
    public let weightIndex: Int

    public init(_ name: String, geometry: ConvGeometry, store: ParameterStore) {
        self.geometry = geometry
        self.store = store
        let g = geometry
        weightIndex = store.registerParameter(
            name, shape: [g.outChannels, g.inChannels, g.kernel, g.kernel],
            layout: .convHWIO(outChannels: g.outChannels, inChannels: g.inChannels, kernel: g.kernel),
            group: .decayed)
    }

    /// Kaiming-normal, fan_out mode, ReLU gain: std = √(2 / (Cout·k·k)).
    public func resetParameters(_ rng: inout SplitMix64) {
        let g = geometry
        let std = (2.0 / Float(g.outChannels * g.kernel * g.kernel)).squareRoot()
        let w = store.value(weightIndex)
        for i in 0..<(g.patchSize * g.outChannels) { w[i] = rng.nextNormal() * std }
    }

    /// `inputTransform` and `epilogue` fold a BatchNorm (and PReLU) before or after the convolution
    /// into it (see `ConvolutionKernels.forward`).
    public func forward(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, workspace: Tensor,
                        inputTransform: ChannelAffine? = nil, epilogue: ChannelAffine? = nil) {
        ConvolutionKernels.forward(input: x, weight: store.value(weightIndex), output: y, batch: batch,
                                   geometry: geometry, workspace: workspace.data, workspaceFloats: workspace.capacity,
                                   inputTransform: inputTransform, epilogue: epilogue)
    }

    public func backward(input x: UnsafePointer<Float>, gradOutput dy: UnsafePointer<Float>, batch: Int,
                         gradInput dx: UnsafeMutablePointer<Float>?, accumulate: Bool, workspace: Tensor,
                         inputTransform: ChannelAffine? = nil) {
        ConvolutionKernels.backward(input: x, weight: store.value(weightIndex), gradOutput: dy,
                                    gradWeight: store.gradient(weightIndex), gradInput: dx, accumulateInput: accumulate,
                                    batch: batch, geometry: geometry, workspace: workspace.data,
                                    workspaceFloats: workspace.capacity, inputTransform: inputTransform)
    }
}

/// Per-channel PReLU slopes. The activation itself is fused into the preceding BatchNorm pass.
public final class PReLU {
    public let channels: Int
    unowned let store: ParameterStore
    public let slopeIndex: Int

    public init(_ name: String, channels: Int, store: ParameterStore) {
        self.channels = channels
        self.store = store
        slopeIndex = store.registerParameter(name, shape: [channels], group: .decayed)
    }

    public func resetParameters() { store.value(slopeIndex).update(repeating: 0.25, count: channels) }
    public var slope: UnsafeMutablePointer<Float> { store.value(slopeIndex) }
    public var slopeGradient: UnsafeMutablePointer<Float> { store.gradient(slopeIndex) }
}

/// A fully connected layer with bias: y = x·Wᵀ + b over [batch × in] rows.
public final class Linear {
    public let inFeatures: Int, outFeatures: Int
    unowned let store: ParameterStore
    public let weightIndex: Int, biasIndex: Int

    /// `inputLayout` says how the input features are ordered: an NHWC flatten of (c, h, w) keeps the
    /// weight in HWC column order inside the engine and converts to PyTorch's CHW order on export.
    public init(_ prefix: String, inFeatures: Int, outFeatures: Int, flattenedFrom hwc: (c: Int, h: Int, w: Int)? = nil,
                store: ParameterStore) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.store = store
        let layout: StorageLayout = hwc.map {
            .linearOverHWC(outFeatures: outFeatures, channels: $0.c, height: $0.h, width: $0.w)
        } ?? .plain
        weightIndex = store.registerParameter(prefix + ".weight", shape: [outFeatures, inFeatures], layout: layout, group: .decayed)
        biasIndex = store.registerParameter(prefix + ".bias", shape: [outFeatures], group: .decayed)
    }

    /// Kaiming-normal (fan_out, ReLU gain), zero bias.
    public func resetParameters(_ rng: inout SplitMix64) {
        let std = (2.0 / Float(outFeatures)).squareRoot()
        let w = store.value(weightIndex)
        for i in 0..<(inFeatures * outFeatures) { w[i] = rng.nextNormal() * std }
        store.value(biasIndex).update(repeating: 0, count: outFeatures)
    }

    public func forward(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>) {
        let bias = store.value(biasIndex)
        for r in 0..<batch { (y + r * outFeatures).update(from: bias, count: outFeatures) }
        BLAS.gemm(transB: true, m: batch, n: outFeatures, k: inFeatures, a: x, b: store.value(weightIndex), beta: 1, c: y)
    }

    public func backward(input x: UnsafePointer<Float>, gradOutput dy: UnsafePointer<Float>, batch: Int,
                         gradInput dx: UnsafeMutablePointer<Float>?) {
        BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: batch, a: dy, b: x, c: store.gradient(weightIndex))
        let db = store.gradient(biasIndex)
        for j in 0..<outFeatures {
            var s: Float = 0
            for r in 0..<batch { s += dy[r * outFeatures + j] }
            db[j] = s
        }
        if let dx {
            BLAS.gemm(m: batch, n: inFeatures, k: outFeatures, a: dy, b: store.value(weightIndex), c: dx)
        }
    }
}
