// Class partitions, Partial FC sampling, sparse updates and the head's input checks.
import Collectives
import Heads
import Tensors
import XCTest

final class HeadBehaviourTests: XCTestCase {
    func testPartitionRangesAreContiguousEvenAndOwned() throws {
        for (classes, parts) in [(13, 4), (205_990, 8), (7, 7), (10, 3)] {
            let partition = try ClassPartition(totalClasses: classes, parts: parts)
            var next = 0
            for r in 0..<parts {
                let range = partition.range(of: r)
                XCTAssertEqual(range.lowerBound, next)
                XCTAssertTrue(range.count == classes / parts || range.count == classes / parts + 1)
                XCTAssertEqual(range.count, classes / parts + (r < classes % parts ? 1 : 0))
                for c in [range.lowerBound, range.upperBound - 1] { XCTAssertEqual(partition.owner(of: c), r) }
                next = range.upperBound
            }
            XCTAssertEqual(next, classes)
        }
        XCTAssertThrowsError(try ClassPartition(totalClasses: 3, parts: 4)) { error in
            XCTAssertTrue("\(error)".contains("3 classes cannot be partitioned over 4 ranks"), "\(error)")
        }
    }

    private struct Batch {
        var embeddings: [Float], norms: [Float], labels: [Int32]
    }

    private func batch(n: Int, d: Int, classes: Int, seed: UInt64) -> Batch {
        var rng = SplitMix64(seed: seed)
        var e = [Float](repeating: 0, count: n * d)
        for i in 0..<n {
            var norm: Float = 0
            for j in 0..<d { e[i * d + j] = rng.nextNormal(); norm += e[i * d + j] * e[i * d + j] }
            for j in 0..<d { e[i * d + j] /= norm.squareRoot() }
        }
        return Batch(embeddings: e, norms: (0..<n).map { _ in 5 + 30 * rng.nextUniform() },
                     labels: (0..<n).map { _ in Int32(rng.next() % UInt64(classes)) })
    }

    private func run(_ head: PartitionedSoftmaxHead, _ b: Batch, step: Int = 0) throws -> (HeadStepResult, [Float]) {
        let d = head.configuration.embeddingSize, n = b.labels.count
        var grad = [Float](repeating: 0, count: n * d)
        let result = try grad.withUnsafeMutableBufferPointer {
            try head.step(embeddings: b.embeddings, norms: b.norms, labels: b.labels, batch: n, step: step,
                          gradEmbeddings: $0.baseAddress!)
        }
        return (result, grad)
    }

    func testSamplingEverythingEqualsTheFullSoftmax() throws {
        let b = batch(n: 8, d: 16, classes: 40, seed: 1)
        let full = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: 40, embeddingSize: 16, seed: 3),
                                              group: SingleProcessGroup())
        // ⌈0.999·40⌉ = 40: the sampler runs but keeps every class.
        let sampled = try PartitionedSoftmaxHead(
            configuration: HeadConfiguration(totalClasses: 40, embeddingSize: 16, sampleRate: 0.999, seed: 3),
            group: SingleProcessGroup())
        let (a, gradA) = try run(full, b)
        let (s, gradS) = try run(sampled, b)
        XCTAssertEqual(s.activeClasses, 40)
        XCTAssertEqual(a.loss, s.loss, accuracy: 1e-6)
        for i in 0..<gradA.count { XCTAssertEqual(gradA[i], gradS[i], accuracy: 1e-6) }
        XCTAssertEqual(full.shardGradient(), sampled.shardGradient())
    }

    func testPartialFCKeepsPositivesUpdatesOnlySampledRowsAndIsReproducible() throws {
        let classes = 100, d = 8
        let b = batch(n: 12, d: d, classes: classes, seed: 4)
        let config = HeadConfiguration(totalClasses: classes, embeddingSize: d, sampleRate: 0.2, seed: 9)
        let head = try PartitionedSoftmaxHead(configuration: config, group: SingleProcessGroup())
        let before = head.kernel.array
        let (result, _) = try run(head, b, step: 5)
        XCTAssertEqual(result.activeClasses, 20, "⌈0.2·100⌉ classes")
        let kept = Set(head.lastActiveRows)
        for label in b.labels { XCTAssertTrue(kept.contains(Int(label)), "positive \(label) kept") }
        head.applySGD(learningRate: 0.1)
        let after = head.kernel.array, velocity = head.velocity.array
        for row in 0..<classes {
            let changed = (0..<d).contains { after[row * d + $0] != before[row * d + $0] }
            let moving = (0..<d).contains { velocity[row * d + $0] != 0 }
            XCTAssertEqual(changed, kept.contains(row), "row \(row): updated iff sampled")
            XCTAssertEqual(moving, kept.contains(row), "row \(row): momentum touched iff sampled")
        }
        // Same seed and step, same sample; another step, another sample.
        let twin = try PartitionedSoftmaxHead(configuration: config, group: SingleProcessGroup())
        _ = try run(twin, b, step: 5)
        XCTAssertEqual(twin.lastActiveRows, head.lastActiveRows)
        _ = try run(twin, b, step: 6)
        XCTAssertNotEqual(twin.lastActiveRows, head.lastActiveRows)
    }

    func testLabelsOutsideTheClassRangeAreRejected() throws {
        let head = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: 10, embeddingSize: 4),
                                              group: SingleProcessGroup())
        var b = batch(n: 4, d: 4, classes: 10, seed: 2)
        b.labels[2] = 10
        XCTAssertThrowsError(try run(head, b)) { error in
            XCTAssertTrue("\(error)".contains("label 10 of sample 2 on rank 0 is outside [0, 10)"), "\(error)")
        }
        b.labels[2] = -1
        XCTAssertThrowsError(try run(head, b))
    }

    func testInvalidSampleRateIsRejected() {
        for rate in [0.0, -0.5, 1.5] {
            XCTAssertThrowsError(try PartitionedSoftmaxHead(
                configuration: HeadConfiguration(totalClasses: 10, embeddingSize: 4, sampleRate: rate),
                group: SingleProcessGroup()))
        }
    }

    func testInitialKernelRowsAreUnitAndIndependentOfThePartition() throws {
        let head = try PartitionedSoftmaxHead(configuration: HeadConfiguration(totalClasses: 6, embeddingSize: 5, seed: 8),
                                              group: SingleProcessGroup())
        for row in 0..<6 {
            let norm = (0..<5).reduce(Float(0)) { $0 + head.kernel.data[row * 5 + $1] * head.kernel.data[row * 5 + $1] }
            XCTAssertEqual(norm, 1, accuracy: 1e-5)
        }
    }

    func testNormStatisticsUpdateBeforeUseWithUnbiasedStd() {
        var stats = FeatureNormStatistics()
        let norms: [Float] = [10, 20, 30, 0.00001, 500]
        let batch = stats.update(norms: norms, count: norms.count)
        let clipped = [10, 20, 30, 0.001, 100.0]
        let mean = clipped.reduce(0, +) / 5
        let std = (clipped.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 4).squareRoot()
        XCTAssertEqual(batch.mean, mean, accuracy: 1e-12)
        XCTAssertEqual(batch.std, std, accuracy: 1e-12)
        XCTAssertEqual(stats.mean, 0.01 * mean + 0.99 * 20, accuracy: 1e-12)
        XCTAssertEqual(stats.std, 0.01 * std + 0.99 * 100, accuracy: 1e-12)
        XCTAssertEqual(stats.normalizedNorm(1e6, h: 0.333), 0.333 * (100 - stats.mean) / (stats.std + 1e-3), accuracy: 1e-12)
    }
}
