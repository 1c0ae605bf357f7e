// Per-channel passes over [rows × channels] tensors (NHWC activations seen as rows of channel
// vectors): BatchNorm statistics, scale-and-shift with the fusions IResNet uses (PReLU, residual add),
// and the reductions of their backward passes.
//
// Reductions accumulate 64-row blocks in float SIMD registers and then add the block into per-worker
// Double partials, so a sum over ~10⁶ rows keeps its precision without a Double per element.

/// Per-worker partial sums, allocated once and grown only when a wider tensor or more workers appear.
final class ReductionScratch {
    nonisolated(unsafe) static let shared = ReductionScratch()
    private(set) var pointer = UnsafeMutablePointer<Double>.allocate(capacity: 1)
    private(set) var capacity = 1

    func reserve(_ n: Int) -> UnsafeMutablePointer<Double> {
        if n > capacity {
            pointer.deallocate()
            pointer = .allocate(capacity: n)
            capacity = n
        }
        return pointer
    }
}

/// A per-channel y = x·scale + shift, optionally followed by PReLU: a BatchNorm (and activation)
/// that a convolution applies to its input patches or its output rows instead of a separate pass.
public struct ChannelAffine {
    public let scale: UnsafePointer<Float>
    public let shift: UnsafePointer<Float>
    public let preluSlope: UnsafePointer<Float>?

    public init(scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, preluSlope: UnsafePointer<Float>? = nil) {
        self.scale = scale; self.shift = shift; self.preluSlope = preluSlope
    }
}

public enum ChannelKernels {
    static let rowBlock = 64

