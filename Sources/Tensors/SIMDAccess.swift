// Unaligned SIMD loads and stores over float pointers. Every kernel in this module walks channel
// vectors 16 floats at a time (one AVX-512 register, four SSE ones) with a scalar tail.

public typealias Vec16 = SIMD16<Float>

@inlinable @inline(__always)
public func load16(_ p: UnsafePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inlinable @inline(__always)
public func load16(_ p: UnsafeMutablePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inlinable @inline(__always)
public func store16(_ v: Vec16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec16.self)
}
