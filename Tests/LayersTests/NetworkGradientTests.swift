// A whole IR unit (both shortcut kinds) and a tiny IResNet end to end against finite differences,
// plus the SGD update rule with its two weight-decay groups.
import Layers
import Tensors
import XCTest

final class NetworkGradientTests: XCTestCase {
    override func setUp() { ComputeThreads.count = 2; BLAS.setThreads(1) }

    /// Randomises BatchNorm affine parameters and PReLU slopes so no gradient is trivially symmetric.
    private func perturbNonConvolutionParameters(_ store: ParameterStore, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for (i, p) in store.parameters.enumerated() where p.shape.count == 1 {
            let v = store.value(i)
            for j in 0..<p.count { v[j] += 0.3 * rng.nextNormal() }
        }
    }

    private func checkUnit(inChannels: Int, outChannels: Int, stride: Int) {
        let store = ParameterStore()
        let unit = ResidualUnit("body.0", inChannels: inChannels, outChannels: outChannels, stride: stride, inSize: 6, store: store)
        store.finalize()
        var rng = SplitMix64(seed: 5)
        unit.resetParameters(&rng)
        perturbNonConvolutionParameters(store, seed: 6)
        let batch = 2
        unit.prepare(batchCapacity: batch)
        let largest = unit.largestActivation(batch: batch)
        let scratch = Tensor(shape: [largest]), scratchB = Tensor(shape: [largest])
        let workspace = Tensor(shape: [1 << 16])
        let nx = batch * 36 * inChannels
        let x = Tensor(shape: [nx], values: GradientCheck.random(nx, seed: 7))
        let ny = batch * unit.outSize * unit.outSize * outChannels
        let weights = GradientCheck.random(ny, seed: 8)
        unit.forward(x.data, batch: batch, training: true, workspace: workspace)
        let g = Tensor(shape: [largest], values: weights + [Float](repeating: 0, count: largest - ny))
        let dx = Tensor(shape: [nx])
        store.zeroGradients()
        unit.backward(input: x.data, gradOutput: g.data, gradInput: dx.data, batch: batch,
                      scratchA: scratch.data, scratchB: scratchB.data, workspace: workspace)
        let loss = { () -> Double in
            unit.forward(x.data, batch: batch, training: true, workspace: workspace)
            return GradientCheck.weightedSum(unit.output.data, weights)
        }
        let tag = "unit \(inChannels)→\(outChannels) stride \(stride)"
        GradientCheck.check("\(tag) dX", values: x.data, count: nx, analytic: dx.array, loss: loss)
        for (i, p) in store.parameters.enumerated() {
            GradientCheck.check("\(tag) \(p.name)", values: store.value(i), count: p.count,
                                analytic: Array(UnsafeBufferPointer(start: store.gradient(i), count: p.count)),
                                step: 2e-3, tolerance: 1e-2, floor: 1e-2, loss: loss)
        }
    }

    func testUnitWithSubsamplingShortcut() { checkUnit(inChannels: 4, outChannels: 4, stride: 2) }
    func testUnitWithIdentityShortcut() { checkUnit(inChannels: 4, outChannels: 4, stride: 1) }
    func testUnitWithConvolutionShortcut() { checkUnit(inChannels: 3, outChannels: 5, stride: 2) }

    func testTinyIResNetEndToEnd() {
        let config = IResNetConfiguration(unitsPerStage: [2, 1], stageWidths: [4, 6], inputSize: 8, embeddingSize: 5, dropout: 0.3)
        let net = IResNet(configuration: config)
        perturbNonConvolutionParameters(net.store, seed: 9)
        let batch = 6
        net.prepare(batchCapacity: batch)
        net.input.set(GradientCheck.random(batch * 8 * 8 * 3, seed: 10))
        net.dropoutSeed = 1234
        let weights = GradientCheck.random(batch * 5, seed: 11)
        net.forward(batch: batch, training: true)
        for r in 0..<batch {
            let norm = (0..<5).reduce(Float(0)) { $0 + net.embeddings.data[r * 5 + $1] * net.embeddings.data[r * 5 + $1] }
            XCTAssertEqual(norm, 1, accuracy: 1e-5, "embeddings are unit vectors")
            XCTAssertGreaterThan(net.norms.data[r], 0)
        }
        weights.withUnsafeBufferPointer { net.backward(gradEmbeddings: $0.baseAddress!) }
        let loss = { () -> Double in
            net.forward(batch: batch, training: true)
            return GradientCheck.weightedSum(net.embeddings.data, weights)
        }
        // PReLU kinks make the difference quotient converge slowly, so the step is small; biases that
        // feed a training-mode BatchNorm have a zero gradient, which the absolute floor accepts.
        for (i, p) in net.store.parameters.enumerated() {
            GradientCheck.check("tiny IResNet \(p.name)", values: net.store.value(i), count: p.count,
                                analytic: Array(UnsafeBufferPointer(start: net.store.gradient(i), count: p.count)),
                                samples: 12, step: 5e-4, tolerance: 3e-2, floor: 0.1, loss: loss)
        }
    }

