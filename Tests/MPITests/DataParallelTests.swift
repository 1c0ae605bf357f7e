// One training step on P ranks with local batch B equals one step on a single process with the
// whole batch P·B: backbone replicas with bucketed all-reduce averaging, the partitioned head with its
// ×P embedding-gradient scale, and SGD on both. BatchNorm is frozen so that no statistic depends on
// how the batch is split.
import Collectives
import Heads
import Layers
import Tensors
import Training

private struct StepOutcome {
    var loss: Double
    var backbone: [Float]
    var head: [Float]
}

/// One SGD step of backbone + head on `images` (NHWC, normalised) and `labels`.
private func trainingStep(group: CollectiveGroup, images: ArraySlice<Float>, labels: [Int32], classes: Int) throws -> StepOutcome {
    let config = IResNetConfiguration(unitsPerStage: [1, 1], stageWidths: [4, 8], inputSize: 8, embeddingSize: 6, dropout: 0)
    let net = IResNet(configuration: config)
    var rng = SplitMix64(seed: 77)
    net.resetParameters(&rng)
    for bn in net.batchNorms {
        for c in 0..<bn.channels { bn.runningMean[c] = 0.1 * rng.nextNormal(); bn.runningVariance[c] = 0.5 + rng.nextUniform() }
    }
    net.frozenBatchNorm = true
    let batch = labels.count
    net.prepare(batchCapacity: batch)
    net.input.data.update(from: Array(images), count: images.count)
    let head = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: classes, embeddingSize: 6, seed: 5),
                                          group: group)
    let sgd = SGD(store: net.store)
    let buckets = GradientBuckets(store: net.store, group: group, bucketBytes: 1024, firstBucketBytes: 256)
    net.gradientsReady = { offset in try? buckets.gradientsReady(fromOffset: offset) }

    net.forward(batch: batch, training: true)
    var gradient = [Float](repeating: 0, count: batch * 6)
    let result = try labels.withUnsafeBufferPointer { lp in
        try gradient.withUnsafeMutableBufferPointer {
            try head.step(embeddings: net.embeddings.data, norms: net.norms.data, labels: lp.baseAddress!, batch: batch,
                          step: 0, gradEmbeddings: $0.baseAddress!)
        }
    }
    buckets.beginBackward()
    gradient.withUnsafeBufferPointer { net.backward(gradEmbeddings: $0.baseAddress!) }
    try buckets.finish()
    sgd.step(learningRate: 0.1)
    head.applySGD(learningRate: 0.1)
    return StepOutcome(loss: result.loss,
                       backbone: Array(UnsafeBufferPointer(start: net.store.values, count: net.store.parameterCount)),
                       head: head.kernel.array)
}

let dataParallelTests: [MPITest] = [
    MPITest("a step on P ranks equals a step on one process with the whole batch") { world, expect in
        let b = 3, n = b * world.size, classes = 11
        var rng = SplitMix64(seed: 90)
        let pixels = 8 * 8 * 3
        let images = (0..<(n * pixels)).map { _ in rng.nextUniform() * 2 - 1 }
        let labels = (0..<n).map { _ in Int32(rng.next() % UInt64(classes)) }

        let single = try trainingStep(group: SingleProcessGroup(), images: images[...], labels: labels, classes: classes)
        let rows = (world.rank * b)..<((world.rank + 1) * b)
        let parallel = try trainingStep(group: world, images: images[(rows.lowerBound * pixels)..<(rows.upperBound * pixels)],
                                        labels: Array(labels[rows]), classes: classes)
        expect.near(parallel.loss, single.loss, tolerance: 1e-5, "loss")
        var worst: Float = 0, scale: Float = 0
        for i in 0..<single.backbone.count {
            worst = max(worst, abs(parallel.backbone[i] - single.backbone[i])); scale = max(scale, abs(single.backbone[i]))
        }
        expect.check(worst <= 1e-5 * max(scale, 1), "updated backbone differs by \(worst)")
        // This rank's head rows against the same rows of the single-process head.
        let partition = try ClassPartition(totalClasses: classes, parts: world.size)
        let range = partition.range(of: world.rank)
        var headWorst: Float = 0
        for (k, row) in range.enumerated() {
            for c in 0..<6 { headWorst = max(headWorst, abs(parallel.head[k * 6 + c] - single.head[row * 6 + c])) }
        }
        expect.check(headWorst <= 1e-5, "updated head rows differ by \(headWorst)")
    },
]
