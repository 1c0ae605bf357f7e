// The class-partitioned head on P ranks against the same head on one process with the whole global
// batch: loss, embedding gradients, reassembled kernel gradients and the norm EMA.
import Collectives
import Foundation
import Heads
import Tensors

/// A global batch every rank can rebuild from the seed.
struct GlobalBatch {
    let embeddings: [Float], norms: [Float], labels: [Int32]

    init(n: Int, d: Int, labelRange: Range<Int>, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var e = [Float](repeating: 0, count: n * d)
        for i in 0..<n {
            var norm: Float = 0
            for j in 0..<d { e[i * d + j] = rng.nextNormal(); norm += e[i * d + j] * e[i * d + j] }
            for j in 0..<d { e[i * d + j] /= norm.squareRoot() }
        }
        embeddings = e
        norms = (0..<n).map { _ in 2 + 40 * rng.nextUniform() }
        labels = (0..<n).map { _ in Int32(labelRange.lowerBound + Int(rng.next() % UInt64(labelRange.count))) }
    }
}

private func runHead(_ head: PartitionedSoftmaxHead, _ e: ArraySlice<Float>, _ n: ArraySlice<Float>,
                     _ labels: ArraySlice<Int32>, step: Int = 0) throws -> (HeadStepResult, [Float]) {
    let d = head.configuration.embeddingSize
    var grad = [Float](repeating: 0, count: labels.count * d)
    let result = try Array(e).withUnsafeBufferPointer { ep in
        try Array(n).withUnsafeBufferPointer { np in
            try Array(labels).withUnsafeBufferPointer { lp in
                try grad.withUnsafeMutableBufferPointer {
                    try head.step(embeddings: ep.baseAddress!, norms: np.baseAddress!, labels: lp.baseAddress!,
                                  batch: labels.count, step: step, gradEmbeddings: $0.baseAddress!)
                }
            }
        }
    }
    return (result, grad)
}

private func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    var diff = 0.0, norm = 0.0
    for i in 0..<min(a.count, b.count) { diff += Double(a[i] - b[i]) * Double(a[i] - b[i]); norm += Double(b[i]) * Double(b[i]) }
    return a.count == b.count ? diff.squareRoot() / max(norm.squareRoot(), 1e-12) : .infinity
}

/// One step on the world against one step on a single process; checks every output.
private func checkPartitionInvariance(_ world: Communicator, _ expect: Expectations, margin: MarginPolicy,
                                      classes: Int, labelRange: Range<Int>, seed: UInt64) throws {
    let d = 8, b = 3, n = b * world.size
    let global = GlobalBatch(n: n, d: d, labelRange: labelRange, seed: seed)
    let config = HeadConfiguration(totalClasses: classes, embeddingSize: d, margin: margin, seed: seed)
    let reference = try PartitionedSoftmaxHead(configuration: config, group: SingleProcessGroup())
    let (expected, expectedGrad) = try runHead(reference, global.embeddings[...], global.norms[...], global.labels[...])

    let head = try PartitionedSoftmaxHead(configuration: config, group: world)
    let rows = (world.rank * b)..<((world.rank + 1) * b)
    let (result, grad) = try runHead(head, global.embeddings[(rows.lowerBound * d)..<(rows.upperBound * d)],
                                     global.norms[rows], global.labels[rows])
    let tag = "\(margin.name), \(classes) classes"
    expect.near(result.loss, expected.loss, tolerance: 1e-5, "\(tag): loss")
    // Each rank's gradient carries the factor P that the backbone's averaging all-reduce removes.
    let unscaled = grad.map { $0 / Float(world.size) }
    let expectedRows = Array(expectedGrad[(rows.lowerBound * d)..<(rows.upperBound * d)])
    expect.check(relativeError(unscaled, expectedRows) < 1e-4,
                 "\(tag): embedding gradient error \(relativeError(unscaled, expectedRows))")
    var assembled = [Float](repeating: 0, count: classes * d)
    let counts = (0..<world.size).map { head.partition.range(of: $0).count * d }
    try head.shardGradient().withUnsafeBufferPointer { shard in
        try assembled.withUnsafeMutableBufferPointer { try world.allGatherV(shard.baseAddress!, counts: counts, into: $0.baseAddress!) }
    }
    let expectedKernel = reference.shardGradient()
    expect.check(relativeError(assembled, expectedKernel) < 1e-4,
                 "\(tag): kernel gradient error \(relativeError(assembled, expectedKernel))")
    // The EMA: close to the single-process value, and bit-identical on every rank.
    expect.near(result.normStatistics.mean, expected.normStatistics.mean, tolerance: 1e-9, "\(tag): μ")
    expect.near(result.normStatistics.std, expected.normStatistics.std, tolerance: 1e-9, "\(tag): σ")
    let mine = [result.normStatistics.mean.bitPattern, result.normStatistics.std.bitPattern]
    var everyone = [UInt64](repeating: 0, count: 2 * world.size)
    try mine.withUnsafeBufferPointer { src in
        try everyone.withUnsafeMutableBufferPointer { try world.allGather(src.baseAddress!, count: 2, into: $0.baseAddress!) }
    }
    for r in 0..<world.size {
        expect.check(everyone[2 * r] == mine[0] && everyone[2 * r + 1] == mine[1], "\(tag): EMA on rank \(r) differs bitwise")
    }
}

