// A float32 tensor with its own 64-byte-aligned storage.
//
// Tensors are reference types on purpose: activations, gradients and workspaces are allocated once
// when a network is prepared for a batch size and then reused by every step, so a value type with
// copy-on-write would only add uniqueness checks to the hot path.

public final class Tensor {
    public private(set) var shape: [Int]
    /// Number of elements the storage holds; `shape` may describe fewer (see `reshape`).
    public let capacity: Int
    public let data: UnsafeMutablePointer<Float>

    public var count: Int { shape.reduce(1, *) }

    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor shape must be non-negative, got \(shape)")
        self.shape = shape
        self.capacity = shape.reduce(1, *)
        let bytes = max(self.capacity, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        self.data = raw.bindMemory(to: Float.self, capacity: max(self.capacity, 1))
        self.data.initialize(repeating: 0, count: max(self.capacity, 1))
    }

    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == capacity, "Tensor(shape: \(shape)) needs \(capacity) values, got \(values.count)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: capacity) }
    }

    deinit { UnsafeMutableRawPointer(data).deallocate() }

    /// Reinterprets the storage with a new shape of at most `capacity` elements (buffers sized for the
    /// largest batch serve smaller ones).
    public func reshape(_ newShape: [Int]) {
        let n = newShape.reduce(1, *)
        precondition(n <= capacity, "reshape to \(newShape) needs \(n) elements, storage holds \(capacity)")
        shape = newShape
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy from \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
}
