// 2-D convolution, NHWC, as im2col + OpenBLAS GEMMs over small chunks of output rows.
//
// Why, measured on the 2-core Zen 4 development machine (OpenBLAS 0.3.21, Cooperlake kernel; the
// 2048³ sgemm peak is ~98 GFLOP/s on one thread, ~200 on two):
// - NHWC: an im2col row is nine contiguous copies of a channel vector, the GEMM writes NHWC output
//   directly (M = output pixels, N = Cout), rows of several images share one GEMM (the 7×7 stage
//   needs that), and BatchNorm/PReLU run over contiguous channel vectors with SIMD.
// - Weights are kept as [kh][kw][Cin][Cout] (HWIO) so that forward is C = col·W, the data gradient
//   dcol = dY·Wᵀ and the weight gradient dW = colᵀ·dY, all without transposed copies. Checkpoints
//   convert to and from PyTorch's OIHW.
// - Chunks of 512 output rows: the im2col chunk then stays in cache between its write and the
//   GEMM's packing. im2col + GEMM of the 112×112, 64→64 layer on one thread: 57 GFLOP/s with
//   whole-image chunks, 88–91 with 256–2048-row chunks; 128–512-channel layers reach 94–100.
// - Threads: the batch is split into one group of images per thread, and each thread runs its own
//   im2col and single-threaded GEMMs (weight gradients go to per-group partials, summed at the end).
//   IR-18 training at batch 64 on 2 threads, with whole-image chunks: 8.5 images/s this way against
//   7.2 with one parallel im2col and 2-thread OpenBLAS GEMMs per chunk (OpenBLAS's N = 64 GEMMs
//   scale poorly across threads, and one thread's memory-bound im2col overlaps the other's GEMM).
//   With 512-row chunks on top: 10.3 images/s.
import Dispatch

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
    /// A short label for profiles: "3x3/1 64→64 @112".
    public var profileTag: String { "\(kernel)x\(kernel)/\(stride) \(inChannels)→\(outChannels) @\(inHeight)" }

    /// Forward multiply-adds per image.
    public var macsPerImage: Int { outPixels * patchSize * outChannels }
}

public enum ConvolutionKernels {
    /// Output rows per im2col chunk (see the measurements above). Tests shrink it to cross image
    /// boundaries inside a chunk.
    nonisolated(unsafe) public static var chunkRows = 512

    /// Thread groups a batch is split into: one per thread, at most one per image.
    @inlinable
    public static func groups(batch: Int) -> Int { max(1, min(ComputeThreads.count, batch)) }

    /// Workspace floats for running `g` on `batch` images: an im2col chunk per group, plus a
    /// weight-gradient partial for every group but the first.
    public static func workspaceFloats(_ g: ConvGeometry, batch: Int) -> Int {
        let groups = groups(batch: batch)
        let perGroup = g.isPointwise ? 0 : chunkRows * g.patchSize
        return max(1, groups * perGroup + (groups - 1) * g.patchSize * g.outChannels)
    }

