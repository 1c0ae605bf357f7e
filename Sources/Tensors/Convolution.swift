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
                              into col: UnsafeMutablePointer<Float>, parallel: Bool = true) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let rows = images.count * ho * wo
        let firstImage = images.lowerBound
        Parallel.forRanges(rows, grain: parallel ? 64 : Int.max) { range in
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
                              into dx: UnsafeMutablePointer<Float>, accumulate: Bool, parallel: Bool = true) {
        let ho = g.outHeight, wo = g.outWidth, h = g.inHeight, w = g.inWidth, cin = g.inChannels
        let k = g.kernel, s = g.stride, p = g.padding, patch = g.patchSize
        let pixels = images.count * h * w
        let firstImage = images.lowerBound
        let vectorEnd = cin & ~15
        Parallel.forRanges(pixels, grain: parallel ? 64 : Int.max) { range in
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

    /// How a convolution uses the threads of the rank.
    public enum Parallelism: Sendable {
        /// One im2col and one multi-threaded OpenBLAS GEMM per chunk of images.
        case sharedGEMM
        /// The batch is split into one group of images per thread; each thread runs im2col and a
        /// single-threaded GEMM on its own images (and its own weight-gradient partial, summed at
        /// the end). Needs OpenBLAS at 1 thread.
        case imageGroups
    }

    /// Measured on the 2-core development machine (IR-18, batch 64): see `docs/benchmarks.md`.
    nonisolated(unsafe) public static var parallelism: Parallelism = .imageGroups

    /// Thread groups a batch is split into.
    @inlinable
    public static func groups(batch: Int) -> Int {
        parallelism == .imageGroups ? max(1, min(ComputeThreads.count, batch)) : 1
    }

    /// Workspace floats for running `g` on `batch` images: an im2col chunk per group, plus a
    /// weight-gradient partial for every group but the first.
    public static func workspaceFloats(_ g: ConvGeometry, batch: Int, chunkFloats: Int) -> Int {
        let groups = groups(batch: batch)
        let perGroup = max(minimumWorkspace(g), chunkFloats / groups)
        return groups * perGroup + (groups - 1) * g.patchSize * g.outChannels
    }

    /// Images of group `index` out of `groups`.
    @inline(__always)
    static func groupImages(_ index: Int, of groups: Int, batch: Int) -> Range<Int> {
        (index * batch / groups)..<((index + 1) * batch / groups)
    }

    /// y[B·Ho·Wo × Cout] = conv(x, w). `w` is HWIO: [patchSize × Cout].
    public static func forward(input x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                               output y: UnsafeMutablePointer<Float>, batch: Int, geometry g: ConvGeometry,
                               workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int) {
        let tag = g.profileTag
        let groups = groups(batch: batch)
        let share = groups == 1 ? workspaceFloats
            : (workspaceFloats - (groups - 1) * g.patchSize * g.outChannels) / groups
        KernelProfiler.measure("conv fwd \(tag)", flops: 2 * Double(batch * g.macsPerImage)) {
            runGroups(groups) { group in
                let images = groupImages(group, of: groups, batch: batch)
                forwardImages(x, w, y, images: images, g, workspace: workspace + group * share, workspaceFloats: share,
                              parallel: groups == 1)
            }
        }
    }

    @inline(__always)
    static func runGroups(_ groups: Int, _ body: (Int) -> Void) {
        if groups == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: groups, execute: body) }
    }

    static func forwardImages(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                              images: Range<Int>, _ g: ConvGeometry, workspace: UnsafeMutablePointer<Float>,
                              workspaceFloats: Int, parallel: Bool) {
        if g.isPointwise {
            BLAS.gemm(m: images.count * g.inPixels, n: g.outChannels, k: g.inChannels,
                      a: x + images.lowerBound * g.inPixels * g.inChannels, b: w,
                      c: y + images.lowerBound * g.outPixels * g.outChannels)
            return
        }
        let chunk = imagesPerChunk(g, workspaceFloats: workspaceFloats)
        precondition(chunk >= 1 && workspaceFloats >= minimumWorkspace(g), "convolution workspace too small")
        var b0 = images.lowerBound
        while b0 < images.upperBound {
            let b1 = min(images.upperBound, b0 + chunk)
            im2col(x, g, images: b0..<b1, into: workspace, parallel: parallel)
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
        let tag = g.profileTag
        let groups = groups(batch: batch)
        let weightCount = g.patchSize * g.outChannels
        let partials = workspace
        let columns = workspace + (groups - 1) * weightCount
        let share = (workspaceFloats - (groups - 1) * weightCount) / groups
        let flops = Double(batch * g.macsPerImage) * (dx == nil ? 2 : 4)
        KernelProfiler.measure("conv bwd \(tag)", flops: flops) {
            runGroups(groups) { group in
                let images = groupImages(group, of: groups, batch: batch)
                let groupWeightGradient = group == 0 ? dw : partials + (group - 1) * weightCount
                backwardImages(x, w, dy, groupWeightGradient, dx, accumulateInput: accumulateInput, images: images, g,
                               workspace: columns + group * share, workspaceFloats: share, parallel: groups == 1)
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

    static func backwardImages(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                               _ dw: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
                               accumulateInput: Bool, images: Range<Int>, _ g: ConvGeometry,
                               workspace: UnsafeMutablePointer<Float>, workspaceFloats: Int, parallel: Bool) {
        if images.isEmpty {
            dw.update(repeating: 0, count: g.patchSize * g.outChannels)
            return
        }
        if g.isPointwise {
            let xs = x + images.lowerBound * g.inPixels * g.inChannels
            let dys = dy + images.lowerBound * g.outPixels * g.outChannels
            BLAS.gemm(transA: true, m: g.inChannels, n: g.outChannels, k: images.count * g.inPixels, a: xs, b: dys, c: dw)
            if let dx {
                BLAS.gemm(transB: true, m: images.count * g.inPixels, n: g.inChannels, k: g.outChannels,
                          a: dys, b: w, beta: accumulateInput ? 1 : 0, c: dx + images.lowerBound * g.inPixels * g.inChannels)
            }
            return
        }
        let chunk = imagesPerChunk(g, workspaceFloats: workspaceFloats)
        precondition(chunk >= 1 && workspaceFloats >= minimumWorkspace(g), "convolution workspace too small")
        var b0 = images.lowerBound
        while b0 < images.upperBound {
            let b1 = min(images.upperBound, b0 + chunk)
            let rows = (b1 - b0) * g.outPixels
            let dyChunk = dy + b0 * g.outPixels * g.outChannels
            im2col(x, g, images: b0..<b1, into: workspace, parallel: parallel)
            BLAS.gemm(transA: true, m: g.patchSize, n: g.outChannels, k: rows,
                      a: workspace, b: dyChunk, beta: b0 == images.lowerBound ? 0 : 1, c: dw)
            if let dx {
                BLAS.gemm(transB: true, m: rows, n: g.patchSize, k: g.outChannels, a: dyChunk, b: w, c: workspace)
                col2im(workspace, g, images: b0..<b1, into: dx, accumulate: accumulateInput, parallel: parallel)
            }
            b0 = b1
        }
    }
}
