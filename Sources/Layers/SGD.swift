// SGD with momentum and two weight-decay groups over a ParameterStore: BatchNorm affine parameters
// without decay, everything else with it. The learning rate is given per step (schedules live in
// the trainer).
import Tensors

public final class SGD {
    public let momentum: Float
    public let weightDecay: Float
    unowned let store: ParameterStore
    /// Momentum buffers, laid out like the parameter arena (checkpointed with the backbone).
    public let velocity: Tensor
    /// Contiguous arena ranges sharing one decay setting, merged so the update runs in few passes.
    public let segments: [(range: Range<Int>, decay: Bool)]

    public init(store: ParameterStore, momentum: Float = 0.9, weightDecay: Float = 5e-4) {
        self.store = store
        self.momentum = momentum
        self.weightDecay = weightDecay
        velocity = Tensor(shape: [max(store.parameterCount, 1)])
        var segments: [(range: Range<Int>, decay: Bool)] = []
        for p in store.parameters {
            let decay = p.group == .decayed
            let r = p.offset..<(p.offset + p.count)
            if let last = segments.last, last.decay == decay, last.range.upperBound <= r.lowerBound,
               r.lowerBound - last.range.upperBound < 16 {
                segments[segments.count - 1].range = last.range.lowerBound..<r.upperBound
            } else {
                segments.append((r, decay))
            }
        }
        self.segments = segments
    }

    public func step(learningRate: Float) {
        for segment in segments {
            let offset = segment.range.lowerBound
            OptimizerKernels.sgdMomentum(weights: store.values + offset, gradients: store.gradients + offset,
                                         velocity: velocity.data + offset, count: segment.range.count,
                                         learningRate: learningRate, momentum: momentum,
                                         weightDecay: segment.decay ? weightDecay : 0)
        }
    }
}