    /// col[r − rows.lowerBound][(ky·k + kx)·Cin + c] = x[b][oy·s − p + ky][ox·s − p + kx][c] for the
    /// output rows r = (b·Ho + oy)·Wo + ox in `rows`, or 0 in the padding. With `transform`, each
    /// copied value is x·scale[c] + shift[c] (a BatchNorm folded into this convolution's input; the
    /// padding stays 0, as it is after a real BatchNorm layer).
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, rows: Range<Int>,
                              into col: UnsafeMutablePointer<Float>, transform: ChannelAffine? = nil) {
        if let transform {
            im2colTransformed(x, g, rows: rows, into: col, transform: transform)
            return
        }
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        for r in rows {
            let ox = r % wo, oy = (r / wo) % ho, b = r / (wo * ho)
            let dstRow = col + (r - rows.lowerBound) * patch
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

    static func im2colTransformed(_ x: UnsafePointer<Float>, _ g: ConvGeometry, rows: Range<Int>,
                                  into col: UnsafeMutablePointer<Float>, transform t: ChannelAffine) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let vectorEnd = cin & ~15
        for r in rows {
            let ox = r % wo, oy = (r / wo) % ho, b = r / (wo * ho)
            let dstRow = col + (r - rows.lowerBound) * patch
            for ky in 0..<k {
                let iy = oy * s - p + ky
                for kx in 0..<k {
                    let ix = ox * s - p + kx
                    let dst = dstRow + (ky * k + kx) * cin
                    if iy < 0 || iy >= h || ix < 0 || ix >= w { dst.update(repeating: 0, count: cin); continue }
                    let src = x + ((b * h + iy) * w + ix) * cin
                    var c = 0
                    while c < vectorEnd {
                        store16(load16(src + c) * load16(t.scale + c) + load16(t.shift + c), dst + c)
                        c += 16
                    }
                    while c < cin { dst[c] = src[c] * t.scale[c] + t.shift[c]; c += 1 }
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds each tap of dcol (rows `rows`) into the input pixel it read.
    /// Callers keep the groups' images apart, so no two threads touch the same pixel.
    public static func col2imAdd(_ dcol: UnsafePointer<Float>, _ g: ConvGeometry, rows: Range<Int>,
                                 into dx: UnsafeMutablePointer<Float>) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let vectorEnd = cin & ~15
        for r in rows {
            let ox = r % wo, oy = (r / wo) % ho, b = r / (wo * ho)
            let srcRow = dcol + (r - rows.lowerBound) * patch
            for ky in 0..<k {
                let iy = oy * s - p + ky
                if iy < 0 || iy >= h { continue }
                for kx in 0..<k {
                    let ix = ox * s - p + kx
                    if ix < 0 || ix >= w { continue }
                    let src = srcRow + (ky * k + kx) * cin
                    let dst = dx + ((b * h + iy) * w + ix) * cin
                    var c = 0
                    while c < vectorEnd { store16(load16(dst + c) + load16(src + c), dst + c); c += 16 }
                    while c < cin { dst[c] += src[c]; c += 1 }
                }
            }
        }
    }

    /// Images of group `index` out of `groups`.
    @inline(__always)
    static func groupImages(_ index: Int, of groups: Int, batch: Int) -> Range<Int> {
        (index * batch / groups)..<((index + 1) * batch / groups)
    }

    /// Runs one body per group on its own thread, with OpenBLAS at one thread meanwhile.
    @inline(__always)
    static func runGroups(_ groups: Int, _ body: (Int) -> Void) {
        if groups == 1 { body(0); return }
        let blasThreads = BLAS.threads
        BLAS.setThreads(1)
        DispatchQueue.concurrentPerform(iterations: groups, execute: body)
        BLAS.setThreads(blasThreads)
    }

    /// y[B·Ho·Wo × Cout] = conv(x, w). `w` is HWIO: [patchSize × Cout]. `inputTransform` is applied
    /// to the input patches (see `im2col`), `epilogue` to each chunk of output rows while it is
    /// still in cache — the BatchNorm (and PReLU) before and after the convolution, folded in.
    public static func forward(input x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                               output y: UnsafeMutablePointer<Float>, batch: Int, geometry g: ConvGeometry,
                               workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int,
                               inputTransform: ChannelAffine? = nil, epilogue: ChannelAffine? = nil) {
        precondition(inputTransform == nil || !g.isPointwise, "an input transform needs the im2col path")
        precondition(workspaceFloats >= self.workspaceFloats(g, batch: batch), "convolution workspace too small")
        let groups = groups(batch: batch)
        let share = chunkRows * g.patchSize
        KernelProfiler.measure("conv fwd \(g.profileTag)", flops: 2 * Double(batch * g.macsPerImage)) {
            runGroups(groups) { group in
                let images = groupImages(group, of: groups, batch: batch)
                let rows = (images.lowerBound * g.outPixels)..<(images.upperBound * g.outPixels)
                if g.isPointwise {
                    BLAS.gemm(m: rows.count, n: g.outChannels, k: g.inChannels, a: x + rows.lowerBound * g.inChannels,
                              b: w, c: y + rows.lowerBound * g.outChannels)
                    if let e = epilogue { applyEpilogue(e, y + rows.lowerBound * g.outChannels, rows: rows.count, g) }
                    return
                }
                let col = workspace + group * share
                var r0 = rows.lowerBound
                while r0 < rows.upperBound {
                    let r1 = min(rows.upperBound, r0 + chunkRows)
                    im2col(x, g, rows: r0..<r1, into: col, transform: inputTransform)
                    BLAS.gemm(m: r1 - r0, n: g.outChannels, k: g.patchSize, a: col, b: w, c: y + r0 * g.outChannels)
                    if let e = epilogue { applyEpilogue(e, y + r0 * g.outChannels, rows: r1 - r0, g) }
                    r0 = r1
                }
            }
        }
    }

    @inline(__always)
    static func applyEpilogue(_ e: ChannelAffine, _ y: UnsafeMutablePointer<Float>, rows: Int, _ g: ConvGeometry) {
        ChannelKernels.scaleShift(y, rows: rows, channels: g.outChannels, scale: e.scale, shift: e.shift,
                                  preluSlope: e.preluSlope, into: y, parallel: false)
    }

    /// dW = colᵀ·dY over the batch (overwrites `gradWeight`), and, when `gradInput` is given,
    /// dX (+)= col2im(dY·Wᵀ). `inputTransform` must be the one the forward pass used: the weight
    /// gradient needs the transformed patches, and dX is the gradient w.r.t. the transformed input.
    public static func backward(input x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                gradOutput dy: UnsafePointer<Float>, gradWeight dw: UnsafeMutablePointer<Float>,
                                gradInput dx: UnsafeMutablePointer<Float>?, accumulateInput: Bool,
                                batch: Int, geometry g: ConvGeometry,
                                workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int,
                                inputTransform: ChannelAffine? = nil) {
        precondition(workspaceFloats >= self.workspaceFloats(g, batch: batch), "convolution workspace too small")
        precondition(inputTransform == nil || !g.isPointwise, "an input transform needs the im2col path")
        let groups = groups(batch: batch)
        let weightCount = g.patchSize * g.outChannels
        let partials = workspace
        let columns = workspace + (groups - 1) * weightCount
        let share = chunkRows * g.patchSize
        let flops = Double(batch * g.macsPerImage) * (dx == nil ? 2 : 4)
        KernelProfiler.measure("conv bwd \(g.profileTag)", flops: flops) {
            runGroups(groups) { group in
                let images = groupImages(group, of: groups, batch: batch)
                let rows = (images.lowerBound * g.outPixels)..<(images.upperBound * g.outPixels)
                let groupGradient = group == 0 ? dw : partials + (group - 1) * weightCount
                if rows.isEmpty { groupGradient.update(repeating: 0, count: weightCount); return }
                if g.isPointwise {
                    let xs = x + rows.lowerBound * g.inChannels, dys = dy + rows.lowerBound * g.outChannels
                    BLAS.gemm(transA: true, m: g.inChannels, n: g.outChannels, k: rows.count, a: xs, b: dys, c: groupGradient)
                    if let dx {
                        BLAS.gemm(transB: true, m: rows.count, n: g.inChannels, k: g.outChannels, a: dys, b: w,
                                  beta: accumulateInput ? 1 : 0, c: dx + rows.lowerBound * g.inChannels)
                    }
                    return
                }
                if let dx, !accumulateInput {
                    (dx + images.lowerBound * g.inPixels * g.inChannels)
                        .update(repeating: 0, count: images.count * g.inPixels * g.inChannels)
                }
                let col = columns + group * share
                var r0 = rows.lowerBound
                while r0 < rows.upperBound {
                    let r1 = min(rows.upperBound, r0 + chunkRows)
                    let dyChunk = dy + r0 * g.outChannels
                    im2col(x, g, rows: r0..<r1, into: col, transform: inputTransform)
                    BLAS.gemm(transA: true, m: g.patchSize, n: g.outChannels, k: r1 - r0,
                              a: col, b: dyChunk, beta: r0 == rows.lowerBound ? 0 : 1, c: groupGradient)
                    if let dx {
                        BLAS.gemm(transB: true, m: r1 - r0, n: g.patchSize, k: g.outChannels, a: dyChunk, b: w, c: col)
                        col2imAdd(col, g, rows: r0..<r1, into: dx)
                    }
                    r0 = r1
                }
            }
        }
        if groups > 1 {
            // Sum the groups' weight-gradient partials into dw.
            KernelProfiler.measure("conv dW reduce") {
                Parallel.forRanges(weightCount, grain: 1 << 14) { range in
                    for group in 1..<groups {
                        let src = UnsafePointer(partials + (group - 1) * weightCount)
                        var i = range.lowerBound
                        while i + 16 <= range.upperBound { store16(load16(dw + i) + load16(src + i), dw + i); i += 16 }
                        while i < range.upperBound { dw[i] += src[i]; i += 1 }
                    }
                }
            }
        }
    }
}