    func testStateDictNamesFollowTheOfficialModel() {
        let net = IResNet(.ir18)
        let names = net.store.stateNames
        XCTAssertEqual(names.prefix(7), ["input_layer.0.weight", "input_layer.1.weight", "input_layer.1.bias",
                                         "input_layer.1.running_mean", "input_layer.1.running_var",
                                         "input_layer.1.num_batches_tracked", "input_layer.2.weight"])
        XCTAssertTrue(names.contains("body.2.shortcut_layer.0.weight"), "IR-18 unit 2 widens 64→128")
        XCTAssertFalse(names.contains("body.0.shortcut_layer.0.weight"), "unit 0 keeps 64 channels: MaxPool shortcut")
        XCTAssertEqual(names.suffix(3), ["output_layer.4.running_mean", "output_layer.4.running_var",
                                         "output_layer.4.num_batches_tracked"])
        XCTAssertEqual(net.store.trainableScalarCount, 24_020_352)
        XCTAssertEqual(IResNet(.ir50).store.trainableScalarCount, 43_585_600)
        XCTAssertEqual(Double(net.macsPerImage) * 2e-9, 5.19, accuracy: 0.01)
        XCTAssertEqual(IResNetArchitecture(name: "IR-101"), .ir100)
        XCTAssertNil(IResNetArchitecture(name: "ir77"))
    }

    func testEvalModeIsDeterministicAndBatchIndependent() {
        let config = IResNetConfiguration(unitsPerStage: [1, 1], stageWidths: [4, 8], inputSize: 8, embeddingSize: 6)
        let net = IResNet(configuration: config)
        net.prepare(batchCapacity: 4)
        net.input.set(GradientCheck.random(4 * 8 * 8 * 3, seed: 12))
        net.forward(batch: 4, training: true)   // moves the running statistics away from 0/1
        net.forward(batch: 4, training: false)
        let all = net.embeddings.array
        let counters = net.store.batchCounters
        net.forward(batch: 1, training: false)
        for j in 0..<6 { XCTAssertEqual(net.embeddings.data[j], all[j], accuracy: 1e-5, "image 0 alone equals image 0 in a batch") }
        XCTAssertEqual(net.store.batchCounters, counters, "evaluation leaves the batch counters alone")
    }

    func testSGDUpdateRuleAndDecayGroups() {
        let store = ParameterStore()
        let conv = store.registerParameter("w", shape: [3], group: .decayed)
        let bn = store.registerParameter("bn.weight", shape: [2], group: .notDecayed)
        store.finalize()
        store.value(conv).update(from: [1, -2, 3], count: 3)
        store.value(bn).update(from: [1, 1], count: 2)
        store.gradient(conv).update(from: [0.5, 0.5, -1], count: 3)
        store.gradient(bn).update(from: [0.2, -0.4], count: 2)
        let sgd = SGD(store: store, momentum: 0.9, weightDecay: 0.1)
        sgd.step(learningRate: 0.5)
        // Step 1: v = g + λw; w −= lr·v.
        XCTAssertEqual(store.value(conv)[0], 1 - 0.5 * (0.5 + 0.1 * 1), accuracy: 1e-6)
        XCTAssertEqual(store.value(conv)[2], 3 - 0.5 * (-1 + 0.1 * 3), accuracy: 1e-6)
        XCTAssertEqual(store.value(bn)[0], 1 - 0.5 * 0.2, accuracy: 1e-6, "BatchNorm parameters are not decayed")
        // Step 2 with the same gradient: v = 0.9·v + g + λw.
        let w0 = store.value(conv)[0]
        sgd.step(learningRate: 0.5)
        let v1: Float = 0.5 + 0.1 * 1
        XCTAssertEqual(store.value(conv)[0], w0 - 0.5 * (0.9 * v1 + 0.5 + 0.1 * w0), accuracy: 1e-6)
        let bnStep1: Float = 1 + 0.5 * 0.4
        let bnVelocity2: Float = -(0.9 * 0.4 + 0.4)
        XCTAssertEqual(store.value(bn)[1], bnStep1 - 0.5 * bnVelocity2, accuracy: 1e-6)
    }
}
