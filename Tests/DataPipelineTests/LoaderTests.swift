// The distributed sampler (coverage, resume) and the prefetching loader (determinism across thread
// counts, bad records replaced and counted, the bad-fraction abort).
import DataPipeline
import Tensors
import XCTest

/// Encoded images in memory; `corrupt` indices hold truncated JPEGs.
final class InMemorySource: SampleSource {
    let images: [[UInt8]]
    let labels: [Int]
    let classCount: Int
    var count: Int { images.count }
    var name: String { "in-memory set" }

    init(count: Int, classes: Int, size: Int = 112, corrupt: Set<Int> = [], seed: UInt64 = 1) throws {
        var rng = SplitMix64(seed: seed)
        var images: [[UInt8]] = []
        for i in 0..<count {
            // A smooth pattern per sample, so crops and resizes change it visibly.
            let phase = Int(rng.next() % 97)
            let pixels = (0..<(size * size * 3)).map { p in
                UInt8(truncatingIfNeeded: ((p / 3) % size + (p / (3 * size)) * 2 + phase + 60 * (p % 3)) & 0xFF)
            }
            var bytes = try pixels.withUnsafeBufferPointer { try ImageEncoder.jpeg(bgr: $0, width: size, height: size, quality: 90) }
            if corrupt.contains(i) { bytes = Array(bytes.prefix(bytes.count / 3)) }
            images.append(bytes)
        }
        self.images = images
        labels = (0..<count).map { $0 % classes }
        classCount = classes
    }

    func label(of index: Int) throws -> Int {
        guard index >= 0 && index < count else { throw DataError(.indexOutOfRange, "no sample \(index)") }
        return labels[index]
    }

    func withEncodedImage<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        try images[index].withUnsafeBytes(body)
    }
}

final class LoaderTests: XCTestCase {
    func testRanksTogetherSeeEveryKeptIndexOnceAndResumeIsExact() throws {
        let size = 103, batch = 4
        for world in 1...4 {
            let samplers = try (0..<world).map {
                try DistributedSampler(datasetSize: size, worldSize: world, rank: $0, localBatch: batch, seed: 7)
            }
            let order = samplers[0].permutation(epoch: 3)
            XCTAssertEqual(Set(order.map(Int.init)), Set(0..<size), "a permutation")
            var seen: [Int] = []
            for step in 0..<samplers[0].stepsPerEpoch {
                for sampler in samplers { seen += sampler.indices(step: step, in: order) }
            }
            let kept = samplers[0].stepsPerEpoch * batch * world
            XCTAssertEqual(seen.count, kept)
            XCTAssertEqual(Set(seen), Set(order.prefix(kept).map(Int.init)), "every kept index exactly once (world \(world))")
            XCTAssertEqual(Set(seen).count, seen.count)
            XCTAssertNotEqual(samplers[0].permutation(epoch: 4), order, "epochs reshuffle")
        }
        XCTAssertThrowsError(try DistributedSampler(datasetSize: 7, worldSize: 2, rank: 0, localBatch: 4, seed: 1))
    }

    private func collect(_ loader: BatchLoader, epoch: Int, from step: Int, steps: Int) throws -> [([Float], [Int32], [Int])] {
        loader.start(epoch: epoch, fromStep: step)
        defer { loader.stop() }
        var out: [([Float], [Int32], [Int])] = []
        let floats = loader.sampler.localBatch * 112 * 112 * 3
        for _ in 0..<steps {
            let b = try loader.next()
            out.append((Array(UnsafeBufferPointer(start: b.images, count: floats)), b.labels, b.indices))
            loader.release()
        }
        return out
    }

    func testBatchesDoNotDependOnTheThreadCountAndResumeMidEpoch() throws {
        let source = try InMemorySource(count: 40, classes: 5)
        let sampler = try DistributedSampler(datasetSize: 40, worldSize: 2, rank: 1, localBatch: 3, seed: 11)
        let one = BatchLoader(source: source, sampler: sampler,
                              configuration: LoaderConfiguration(threads: 1, queueDepth: 1, seed: 5))
        let four = BatchLoader(source: source, sampler: sampler,
                               configuration: LoaderConfiguration(threads: 4, queueDepth: 3, seed: 5))
        let a = try collect(one, epoch: 2, from: 0, steps: sampler.stepsPerEpoch)
        let b = try collect(four, epoch: 2, from: 0, steps: sampler.stepsPerEpoch)
        XCTAssertEqual(a.count, 6)
        for s in 0..<a.count {
            XCTAssertEqual(a[s].0, b[s].0, "step \(s): images equal with 1 and 4 threads")
            XCTAssertEqual(a[s].1, b[s].1)
            XCTAssertEqual(a[s].2, sampler.indices(step: s, in: sampler.permutation(epoch: 2)))
        }
        let resumed = try collect(four, epoch: 2, from: 4, steps: 2)
        XCTAssertEqual(resumed[0].0, a[4].0, "a resume at step 4 continues exactly")
        XCTAssertEqual(resumed[1].2, a[5].2)
        let otherEpoch = try collect(four, epoch: 3, from: 0, steps: 1)
        XCTAssertNotEqual(otherEpoch[0].2, a[0].2)
    }

