// Parameters and buffers of a network, registered explicitly under their PyTorch state_dict names.
//
// All trainable values live in one flat arena, and so do their gradients, in registration order.
// That order is the same on every rank (no reflection), so gradient buckets for the all-reduce are
// plain contiguous ranges of the gradient arena and checkpoints list tensors identically everywhere.
import Tensors

/// How a tensor is laid out inside the engine, versus PyTorch's layout in checkpoints.
public enum StorageLayout: Equatable, Sendable {
    /// Same as PyTorch.
    case plain
    /// Convolution weight kept as [kh][kw][Cin][Cout]; PyTorch's is [Cout][Cin][kh][kw].
    case convHWIO(outChannels: Int, inChannels: Int, kernel: Int)
    /// Linear weight over an NHWC-flattened input, [out][h][w][c]; PyTorch flattens NCHW: [out][c][h][w].
    case linearOverHWC(outFeatures: Int, channels: Int, height: Int, width: Int)
}

/// Whether SGD applies weight decay (BatchNorm affine parameters are exempt).
public enum DecayGroup: Sendable { case decayed, notDecayed }

public struct ParameterInfo: Sendable {
    public let name: String
    /// PyTorch shape, as written to checkpoints.
    public let shape: [Int]
    public let offset: Int
    public let count: Int
    public let layout: StorageLayout
    public let group: DecayGroup
}

public struct BufferInfo: Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public let count: Int
}

/// One state_dict entry, in state_dict order.
public enum StateEntry: Sendable {
    case parameter(Int)
    case buffer(Int)
    /// BatchNorm's `num_batches_tracked` (an int64 scalar); the index is into `batchCounters`.
    case counter(Int, name: String)
}

public final class ParameterStore {
    public private(set) var parameters: [ParameterInfo] = []
    public private(set) var buffers: [BufferInfo] = []
    public private(set) var stateOrder: [StateEntry] = []
    public var batchCounters: [Int64] = []
    public private(set) var parameterCount = 0
    public private(set) var bufferCount = 0

    public private(set) var values: UnsafeMutablePointer<Float>
    public private(set) var gradients: UnsafeMutablePointer<Float>
    public private(set) var bufferValues: UnsafeMutablePointer<Float>
    private var finalized = false

    public init() {
        values = .allocate(capacity: 1)
        gradients = .allocate(capacity: 1)
        bufferValues = .allocate(capacity: 1)
    }

    deinit {
        values.deallocate(); gradients.deallocate(); bufferValues.deallocate()
    }

    public func registerParameter(_ name: String, shape: [Int], layout: StorageLayout = .plain,
                                  group: DecayGroup) -> Int {
        precondition(!finalized, "parameter '\(name)' registered after the store was finalized")
        precondition(!parameters.contains { $0.name == name }, "parameter '\(name)' registered twice")
        let count = shape.reduce(1, *)
        // Keep every parameter 64-byte aligned inside the arena.
        let offset = (parameterCount + 15) & ~15
        parameters.append(ParameterInfo(name: name, shape: shape, offset: offset, count: count, layout: layout, group: group))
        parameterCount = offset + count
        stateOrder.append(.parameter(parameters.count - 1))
        return parameters.count - 1
    }

    public func registerBuffer(_ name: String, shape: [Int]) -> Int {
        precondition(!finalized, "buffer '\(name)' registered after the store was finalized")
        let count = shape.reduce(1, *)
        let offset = (bufferCount + 15) & ~15
        buffers.append(BufferInfo(name: name, shape: shape, offset: offset, count: count))
        bufferCount = offset + count
        stateOrder.append(.buffer(buffers.count - 1))
        return buffers.count - 1
    }

    public func registerCounter(_ name: String) -> Int {
        batchCounters.append(0)
        stateOrder.append(.counter(batchCounters.count - 1, name: name))
        return batchCounters.count - 1
    }

    /// Allocates the arenas once all parameters are registered.
    public func finalize() {
        precondition(!finalized, "ParameterStore finalized twice")
        finalized = true
        values.deallocate(); gradients.deallocate(); bufferValues.deallocate()
        values = Self.allocateZeroed(parameterCount)
        gradients = Self.allocateZeroed(parameterCount)
        bufferValues = Self.allocateZeroed(bufferCount)
    }

    private static func allocateZeroed(_ n: Int) -> UnsafeMutablePointer<Float> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1) * 4, alignment: 64)
        let p = raw.bindMemory(to: Float.self, capacity: max(n, 1))
        p.initialize(repeating: 0, count: max(n, 1))
        return p
    }

    @inline(__always) public func value(_ index: Int) -> UnsafeMutablePointer<Float> { values + parameters[index].offset }
    @inline(__always) public func gradient(_ index: Int) -> UnsafeMutablePointer<Float> { gradients + parameters[index].offset }
    @inline(__always) public func buffer(_ index: Int) -> UnsafeMutablePointer<Float> { bufferValues + buffers[index].offset }

    public func parameterIndex(named name: String) -> Int? { parameters.firstIndex { $0.name == name } }

    public func zeroGradients() { gradients.update(repeating: 0, count: max(parameterCount, 1)) }

    /// Trainable scalars (what papers call the parameter count).
    public var trainableScalarCount: Int { parameters.reduce(0) { $0 + $1.count } }
}
