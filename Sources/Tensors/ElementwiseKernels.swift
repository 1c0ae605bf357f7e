// Element-wise and data-movement passes: strided subsampling (IResNet's MaxPool(1, s) shortcut),
// inverted dropout with a counter-based mask, and vector add/scale.

public enum ElementwiseKernels {
    /// y[b][oy][ox][:] += x[b][s·oy][s·ox][:]; y is [batch × ⌈h/s⌉ × ⌈w/s⌉ × c].
    public static func addSubsampled(_ x: UnsafePointer<Float>, batch: Int, height h: Int, width w: Int, channels c: Int,
                                     stride s: Int, into y: UnsafeMutablePointer<Float>) {
        let ho = (h - 1) / s + 1, wo = (w - 1) / s + 1
        let vectorEnd = c & ~15
        Parallel.forRanges(batch * ho * wo, grain: 64) { range in
            for q in range {
                let ox = q % wo, oy = (q / wo) % ho, b = q / (wo * ho)
                let src = x + ((b * h + oy * s) * w + ox * s) * c
                let dst = y + q * c
                var k = 0
                while k < vectorEnd { store16(load16(dst + k) + load16(src + k), dst + k); k += 16 }
                while k < c { dst[k] += src[k]; k += 1 }
            }
        }
    }

    /// The adjoint of subsampling: dx is g at the strided positions and zero elsewhere (overwrites dx).
    public static func scatterSubsampled(_ g: UnsafePointer<Float>, batch: Int, height h: Int, width w: Int,
                                         channels c: Int, stride s: Int, into dx: UnsafeMutablePointer<Float>) {
        let ho = (h - 1) / s + 1, wo = (w - 1) / s + 1
        Parallel.forRanges(batch * h, grain: 8) { range in
            for row in range {
                let iy = row % h, b = row / h
                let dst = dx + row * w * c
                if iy % s != 0 { dst.update(repeating: 0, count: w * c); continue }
                let oy = iy / s
                for ix in 0..<w {
                    if ix % s != 0 { (dst + ix * c).update(repeating: 0, count: c); continue }
                    (dst + ix * c).update(from: g + ((b * ho + oy) * wo + ix / s) * c, count: c)
                }
            }
        }
    }

    /// Inverted dropout: y = x / (1 − p) where the element is kept, else 0. The mask is a pure
    /// function of (seed, element index), so the backward pass recomputes it instead of storing it.
    public static func dropout(_ x: UnsafePointer<Float>, count: Int, probability p: Float, seed: UInt64,
                               into y: UnsafeMutablePointer<Float>) {
        let keepScale = 1 / (1 - p)
        Parallel.forRanges(count, grain: 4096) { range in
            for i in range {
                y[i] = counterUniform(seed: seed, counter: UInt64(i)) < p ? 0 : x[i] * keepScale
            }
        }
    }

    /// y += x.
    public static func add(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(count, grain: 1 << 14) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound { store16(load16(y + i) + load16(x + i), y + i); i += 16 }
            while i < range.upperBound { y[i] += x[i]; i += 1 }
        }
    }

    /// Per-row L2 norms and unit rows: e = x / ‖x‖ (the embedding normalisation).
    public static func normalizeRows(_ x: UnsafePointer<Float>, rows: Int, columns: Int,
                                     unit: UnsafeMutablePointer<Float>, norms: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let xr = x + r * columns
            var acc = 0.0
            for j in 0..<columns { acc += Double(xr[j]) * Double(xr[j]) }
            let n = Float(acc.squareRoot())
            norms[r] = n
            let inv = n > 0 ? 1 / n : 0
            for j in 0..<columns { unit[r * columns + j] = xr[j] * inv }
        }
    }

    /// The gradient through e = x/‖x‖: dx = (de − e·(e·de)) / ‖x‖.
    public static func normalizeRowsBackward(unit: UnsafePointer<Float>, norms: UnsafePointer<Float>,
                                             gradUnit: UnsafePointer<Float>, rows: Int, columns: Int,
                                             into dx: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let e = unit + r * columns, g = gradUnit + r * columns
            var dot: Float = 0
            for j in 0..<columns { dot += e[j] * g[j] }
            let inv = norms[r] > 0 ? 1 / norms[r] : 0
            for j in 0..<columns { dx[r * columns + j] = (g[j] - e[j] * dot) * inv }
        }
    }
}
