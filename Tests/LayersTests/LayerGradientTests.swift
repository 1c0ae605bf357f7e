// Every layer's backward pass against central finite differences, and the forward passes against
// direct reference formulas.
import Layers
import Tensors
import XCTest

final class LayerGradientTests: XCTestCase {
    override func setUp() { ComputeThreads.count = 2; BLAS.setThreads(1) }

    /// Direct convolution, NHWC input, HWIO weights: the reference for im2col + GEMM.
    private func directConvolution(_ x: [Float], _ w: [Float], _ g: ConvGeometry, batch: Int) -> [Float] {
        var y = [Float](repeating: 0, count: batch * g.outPixels * g.outChannels)
        for b in 0..<batch { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth { for oc in 0..<g.outChannels {
            var s: Float = 0
            for ky in 0..<g.kernel { for kx in 0..<g.kernel {
                let iy = oy * g.stride - g.padding + ky, ix = ox * g.stride - g.padding + kx
                if iy < 0 || iy >= g.inHeight || ix < 0 || ix >= g.inWidth { continue }
                for c in 0..<g.inChannels {
                    s += x[((b * g.inHeight + iy) * g.inWidth + ix) * g.inChannels + c]
                        * w[((ky * g.kernel + kx) * g.inChannels + c) * g.outChannels + oc]
                }
            } }
            y[((b * g.outHeight + oy) * g.outWidth + ox) * g.outChannels + oc] = s
        } } } }
        return y
    }

    private let geometries: [(String, ConvGeometry)] = [
        ("3x3 stride 1", ConvGeometry(inHeight: 6, inWidth: 5, inChannels: 3, outChannels: 4, kernel: 3, stride: 1, padding: 1)),
        ("3x3 stride 2", ConvGeometry(inHeight: 6, inWidth: 6, inChannels: 17, outChannels: 5, kernel: 3, stride: 2, padding: 1)),
        ("1x1 stride 2", ConvGeometry(inHeight: 6, inWidth: 6, inChannels: 4, outChannels: 6, kernel: 1, stride: 2, padding: 0)),
        ("1x1 stride 1", ConvGeometry(inHeight: 4, inWidth: 4, inChannels: 5, outChannels: 3, kernel: 1, stride: 1, padding: 0)),
    ]

    /// Runs `body` with one and two thread groups, and with im2col chunks that end inside an image.
    private func forEachThreading(_ body: (String) -> Void) {
        let saved = (ComputeThreads.count, ConvolutionKernels.chunkRows)
        defer { ComputeThreads.count = saved.0; ConvolutionKernels.chunkRows = saved.1 }
        for (threads, chunk) in [(1, 512), (2, 7), (3, 5)] {
            ComputeThreads.count = threads
            ConvolutionKernels.chunkRows = chunk
            body("threads \(threads) chunk \(chunk)")
        }
    }

    func testConvolutionForwardMatchesDirectConvolution() { forEachThreading(checkConvolutionForward) }
    func testConvolutionBackwardMatchesFiniteDifferences() { forEachThreading(checkConvolutionBackward) }

    private func checkConvolutionForward(_ strategy: String) {
        for (label, g) in geometries {
            let batch = 3
            let x = Tensor(shape: [batch * g.inPixels * g.inChannels], values: GradientCheck.random(batch * g.inPixels * g.inChannels, seed: 1))
            let w = Tensor(shape: [g.patchSize * g.outChannels], values: GradientCheck.random(g.patchSize * g.outChannels, seed: 2))
            let y = Tensor(shape: [batch * g.outPixels * g.outChannels])
            let ws = Tensor(shape: [ConvolutionKernels.workspaceFloats(g, batch: batch)])
            ConvolutionKernels.forward(input: x.data, weight: w.data, output: y.data, batch: batch, geometry: g,
                                       workspace: ws.data, workspaceFloats: ws.capacity)
            let reference = directConvolution(x.array, w.array, g, batch: batch)
            for i in 0..<reference.count {
                XCTAssertEqual(y.data[i], reference[i], accuracy: 1e-4, "\(label) \(strategy) output \(i)")
            }
        }
    }

    private func checkConvolutionBackward(_ strategy: String) {
        for (label, g) in geometries {
            let label = "\(label) \(strategy)"
            let batch = 3
            let nx = batch * g.inPixels * g.inChannels, nw = g.patchSize * g.outChannels, ny = batch * g.outPixels * g.outChannels
            let x = Tensor(shape: [nx], values: GradientCheck.random(nx, seed: 3))
            let w = Tensor(shape: [nw], values: GradientCheck.random(nw, seed: 4))
            let weights = GradientCheck.random(ny, seed: 5)
            let y = Tensor(shape: [ny]), dy = Tensor(shape: [ny], values: weights)
            let dw = Tensor(shape: [nw]), dx = Tensor(shape: [nx])
            let ws = Tensor(shape: [ConvolutionKernels.workspaceFloats(g, batch: batch)])
            ConvolutionKernels.backward(input: x.data, weight: w.data, gradOutput: dy.data, gradWeight: dw.data,
                                        gradInput: dx.data, accumulateInput: false, batch: batch, geometry: g,
                                        workspace: ws.data, workspaceFloats: ws.capacity)
            let loss = { () -> Double in
                ConvolutionKernels.forward(input: x.data, weight: w.data, output: y.data, batch: batch, geometry: g,
                                           workspace: ws.data, workspaceFloats: ws.capacity)
                return GradientCheck.weightedSum(y.data, weights)
            }
            GradientCheck.check("\(label) dW", values: w.data, count: nw, analytic: dw.array, loss: loss)
            GradientCheck.check("\(label) dX", values: x.data, count: nx, analytic: dx.array, loss: loss)
        }
    }

    func testFoldedBatchNormsEqualSeparatePasses() {
        forEachThreading { threading in
            for (label, g) in geometries where !g.isPointwise {
                let batch = 3
                let nx = batch * g.inPixels * g.inChannels, ny = batch * g.outPixels * g.outChannels
                let x = Tensor(shape: [nx], values: GradientCheck.random(nx, seed: 51))
                let w = Tensor(shape: [g.patchSize * g.outChannels], values: GradientCheck.random(g.patchSize * g.outChannels, seed: 52))
                let inScale = GradientCheck.random(g.inChannels, seed: 53), inShift = GradientCheck.random(g.inChannels, seed: 54)
                let outScale = GradientCheck.random(g.outChannels, seed: 55), outShift = GradientCheck.random(g.outChannels, seed: 56)
                let slope = GradientCheck.random(g.outChannels, seed: 57, scale: 0.3)
                let ws = Tensor(shape: [ConvolutionKernels.workspaceFloats(g, batch: batch)])
                // Separate passes: BN on the input, the convolution, BN + PReLU on the output.
                let normalized = Tensor(shape: [nx]), separate = Tensor(shape: [ny]), folded = Tensor(shape: [ny])
                ChannelKernels.scaleShift(x.data, rows: nx / g.inChannels, channels: g.inChannels, scale: inScale, shift: inShift,
                                          preluSlope: nil, into: normalized.data)
                ConvolutionKernels.forward(input: normalized.data, weight: w.data, output: separate.data, batch: batch,
                                           geometry: g, workspace: ws.data, workspaceFloats: ws.capacity)
                ChannelKernels.scaleShift(separate.data, rows: ny / g.outChannels, channels: g.outChannels, scale: outScale,
                                          shift: outShift, preluSlope: slope, into: separate.data)
                inScale.withUnsafeBufferPointer { a in inShift.withUnsafeBufferPointer { b in
                    outScale.withUnsafeBufferPointer { c in outShift.withUnsafeBufferPointer { d in slope.withUnsafeBufferPointer { e in
                        ConvolutionKernels.forward(
                            input: x.data, weight: w.data, output: folded.data, batch: batch, geometry: g,
                            workspace: ws.data, workspaceFloats: ws.capacity,
                            inputTransform: ChannelAffine(scale: a.baseAddress!, shift: b.baseAddress!),
                            epilogue: ChannelAffine(scale: c.baseAddress!, shift: d.baseAddress!, preluSlope: e.baseAddress!))
                    } } } } }
                for i in 0..<ny {
                    XCTAssertEqual(folded.data[i], separate.data[i], accuracy: 1e-4 * max(1, abs(separate.data[i])),
                                   "\(label) \(threading) element \(i)")
                }
            }
        }
    }

    func testBatchNormTrainingForwardAndRunningStatistics() {
        let store = ParameterStore()
        let bn = BatchNorm("bn", channels: 3, store: store)
        store.finalize()
        bn.resetParameters()
        store.value(bn.weightIndex!).update(from: [2, 1, 0.5], count: 3)
        store.value(bn.biasIndex!).update(from: [0, 1, -1], count: 3)
        let rows = 4
        let x: [Float] = [1, 10, 100, 2, 20, 300, 3, 30, 500, 6, 40, 700]
        let y = Tensor(shape: [12])
        x.withUnsafeBufferPointer { xp in
            bn.prepare(xp.baseAddress!, rows: rows, training: true)
            bn.apply(xp.baseAddress!, rows: rows, into: y.data)
        }
        for c in 0..<3 {
            let column = (0..<rows).map { Double(x[$0 * 3 + c]) }
            let mean = column.reduce(0, +) / 4
            let biased = column.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 4
            let gamma = [2.0, 1, 0.5][c], beta = [0.0, 1, -1][c]
            for r in 0..<rows {
                let expected = gamma * (column[r] - mean) / (biased + 1e-5).squareRoot() + beta
                XCTAssertEqual(Double(y.data[r * 3 + c]), expected, accuracy: 1e-4)
            }
            // running = 0.9·initial + 0.1·batch, with the unbiased variance.
            XCTAssertEqual(Double(bn.runningMean[c]), 0.1 * mean, accuracy: 1e-4)
            XCTAssertEqual(Double(bn.runningVariance[c]), 0.9 + 0.1 * biased * 4 / 3, accuracy: 1e-3 * max(1, biased))
        }
        XCTAssertEqual(store.batchCounters[0], 1)
        // Evaluation mode normalises with the running statistics and leaves them alone.
        let meanBefore = (0..<3).map { bn.runningMean[$0] }
        x.withUnsafeBufferPointer { xp in
            bn.prepare(xp.baseAddress!, rows: rows, training: false)
            bn.apply(xp.baseAddress!, rows: rows, into: y.data)
        }
        for c in 0..<3 {
            let gamma: Float = [2, 1, 0.5][c], beta: Float = [0, 1, -1][c]
            let expected = gamma * (x[c] - bn.runningMean[c]) / (bn.runningVariance[c] + 1e-5).squareRoot() + beta
            XCTAssertEqual(y.data[c], expected, accuracy: 1e-4)
            XCTAssertEqual(bn.runningMean[c], meanBefore[c])
        }
        XCTAssertEqual(store.batchCounters[0], 1)
    }

    func testBatchNormStatisticsKeepPrecisionWithLargeMean() {
        // 10⁵ rows with mean 1000 and std 0.01: a naive E[x²] − E[x]² in float would return garbage.
        let store = ParameterStore()
        let bn = BatchNorm("bn", channels: 16, store: store)
        store.finalize(); bn.resetParameters()
        let rows = 100_000
        var rng = SplitMix64(seed: 9)
        let x = Tensor(shape: [rows * 16])
        for i in 0..<x.count { x.data[i] = 1000 + 0.01 * rng.nextNormal() }
        bn.prepare(x.data, rows: rows, training: true)
        for c in 0..<16 {
            let variance = (bn.runningVariance[c] - 0.9) / 0.1
            XCTAssertEqual(Double(variance), 1e-4, accuracy: 1e-5, "channel \(c)")
        }
    }

    private func checkBatchNormBackward(affine: Bool, prelu: Bool, frozen: Bool = false) {
        let channels = 19, rows = 7
        let store = ParameterStore()
        let bn = BatchNorm("bn", channels: channels, affine: affine, store: store)
        let act = prelu ? PReLU("act", channels: channels, store: store) : nil
        store.finalize()
        bn.resetParameters(); act?.resetParameters()
        if frozen {
            bn.frozen = true
            for c in 0..<channels { bn.runningMean[c] = 0.3 * Float(c % 5) - 0.6; bn.runningVariance[c] = 0.5 + 0.1 * Float(c % 7) }
        }
        if affine {
            store.value(bn.weightIndex!).update(from: GradientCheck.random(channels, seed: 11), count: channels)
            store.value(bn.biasIndex!).update(from: GradientCheck.random(channels, seed: 12), count: channels)
        }
        let x = Tensor(shape: [rows * channels], values: GradientCheck.random(rows * channels, seed: 13, scale: 3))
        let weights = GradientCheck.random(rows * channels, seed: 14)
        let y = Tensor(shape: [rows * channels])
        let forward = {
            bn.prepare(x.data, rows: rows, training: true)
            bn.apply(x.data, rows: rows, preluSlope: act?.slope, into: y.data)
        }
        forward()
        let g = Tensor(shape: [rows * channels], values: weights)
        if let act {
            ChannelKernels.preluBackwardInPlace(grad: g.data, x: x.data, scale: bn.scale.data, shift: bn.shift.data,
                                                slope: act.slope, rows: rows, channels: channels, slopeGrad: act.slopeGradient)
        }
        let dx = Tensor(shape: [rows * channels])
        bn.backward(gradOutput: g.data, input: x.data, rows: rows, gradInput: dx.data, accumulate: false)
        let loss = { () -> Double in forward(); return GradientCheck.weightedSum(y.data, weights) }
        // Frozen statistics leave the PReLU kinks unsmoothed by the batch: a smaller step stays clear of them.
        let step: Float = frozen ? 1e-3 : 1e-2
        let tag = "BN affine=\(affine) prelu=\(prelu) frozen=\(frozen)"
        GradientCheck.check("\(tag) dX", values: x.data, count: x.count, analytic: dx.array, step: step, loss: loss)
        if affine {
            for (name, index) in [("gamma", bn.weightIndex!), ("beta", bn.biasIndex!)] {
                let analytic = Array(UnsafeBufferPointer(start: store.gradient(index), count: channels))
                GradientCheck.check("\(tag) d\(name)", values: store.value(index), count: channels, analytic: analytic, step: step, loss: loss)
            }
        }
        if let act {
            let analytic = Array(UnsafeBufferPointer(start: act.slopeGradient, count: channels))
            GradientCheck.check("\(tag) dslope", values: act.slope, count: channels, analytic: analytic, step: step, loss: loss)
        }
    }

    func testBatchNormBackward() { checkBatchNormBackward(affine: true, prelu: false) }
    func testBatchNormNonAffineBackward() { checkBatchNormBackward(affine: false, prelu: false) }
    func testFusedBatchNormPReLUBackward() { checkBatchNormBackward(affine: true, prelu: true) }
    func testFrozenBatchNormBackward() { checkBatchNormBackward(affine: true, prelu: true, frozen: true) }

    func testLinearBackward() {
        let store = ParameterStore()
        let linear = Linear("fc", inFeatures: 7, outFeatures: 5, store: store)
        store.finalize()
        var rng = SplitMix64(seed: 21)
        linear.resetParameters(&rng)
        store.value(linear.biasIndex).update(from: GradientCheck.random(5, seed: 22), count: 5)
        let batch = 3
        let x = Tensor(shape: [batch * 7], values: GradientCheck.random(batch * 7, seed: 23))
        let weights = GradientCheck.random(batch * 5, seed: 24)
        let y = Tensor(shape: [batch * 5]), dy = Tensor(shape: [batch * 5], values: weights), dx = Tensor(shape: [batch * 7])
        linear.backward(input: x.data, gradOutput: dy.data, batch: batch, gradInput: dx.data)
        let loss = { () -> Double in
            linear.forward(x.data, batch: batch, into: y.data)
            return GradientCheck.weightedSum(y.data, weights)
        }
        GradientCheck.check("linear dX", values: x.data, count: x.count, analytic: dx.array, loss: loss)
        for index in [linear.weightIndex, linear.biasIndex] {
            let n = store.parameters[index].count
            GradientCheck.check("linear \(store.parameters[index].name)", values: store.value(index), count: n,
                                analytic: Array(UnsafeBufferPointer(start: store.gradient(index), count: n)), loss: loss)
        }
    }

    func testDropoutScalesKeptUnitsAndIsItsOwnAdjoint() {
        let n = 100_000, p: Float = 0.4
        let x = Tensor(shape: [n]); x.fill(1)
        let y = Tensor(shape: [n])
        ElementwiseKernels.dropout(x.data, count: n, probability: p, seed: 77, into: y.data)
        let kept = (0..<n).filter { y.data[$0] != 0 }
        XCTAssertEqual(Double(kept.count) / Double(n), 0.6, accuracy: 0.01)
        for i in kept.prefix(100) { XCTAssertEqual(y.data[i], 1 / 0.6, accuracy: 1e-6) }
        // Same seed, same mask: the backward pass relies on it.
        let again = Tensor(shape: [n])
        ElementwiseKernels.dropout(x.data, count: n, probability: p, seed: 77, into: again.data)
        XCTAssertEqual(y.array, again.array)
        let other = Tensor(shape: [n])
        ElementwiseKernels.dropout(x.data, count: n, probability: p, seed: 78, into: other.data)
        XCTAssertNotEqual(y.array, other.array)
    }

    func testSubsamplingAndScatterAreAdjoint() {
        let (b, h, w, c, s) = (2, 5, 6, 3, 2)
        let ho = 3, wo = 3
        let x = GradientCheck.random(b * h * w * c, seed: 31), g = GradientCheck.random(b * ho * wo * c, seed: 32)
        let y = Tensor(shape: [b * ho * wo * c]), dx = Tensor(shape: [b * h * w * c])
        ElementwiseKernels.addSubsampled(x, batch: b, height: h, width: w, channels: c, stride: s, into: y.data)
        ElementwiseKernels.scatterSubsampled(g, batch: b, height: h, width: w, channels: c, stride: s, into: dx.data)
        XCTAssertEqual(y.data[((1 * ho + 2) * wo + 1) * c + 2], x[((1 * h + 4) * w + 2) * c + 2])
        let lhs = (0..<y.count).reduce(0.0) { $0 + Double(y.data[$1]) * Double(g[$1]) }
        let rhs = (0..<dx.count).reduce(0.0) { $0 + Double(dx.data[$1]) * Double(x[$1]) }
        XCTAssertEqual(lhs, rhs, accuracy: 1e-4)
        XCTAssertEqual(dx.data[((0 * h + 1) * w + 0) * c], 0, "odd rows receive no gradient")
    }

    func testEmbeddingNormalisationBackward() {
        let rows = 3, cols = 6
        let x = Tensor(shape: [rows * cols], values: GradientCheck.random(rows * cols, seed: 41))
        let weights = GradientCheck.random(rows * cols, seed: 42)
        let e = Tensor(shape: [rows * cols]), n = Tensor(shape: [rows]), dx = Tensor(shape: [rows * cols])
        ElementwiseKernels.normalizeRows(x.data, rows: rows, columns: cols, unit: e.data, norms: n.data)
        for r in 0..<rows {
            let norm = (0..<cols).reduce(Float(0)) { $0 + x.data[r * cols + $1] * x.data[r * cols + $1] }.squareRoot()
            XCTAssertEqual(n.data[r], norm, accuracy: 1e-5)
        }
        ElementwiseKernels.normalizeRowsBackward(unit: e.data, norms: n.data, gradUnit: weights, rows: rows, columns: cols, into: dx.data)
        GradientCheck.check("normalize dX", values: x.data, count: x.count, analytic: dx.array, step: 1e-3) {
            ElementwiseKernels.normalizeRows(x.data, rows: rows, columns: cols, unit: e.data, norms: n.data)
            return GradientCheck.weightedSum(e.data, weights)
        }
    }
}