    /// Sums over rows of up to three per-element quantities, per channel, into Double outputs.
    /// `quantity` selects: 0 → Σx and Σx²; 1 → Σa and Σa·b (a = x, b = second input).
    @inline(__always)
    static func reduce(rows: Int, channels: Int, x: UnsafePointer<Float>, second: UnsafePointer<Float>?,
                       shift: UnsafePointer<Float>?, out1: UnsafeMutablePointer<Double>,
                       out2: UnsafeMutablePointer<Double>) {
        let workersMax = max(1, ComputeThreads.count)
        let partials = ReductionScratch.shared.reserve(workersMax * channels * 2)
        partials.update(repeating: 0, count: workersMax * channels * 2)
        let vectorEnd = channels & ~15
        let used = Parallel.forRangesIndexed(rows, grain: rowBlock) { worker, range in
            let p1 = partials + worker * channels * 2
            let p2 = p1 + channels
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let r1 = min(range.upperBound, r0 + rowBlock)
                var c = 0
                while c < vectorEnd {
                    var a1 = Vec16(repeating: 0), a2 = Vec16(repeating: 0)
                    let k = shift.map { load16($0 + c) } ?? Vec16(repeating: 0)
                    if let second {
                        for r in r0..<r1 {
                            let v = load16(x + r * channels + c)
                            let u = load16(second + r * channels + c)
                            a1 += v
                            a2 += v * (u - k)
                        }
                    } else {
                        for r in r0..<r1 {
                            let v = load16(x + r * channels + c) - k
                            a1 += v
                            a2 += v * v
                        }
                    }
                    for j in 0..<16 { p1[c + j] += Double(a1[j]); p2[c + j] += Double(a2[j]) }
                    c += 16
                }
                while c < channels {
                    var s1: Float = 0, s2: Float = 0
                    let k = shift?[c] ?? 0
                    for r in r0..<r1 {
                        let v = x[r * channels + c]
                        if let second { s1 += v; s2 += v * (second[r * channels + c] - k) }
                        else { s1 += v - k; s2 += (v - k) * (v - k) }
                    }
                    p1[c] += Double(s1); p2[c] += Double(s2)
                    c += 1
                }
                r0 = r1
            }
        }
        for c in 0..<channels {
            var s1 = 0.0, s2 = 0.0
            for w in 0..<used { s1 += partials[w * channels * 2 + c]; s2 += partials[w * channels * 2 + channels + c] }
            out1[c] = s1; out2[c] = s2
        }
    }

    /// Batch mean and biased variance per channel. The first row serves as a shift, which keeps
    /// E[x²] − E[x]² from cancelling when the mean is large against the spread.
    public static func meanVariance(_ x: UnsafePointer<Float>, rows: Int, channels: Int,
                                    mean: UnsafeMutablePointer<Float>, variance: UnsafeMutablePointer<Float>,
                                    scratch: UnsafeMutablePointer<Double>) {
        precondition(rows > 0, "batch statistics need at least one row")
        let s1 = scratch, s2 = scratch + channels
        reduce(rows: rows, channels: channels, x: x, second: nil, shift: x, out1: s1, out2: s2)
        let n = Double(rows)
        for c in 0..<channels {
            let m = s1[c] / n
            mean[c] = Float(Double(x[c]) + m)
            variance[c] = Float(max(0, s2[c] / n - m * m))
        }
    }

    /// Σ dy and Σ dy·(x − shift) per channel, the two reductions of a BatchNorm backward pass.
    public static func gradientSums(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, shift: UnsafePointer<Float>,
                                    rows: Int, channels: Int,
                                    sumDy: UnsafeMutablePointer<Double>, sumDyX: UnsafeMutablePointer<Double>) {
        reduce(rows: rows, channels: channels, x: dy, second: x, shift: shift, out1: sumDy, out2: sumDyX)
    }

    /// y = x·scale + shift, optionally followed by PReLU with per-channel `slope`.
    /// `parallel: false` runs on the calling thread (inside a convolution's thread group).
    public static func scaleShift(_ x: UnsafePointer<Float>, rows: Int, channels: Int,
                                  scale: UnsafePointer<Float>, shift: UnsafePointer<Float>,
                                  preluSlope: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>,
                                  parallel: Bool = true) {
        let vectorEnd = channels & ~15
        Parallel.forRanges(rows, grain: parallel ? rowBlock : Int.max) { range in
            for r in range {
                let xr = x + r * channels, yr = y + r * channels
                var c = 0
                if let slope = preluSlope {
                    while c < vectorEnd {
                        let v = load16(xr + c) * load16(scale + c) + load16(shift + c)
                        let neg = v * load16(slope + c)
                        store16(v.replacing(with: neg, where: v .< 0), yr + c)
                        c += 16
                    }
                    while c < channels {
                        let v = xr[c] * scale[c] + shift[c]
                        yr[c] = v < 0 ? v * slope[c] : v
                        c += 1
                    }
                } else {
                    while c < vectorEnd {
                        store16(load16(xr + c) * load16(scale + c) + load16(shift + c), yr + c)
                        c += 16
                    }
                    while c < channels { yr[c] = xr[c] * scale[c] + shift[c]; c += 1 }
                }
            }
        }
    }

    /// y = (x1·scale1 + shift1) + (x2·scale2 + shift2): the residual add of two normalised branches.
    public static func scaleShiftAdd(_ x1: UnsafePointer<Float>, scale1: UnsafePointer<Float>, shift1: UnsafePointer<Float>,
                                     _ x2: UnsafePointer<Float>, scale2: UnsafePointer<Float>, shift2: UnsafePointer<Float>,
                                     rows: Int, channels: Int, into y: UnsafeMutablePointer<Float>) {
        let vectorEnd = channels & ~15
        Parallel.forRanges(rows, grain: rowBlock) { range in
            for r in range {
                let a = x1 + r * channels, b = x2 + r * channels, yr = y + r * channels
                var c = 0
                while c < vectorEnd {
                    let v = load16(a + c) * load16(scale1 + c) + load16(shift1 + c)
                        + load16(b + c) * load16(scale2 + c) + load16(shift2 + c)
                    store16(v, yr + c)
                    c += 16
                }
                while c < channels {
                    yr[c] = a[c] * scale1[c] + shift1[c] + b[c] * scale2[c] + shift2[c]
                    c += 1
                }
            }
        }
    }

    /// out (+)= a·dy + b·x + c per channel: the data gradient of BatchNorm in closed form.
    public static func affineCombination(dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                         a: UnsafePointer<Float>, b: UnsafePointer<Float>, c cTerm: UnsafePointer<Float>,
                                         rows: Int, channels: Int, into out: UnsafeMutablePointer<Float>,
                                         accumulate: Bool) {
        let vectorEnd = channels & ~15
        Parallel.forRanges(rows, grain: rowBlock) { range in
            for r in range {
                let g = dy + r * channels, xr = x + r * channels, o = out + r * channels
                var c = 0
                while c < vectorEnd {
                    var v = load16(g + c) * load16(a + c) + load16(xr + c) * load16(b + c) + load16(cTerm + c)
                    if accumulate { v += load16(o + c) }
                    store16(v, o + c)
                    c += 16
                }
                while c < channels {
                    var v = g[c] * a[c] + xr[c] * b[c] + cTerm[c]
                    if accumulate { v += o[c] }
                    o[c] = v
                    c += 1
                }
            }
        }
    }

    /// The PReLU backward half of a fused BatchNorm+PReLU: recomputes the pre-activation
    /// v = x·scale + shift, turns dp into dv in place (dv = dp where v ≥ 0, dp·slope where v < 0) and
    /// returns Σ dp·v over v < 0 per channel (the slope gradient) in `slopeGrad`.
    public static func preluBackwardInPlace(grad: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                            scale: UnsafePointer<Float>, shift: UnsafePointer<Float>,
                                            slope: UnsafePointer<Float>, rows: Int, channels: Int,
                                            slopeGrad: UnsafeMutablePointer<Float>) {
        let workersMax = max(1, ComputeThreads.count)
        let partials = ReductionScratch.shared.reserve(workersMax * channels)
        partials.update(repeating: 0, count: workersMax * channels)
        let vectorEnd = channels & ~15
        let used = Parallel.forRangesIndexed(rows, grain: rowBlock) { worker, range in
            let p = partials + worker * channels
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let r1 = min(range.upperBound, r0 + rowBlock)
                var c = 0
                while c < vectorEnd {
                    var acc = Vec16(repeating: 0)
                    let sc = load16(scale + c), sh = load16(shift + c), sl = load16(slope + c)
                    for r in r0..<r1 {
                        let o = r * channels + c
                        let v = load16(x + o) * sc + sh
                        let g = load16(grad + o)
                        let negative = v .< 0
                        acc += (g * v).replacing(with: 0, where: .!negative)
                        store16(g.replacing(with: g * sl, where: negative), grad + o)
                    }
                    for j in 0..<16 { p[c + j] += Double(acc[j]) }
                    c += 16
                }
                while c < channels {
                    var acc: Float = 0
                    for r in r0..<r1 {
                        let o = r * channels + c
                        let v = x[o] * scale[c] + shift[c]
                        if v < 0 { acc += grad[o] * v; grad[o] *= slope[c] }
                    }
                    p[c] += Double(acc)
                    c += 1
                }
                r0 = r1
            }
        }
        for c in 0..<channels {
            var s = 0.0
            for w in 0..<used { s += partials[w * channels + c] }
            slopeGrad[c] = Float(s)
        }
    }
}