    func testBadRecordsAreReplacedAndCounted() throws {
        let source = try InMemorySource(count: 30, classes: 3, corrupt: [2, 7])
        let sampler = try DistributedSampler(datasetSize: 30, worldSize: 1, rank: 0, localBatch: 6, seed: 2)
        let loader = BatchLoader(source: source, sampler: sampler,
                                 configuration: LoaderConfiguration(threads: 2, augmentation: .none, seed: 1, maxBadFraction: 0.5))
        let batches = try collect(loader, epoch: 0, from: 0, steps: 5)
        let used = batches.flatMap(\.2)
        XCTAssertFalse(used.contains(2) || used.contains(7), "corrupt records never reach a batch")
        XCTAssertEqual(used.count, 30, "every batch keeps its size")
        XCTAssertGreaterThanOrEqual(loader.statistics.badRecords, 2)
        XCTAssertEqual(loader.statistics.badByReason[.undecodable], loader.statistics.badRecords)
        for (images, labels, indices) in batches {
            for k in 0..<indices.count { XCTAssertEqual(Int(labels[k]), indices[k] % 3, "the label follows the replacement") }
            XCTAssertTrue(images.allSatisfy { $0 >= -1 && $0 <= 1 })
        }
    }

    func testEachBatchNamesTheBadRecordsItSkipped() throws {
        let source = try InMemorySource(count: 24, classes: 3, corrupt: [4, 9, 17])
        let sampler = try DistributedSampler(datasetSize: 24, worldSize: 1, rank: 0, localBatch: 4, seed: 3)
        let loader = BatchLoader(source: source, sampler: sampler,
                                 configuration: LoaderConfiguration(threads: 2, augmentation: .none, seed: 1, maxBadFraction: 0.5))
        loader.start(epoch: 0)
        defer { loader.stop() }
        var skipped: [SkippedRecord] = []
        for _ in 0..<sampler.stepsPerEpoch {
            let batch = try loader.next()
            skipped += batch.skipped
            XCTAssertFalse(batch.indices.contains { [4, 9, 17].contains($0) })
            loader.release()
        }
        // Every sample is read once per epoch, so each corrupt one is met at least once (replacements
        // may meet them again), and the per-batch reports add up to the loader's count.
        XCTAssertEqual(Set(skipped.map(\.index)), [4, 9, 17])
        XCTAssertEqual(skipped.count, loader.statistics.badRecords)
        for record in skipped {
            XCTAssertEqual(record.reason, .undecodable)
            XCTAssertTrue(record.message.hasPrefix("in-memory set sample \(record.index): "), record.message)
        }
    }

    func testASmallSetIsJudgedOverItsEpochNotOver256Records() throws {
        // 2 bad of 30 (6.7%): more than 5% once an epoch's share (30 records) has been read, well
        // before 256 records; 20% allows it.
        let source = try InMemorySource(count: 30, classes: 3, corrupt: [3, 21])
        let sampler = try DistributedSampler(datasetSize: 30, worldSize: 1, rank: 0, localBatch: 6, seed: 2)
        let strict = BatchLoader(source: source, sampler: sampler,
                                 configuration: LoaderConfiguration(threads: 1, augmentation: .none, maxBadFraction: 0.05))
        XCTAssertThrowsError(try collect(strict, epoch: 0, from: 0, steps: 5)) { error in
            XCTAssertTrue(error is BadRecordLimitExceeded, "\(error)")
            XCTAssertTrue("\(error)".contains("above the allowed 5.00%"), "\(error)")
        }
        let lenient = BatchLoader(source: source, sampler: sampler,
                                  configuration: LoaderConfiguration(threads: 1, augmentation: .none, maxBadFraction: 0.2))
        XCTAssertEqual(try collect(lenient, epoch: 0, from: 0, steps: 5).count, 5)
        // A fraction of 0 tolerates nothing.
        let none = BatchLoader(source: source, sampler: sampler,
                               configuration: LoaderConfiguration(threads: 1, augmentation: .none, maxBadFraction: 0))
        XCTAssertThrowsError(try collect(none, epoch: 0, from: 0, steps: 5))
    }

    func testTooManyBadRecordsAbortWithAClearError() throws {
        let source = try InMemorySource(count: 300, classes: 3, corrupt: Set(stride(from: 0, to: 300, by: 10)))
        let sampler = try DistributedSampler(datasetSize: 300, worldSize: 1, rank: 0, localBatch: 50, seed: 2)
        let loader = BatchLoader(source: source, sampler: sampler,
                                 configuration: LoaderConfiguration(threads: 2, augmentation: .none, maxBadFraction: 0.01))
        XCTAssertThrowsError(try collect(loader, epoch: 0, from: 0, steps: 6)) { error in
            XCTAssertTrue("\(error)".contains("were bad") && "\(error)".contains("above the allowed 1.00%"), "\(error)")
        }
    }
}