let headTests: [MPITest] = [
    MPITest("partitioned AdaFace head equals the single-process head (uneven split)") { world, expect in
        try checkPartitionInvariance(world, expect, margin: .adaFaceDefault, classes: 13, labelRange: 0..<13, seed: 1)
    },
    MPITest("partitioned head with ranks that own no label of the batch") { world, expect in
        // Labels in [0, 3): with 13 classes every rank but the first owns none of them.
        try checkPartitionInvariance(world, expect, margin: .adaFaceDefault, classes: 13, labelRange: 0..<3, seed: 2)
    },
    MPITest("partitioned ArcFace and CosFace heads equal the single-process head") { world, expect in
        try checkPartitionInvariance(world, expect, margin: .arcFaceDefault, classes: 11, labelRange: 0..<11, seed: 3)
        try checkPartitionInvariance(world, expect, margin: .cosFaceDefault, classes: 11, labelRange: 0..<11, seed: 4)
    },
    MPITest("Partial FC keeps every positive of the global batch on its owner") { world, expect in
        let d = 8, b = 4, classes = 40
        let global = GlobalBatch(n: b * world.size, d: d, labelRange: 0..<classes, seed: 5)
        let head = try PartitionedSoftmaxHead(
            configuration: HeadConfiguration(totalClasses: classes, embeddingSize: d, sampleRate: 0.3, seed: 6), group: world)
        let rows = (world.rank * b)..<((world.rank + 1) * b)
        _ = try runHead(head, global.embeddings[(rows.lowerBound * d)..<(rows.upperBound * d)], global.norms[rows],
                        global.labels[rows], step: 3)
        let kept = Set(head.lastActiveRows.map { $0 + head.classRange.lowerBound })
        for label in global.labels where head.classRange.contains(Int(label)) {
            expect.check(kept.contains(Int(label)), "positive \(label) was not sampled on its owner")
        }
        let positives = Set(global.labels.map(Int.init).filter(head.classRange.contains)).count
        let target = Int((0.3 * Double(head.classRange.count)).rounded(.up))
        expect.equal(head.lastActiveRows.count, max(positives, target), "sampled row count")
    },
    MPITest("mismatched local batch sizes are an error on every rank") { world, expect in
        let d = 4, classes = 10
        let b = world.rank == 0 ? 3 : 2
        let global = GlobalBatch(n: 3, d: d, labelRange: 0..<classes, seed: 7)
        let head = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: classes, embeddingSize: d),
                                              group: world)
        do {
            _ = try runHead(head, global.embeddings[0..<(b * d)], global.norms[0..<b], global.labels[0..<b])
            expect.check(world.size == 1, "different batch sizes were accepted")
        } catch let error as HeadError {
            expect.check("\(error)".contains("disagree on the local batch size"), "unexpected message: \(error)")
        }
    },
    MPITest("a world larger than the class count is refused", minimumRanks: 2) { world, expect in
        do {
            _ = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: world.size - 1, embeddingSize: 4),
                                           group: world)
            expect.fail("a head with fewer classes than ranks was built")
        } catch let error as HeadError {
            expect.check("\(error)".contains("cannot be partitioned"), "unexpected message: \(error)")
        }
    },
]
