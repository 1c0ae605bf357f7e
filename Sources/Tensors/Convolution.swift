// 2-D convolution, NHWC, as im2col + one OpenBLAS GEMM per chunk of images.
//
// Why NHWC and im2col + sgemm (measured on the 2-core Zen 4 development machine, OpenBLAS 0.3.21):
// - The IResNet convolutions are 3×3 with 64–512 channels. As GEMMs they reach 116–200 GFLOP/s on
//   2 threads (the 2048³ peak is ~200), the 64-channel ones being the weakest (~120).
// - NHWC lets one GEMM cover several images (M = images·H·W), which keeps the 14×14 and 7×7 stages
//   at 180–196 GFLOP/s instead of the ~100 a per-image NCHW GEMM with N = 49 gets.
// - In NHWC an im2col row is nine contiguous copies of a channel vector, and BatchNorm/PReLU run over
//   contiguous channel vectors with SIMD; the GEMM writes NHWC output directly, no transpose.
// - Weights are kept as [kh][kw][Cin][Cout] (HWIO) so that forward is C = col·W, the data gradient
//   dcol = dY·Wᵀ and the weight gradient dW = colᵀ·dY — the three shapes measured fastest above.
//   Checkpoints convert to and from PyTorch's OIHW.
// The im2col buffer is bounded (chunks of images), so its size does not grow with the batch.

public struct ConvGeometry: Equatable, Sendable {
    public let inHeight: Int, inWidth: Int, inChannels: Int
    public let outChannels: Int
    public let kernel: Int, stride: Int, padding: Int

    public init(inHeight: Int, inWidth: Int, inChannels: Int, outChannels: Int,
                kernel: Int, stride: Int, padding: Int) {
        precondition(kernel >= 1 && stride >= 1 && padding >= 0, "invalid convolution geometry")
        self.inHeight = inHeight; self.inWidth = inWidth; self.inChannels = inChannels
        self.outChannels = outChannels; self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    public var outHeight: Int { (inHeight + 2 * padding - kernel) / stride + 1 }
    public var outWidth: Int { (inWidth + 2 * padding - kernel) / stride + 1 }
    /// The GEMM reduction length: one im2col row.
    public var patchSize: Int { kernel * kernel * inChannels }
    public var inPixels: Int { inHeight * inWidth }
    public var outPixels: Int { outHeight * outWidth }
    /// A 1×1, stride-1, unpadded convolution is a plain GEMM on the input: no im2col.
    public var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }
    /// Forward multiply-adds per image.
    public var macsPerImage: Int { outPixels * patchSize * outChannels }
}

public enum ConvolutionKernels {
    /// Images per GEMM so that the im2col chunk fits in `workspaceFloats`.
    @inlinable
    public static func imagesPerChunk(_ g: ConvGeometry, workspaceFloats: Int) -> Int {
        if g.isPointwise { return Int.max }
        return max(1, workspaceFloats / max(1, g.outPixels * g.patchSize))
    }

    /// Workspace floats needed to run a batch in chunks of at least one image.
    public static func minimumWorkspace(_ g: ConvGeometry) -> Int {
        g.isPointwise ? 0 : g.outPixels * g.patchSize
    }

