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

/// Lane-wise min(max(v, lower), upper). The standard library's `clamped` on SIMD types goes lane by
/// lane through memory (it keeps scalar NaN semantics); comparisons with `replacing` stay in registers.
@inlinable @inline(__always)
public func clamp16(_ v: Vec16, _ lower: Vec16, _ upper: Vec16) -> Vec16 {
    v.replacing(with: lower, where: v .< lower).replacing(with: upper, where: v .> upper)
}

/// Lane-wise maximum, kept in registers (see `clamp16`).
@inlinable @inline(__always)
public func max16(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: b .> a) }
