// Gradient buckets all-reduced during backward give every rank the average of the ranks' gradients,
// exactly as one blocking all-reduce after backward would.
import Collectives
import Foundation
import Layers
import Tensors
import Training

let bucketTests: [MPITest] = [
    MPITest("bucketed all-reduce overlapped with backward averages the gradients") { world, expect in
        let config = IResNetConfiguration(unitsPerStage: [2, 1], stageWidths: [4, 8], inputSize: 8, embeddingSize: 6)
        let net = IResNet(configuration: config)
        let batch = 3
        net.prepare(batchCapacity: batch)
        // Different data on every rank, the same weights everywhere.
        var rng = SplitMix64(seed: 40, UInt64(world.rank))
        for i in 0..<net.input.count { net.input.data[i] = rng.nextUniform() * 2 - 1 }
        let upstream = (0..<(batch * 6)).map { _ in rng.nextNormal() }

        // Reference: this rank's gradients, then one blocking all-reduce.
        net.forward(batch: batch, training: true)
        upstream.withUnsafeBufferPointer { net.backward(gradEmbeddings: $0.baseAddress!) }
        var reference = Array(UnsafeBufferPointer(start: net.store.gradients, count: net.store.parameterCount))
        try world.allReduce(&reference, .sum)

        // Tiny buckets, so that several all-reduces are in flight during backward.
        let buckets = GradientBuckets(store: net.store, group: world, bucketBytes: 512, firstBucketBytes: 128)
        expect.check(buckets.buckets.count > 4, "several buckets (\(buckets.buckets.count))")
        expect.equal(buckets.buckets.first?.range.upperBound, net.store.parameterCount, "the first bucket ends the arena")
        expect.equal(buckets.buckets.last?.range.lowerBound, 0, "the last bucket starts it")
        for (a, b) in zip(buckets.buckets, buckets.buckets.dropFirst()) {
            expect.equal(b.range.upperBound, a.range.lowerBound, "buckets tile the arena in reverse order")
        }
        var readyCalls = 0
        net.gradientsReady = { offset in
            try? buckets.gradientsReady(fromOffset: offset)
            readyCalls += 1
        }
        net.forward(batch: batch, training: true)
        buckets.beginBackward()
        upstream.withUnsafeBufferPointer { net.backward(gradEmbeddings: $0.baseAddress!) }
        try buckets.finish()
        expect.equal(readyCalls, 5, "one call after the output layer, one per unit, one after the input layer")
        var worst: Float = 0
        for i in 0..<reference.count {
            worst = max(worst, abs(net.store.gradients[i] - reference[i] / Float(world.size)))
        }
        expect.check(worst <= 1e-6, "bucketed average differs from the blocking one by \(worst)")
    },
    MPITest("the progress thread completes the all-reduces while the main thread makes no MPI call") { world, expect in
        let config = IResNetConfiguration(unitsPerStage: [1, 1], stageWidths: [4, 8], inputSize: 8, embeddingSize: 6)
        let net = IResNet(configuration: config)
        net.prepare(batchCapacity: 2)
        var rng = SplitMix64(seed: 41, UInt64(world.rank))
        for i in 0..<net.store.parameterCount { net.store.gradients[i] = rng.nextNormal() }
        var expected = Array(UnsafeBufferPointer(start: net.store.gradients, count: net.store.parameterCount))
        try world.allReduce(&expected, .sum)
        let buckets = GradientBuckets(store: net.store, group: world, bucketBytes: 256, firstBucketBytes: 64)
        expect.equal(buckets.usesProgressThread, world.size > 1, "a progress thread exactly when there are peers")
        buckets.beginBackward()
        try buckets.gradientsReady(fromOffset: 0)
        // Only sleeping here: the buckets must complete on the progress thread alone.
        var waited = 0
        while !buckets.allReduced && waited < 3000 { usleep(10_000); waited += 1 }
        expect.check(buckets.allReduced, "every bucket reduced before finish() (\(buckets.buckets.count) buckets)")
        try buckets.finish()
        var worst: Float = 0
        for i in 0..<expected.count { worst = max(worst, abs(net.store.gradients[i] - expected[i] / Float(world.size))) }
        expect.check(worst <= 1e-6, "averages differ from a blocking all-reduce by \(worst)")
        // A second step reuses the thread.
        buckets.beginBackward()
        try buckets.finish()
        expect.check(buckets.allReduced, "the second step completes too")
    },
]