    /// col[(b·Ho + oy)·Wo + ox][(ky·k + kx)·Cin + c] = x[b][oy·s − p + ky][ox·s − p + kx][c], or 0 in the padding.
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>,
                              into col: UnsafeMutablePointer<Float>) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let rows = images.count * ho * wo
        let firstImage = images.lowerBound
        Parallel.forRanges(rows, grain: 64) { range in
            for r in range {
                let ox = r % wo
                let oy = (r / wo) % ho
                let b = firstImage + r / (wo * ho)
                let dstRow = col + r * patch
                for ky in 0..<k {
                    let iy = oy * s - p + ky
                    let dstK = dstRow + ky * k * cin
                    if iy < 0 || iy >= h {
                        dstK.update(repeating: 0, count: k * cin)
                        continue
                    }
                    let srcRow = x + ((b * h + iy) * w) * cin
                    let ix0 = ox * s - p
                    if ix0 >= 0 && ix0 + k <= w {
                        // Whole kernel row inside: the k channel vectors are contiguous in NHWC.
                        dstK.update(from: srcRow + ix0 * cin, count: k * cin)
                    } else {
                        for kx in 0..<k {
                            let ix = ix0 + kx
                            let dst = dstK + kx * cin
                            if ix < 0 || ix >= w { dst.update(repeating: 0, count: cin) }
                            else { dst.update(from: srcRow + ix * cin, count: cin) }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`, written as a gather over input pixels so that threads never write
    /// the same element: dx[b][iy][ix] (+)= Σ over the taps that read it.
    public static func col2im(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>,
                              into dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let pixels = images.count * h * w
        let firstImage = images.lowerBound
        let vectorEnd = cin & ~15
        Parallel.forRanges(pixels, grain: 64) { range in
            for q in range {
                let ix = q % w
                let iy = (q / w) % h
                let bLocal = q / (w * h)
                let dst = dx + ((firstImage + bLocal) * h * w + iy * w + ix) * cin
                if !accumulate { dst.update(repeating: 0, count: cin) }
                for ky in 0..<k {
                    let ty = iy + p - ky
                    if ty < 0 || ty % s != 0 { continue }
                    let oy = ty / s
                    if oy >= ho { continue }
                    for kx in 0..<k {
                        let tx = ix + p - kx
                        if tx < 0 || tx % s != 0 { continue }
                        let ox = tx / s
                        if ox >= wo { continue }
                        let src = dcol + ((bLocal * ho + oy) * wo + ox) * patch + (ky * k + kx) * cin
                        var c = 0
                        while c < vectorEnd {
                            store16(load16(dst + c) + load16(src + c), dst + c)
                            c += 16
                        }
                        while c < cin { dst[c] += src[c]; c += 1 }
                    }
                }
            }
        }
    }

    /// y[B·Ho·Wo × Cout] = conv(x, w). `w` is HWIO: [patchSize × Cout].
    public static func forward(input x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                               output y: UnsafeMutablePointer<Float>, batch: Int, geometry g: ConvGeometry,
                               workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int) {
        if g.isPointwise {
            BLAS.gemm(m: batch * g.inPixels, n: g.outChannels, k: g.inChannels, a: x, b: w, c: y)
            return
        }
        let chunk = imagesPerChunk(g, workspaceFloats: workspaceFloats)
        var b0 = 0
        while b0 < batch {
            let b1 = min(batch, b0 + chunk)
            im2col(x, g, images: b0..<b1, into: workspace)
            BLAS.gemm(m: (b1 - b0) * g.outPixels, n: g.outChannels, k: g.patchSize,
                      a: workspace, b: w, c: y + b0 * g.outPixels * g.outChannels)
            b0 = b1
        }
    }

    /// dW = colᵀ·dY over the batch (overwrites `gradWeight`), and, when `gradInput` is given,
    /// dX (+)= col2im(dY·Wᵀ).
    public static func backward(input x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                gradOutput dy: UnsafePointer<Float>, gradWeight dw: UnsafeMutablePointer<Float>,
                                gradInput dx: UnsafeMutablePointer<Float>?, accumulateInput: Bool,
                                batch: Int, geometry g: ConvGeometry,
                                workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int) {
        if g.isPointwise {
            BLAS.gemm(transA: true, m: g.inChannels, n: g.outChannels, k: batch * g.inPixels, a: x, b: dy, c: dw)
            if let dx {
                BLAS.gemm(transB: true, m: batch * g.inPixels, n: g.inChannels, k: g.outChannels,
                          a: dy, b: w, beta: accumulateInput ? 1 : 0, c: dx)
            }
            return
        }
        let chunk = imagesPerChunk(g, workspaceFloats: workspaceFloats)
        var b0 = 0
        while b0 < batch {
            let b1 = min(batch, b0 + chunk)
            let rows = (b1 - b0) * g.outPixels
            let dyChunk = dy + b0 * g.outPixels * g.outChannels
            im2col(x, g, images: b0..<b1, into: workspace)
            BLAS.gemm(transA: true, m: g.patchSize, n: g.outChannels, k: rows,
                      a: workspace, b: dyChunk, beta: b0 == 0 ? 0 : 1, c: dw)
            if let dx {
                BLAS.gemm(transB: true, m: rows, n: g.patchSize, k: g.outChannels, a: dyChunk, b: w, c: workspace)
                col2im(workspace, g, images: b0..<b1, into: dx, accumulate: accumulateInput)
            }
            b0 = b1
        }
    }
}
