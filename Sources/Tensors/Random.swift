// Deterministic random numbers. Everything random in training (initialisation, dropout masks,
// sampling) derives from explicit seeds so that runs and restarts reproduce exactly.
import Foundation

/// SplitMix64: tiny state, good statistical quality, and cheap to derive independent streams from a
/// (seed, stream) pair, which is what per-step and per-sample randomness needs.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// An independent stream for `(seed, a, b)`, e.g. (seed, epoch, sample index).
    public init(seed: UInt64, _ a: UInt64, _ b: UInt64 = 0) {
        var mixer = SplitMix64(seed: seed ^ 0x9E37_79B9_7F4A_7C15)
        let s1 = mixer.next() ^ (a &* 0xBF58_476D_1CE4_E5B9)
        var mixer2 = SplitMix64(seed: s1)
        state = mixer2.next() ^ (b &* 0x94D0_49BB_1331_11EB)
    }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inlinable
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Standard normal by Box–Muller (one of the pair; simplicity beats speed at init time).
    public mutating func nextNormal() -> Float {
        var u1 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        if u1 < 1e-300 { u1 = 1e-300 }
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
    }
}

/// A stateless hash of (seed, counter) to a uniform float, for element-wise masks that many threads
/// fill in parallel and that must not depend on the split.
@inlinable @inline(__always)
public func counterUniform(seed: UInt64, counter: UInt64) -> Float {
    var z = seed &+ counter &* 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z = z ^ (z >> 31)
    return Float(z >> 40) * (1.0 / 16_777_216.0)
}
