// Vectorised exp for the softmax over hundreds of thousands of classes, where a scalar libm call
// per logit would dominate the head's time.

/// e^x for 16 lanes: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r, and 2^n built
/// in the exponent bits. Relative error below 2e-7 over the float range; inputs below −87.3 give 0
/// (the softmax only feeds it values ≤ 0).
@inlinable @inline(__always)
public func exp16(_ x: Vec16) -> Vec16 {
    let clamped = clamp16(x, Vec16(repeating: -87.3), Vec16(repeating: 88.7))
    // Adding 1.5·2²³ rounds x·log2(e) to an integer n in plain float arithmetic (no round
    // instruction needed), and leaves n in the low mantissa bits for building 2ⁿ.
    let magic = Vec16(repeating: 12_582_912)
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    // ln 2 split in two so that n·ln2 is exact in its high part.
    let r = clamped - n * 0.693_145_751_953_125 - n * 1.428_606_765_330_187e-6
    var p = Vec16(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 0.166_666_66
    p = p * r + 0.5
    p = p * r * r + r + 1
    let integer = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Vec16.self)
    return (p * scale).replacing(with: 0, where: x .< -87.3)
}

/// Scalar e^x through the same polynomial, for loop tails.
@inlinable @inline(__always)
public func exp1(_ x: Float) -> Float { exp16(Vec16(repeating: x))[0] }
