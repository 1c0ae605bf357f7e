// The prefetching loader: decode threads fill a ring of batch buffers ahead of the trainer, in the
// engine's layout (NHWC float, BGR, (x/255 − 0.5)/0.5). Every sample is a pure function of (seed,
// epoch, index) — its augmentation stream and, for a bad record, its replacement — so a batch is the
// same whatever the thread timing or the number of decode threads.
import Foundation
import Tensors

public struct LoaderConfiguration: Sendable {
    public var threads: Int
    /// Batches prepared ahead of the one the trainer is using.
    public var queueDepth: Int
    public var augmentation: AugmentationPolicy
    public var seed: UInt64
    public var imageSize: Int
    /// The run stops with an error once more than this fraction of the records read were bad; the
    /// fraction is judged over at least `min(256, the rank's samples per epoch)` records, so a few
    /// bad records at the start of an epoch do not stop a run whose data is mostly sound.
    public var maxBadFraction: Double

    public init(threads: Int = 2, queueDepth: Int = 2, augmentation: AugmentationPolicy = .adaFace, seed: UInt64 = 0,
                imageSize: Int = 112, maxBadFraction: Double = 0.01) {
        self.threads = threads; self.queueDepth = queueDepth; self.augmentation = augmentation; self.seed = seed
        self.imageSize = imageSize; self.maxBadFraction = maxBadFraction
    }
}

/// A batch ready for the trainer. `images` stays valid until `BatchLoader.release()`.
public struct LoadedBatch {
    public let epoch: Int
    public let step: Int
    public let images: UnsafePointer<Float>
    public let labels: [Int32]
    /// The data-set indices actually used (a bad record's replacement, where one was needed).
    public let indices: [Int]
    /// The bad records skipped while filling this batch, in sample order (each one was replaced).
    public let skipped: [SkippedRecord]
}

/// A record the loader could not use, and why.
public struct SkippedRecord: Sendable, Equatable {
    /// The data-set index of the bad record.
    public let index: Int
    public let reason: DataError.Reason
    public let message: String
}

/// More bad records than `LoaderConfiguration.maxBadFraction` allows.
public struct BadRecordLimitExceeded: Error, CustomStringConvertible, Sendable {
    public let badRecords: Int
    public let recordsRead: Int
    public let allowedFraction: Double
    public let source: String
    public let summary: String

    public var description: String {
        String(format: "%d of %d records read from %@ were bad (%.2f%%), above the allowed %.2f%%: %@",
               badRecords, recordsRead, source, 100 * Double(badRecords) / Double(max(recordsRead, 1)),
               100 * allowedFraction, summary)
    }
}

public struct LoaderStatistics: Sendable {
    public var samples = 0
    public var badRecords = 0
    public var badByReason: [DataError.Reason: Int] = [:]
    /// Summed over decode threads.
    public var decodeSeconds = 0.0
    /// Time the trainer spent blocked in `next()`.
    public var waitSeconds = 0.0
    public var batchesDelivered = 0

    public var summary: String {
        let reasons = badByReason.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }
        return "\(samples) samples, \(badRecords) bad records replaced" + (reasons.isEmpty ? "" : " (\(reasons.joined(separator: ", ")))")
    }
}

public final class BatchLoader {
    public let source: SampleSource
    public let sampler: DistributedSampler
    public let configuration: LoaderConfiguration

    private final class Slot {
        let images: Tensor
        var labels: [Int32]
        var indices: [Int]
        /// Bad records met while loading each position of the batch.
        var skipped: [[SkippedRecord]]
        var filled = 0
        var step = -1
        init(batch: Int, size: Int) {
            images = Tensor(shape: [batch, size, size, 3])
            labels = [Int32](repeating: 0, count: batch)
            indices = [Int](repeating: 0, count: batch)
            skipped = [[SkippedRecord]](repeating: [], count: batch)
        }
    }

    private let condition = NSCondition()
    private var slots: [Slot]
    private var epoch = 0
    private var firstStep = 0
    private var nextJob = 0
    private var delivered = 0          // batches handed to the trainer since `start`
    private var released = 0           // batches the trainer gave back
    private var epochIndices: [Int32] = []
    private var running = false
    private var workersAlive = 0
    private var failure: Error?
    private var stats = LoaderStatistics()

    public init(source: SampleSource, sampler: DistributedSampler, configuration: LoaderConfiguration) {
        precondition(configuration.threads >= 1 && configuration.queueDepth >= 1, "loader needs threads and a queue")
        self.source = source
        self.sampler = sampler
        self.configuration = configuration
        slots = (0...configuration.queueDepth).map { _ in Slot(batch: sampler.localBatch, size: configuration.imageSize) }
    }

    public var statistics: LoaderStatistics {
        condition.lock(); defer { condition.unlock() }
        return stats
    }

    /// Starts producing the batches of `epoch` from `step` on (a resumed run passes its step).
    public func start(epoch: Int, fromStep step: Int = 0) {
        stop()
        precondition(step >= 0 && step <= sampler.stepsPerEpoch, "start step outside the epoch")
        let order = sampler.permutation(epoch: epoch)
        var mine = [Int32](repeating: 0, count: sampler.stepsPerEpoch * sampler.localBatch)
        for s in 0..<sampler.stepsPerEpoch {
            let block = sampler.indices(step: s, in: order)
            for k in 0..<block.count { mine[s * sampler.localBatch + k] = Int32(block[k]) }
        }
        condition.lock()
        self.epoch = epoch
        firstStep = step
        nextJob = 0
        delivered = 0
        released = 0
        epochIndices = mine
        for slot in slots { slot.filled = 0; slot.step = -1 }
        running = true
        failure = nil
        workersAlive = configuration.threads
        condition.unlock()
        // Workers hold the loader until the epoch ends or `stop()`; an owner that drops the loader
        // mid-epoch must call `stop()` first.
        for worker in 0..<configuration.threads {
            let thread = Thread { self.work(worker) }
            thread.name = "adaface-loader-\(worker)"
            thread.start()
        }
    }

    /// Stops the decode threads (waits for them).
    public func stop() {
        condition.lock()
        running = false
        condition.broadcast()
        while workersAlive > 0 { condition.wait() }
        condition.unlock()
    }

    /// Steps left in the epoch from where the loader stands.
    public var remainingSteps: Int { sampler.stepsPerEpoch - firstStep - delivered }

    /// The next batch, in step order. Blocks until it is ready; throws when too many records were bad.
    public func next() throws -> LoadedBatch {
        let started = DispatchTime.now().uptimeNanoseconds
        condition.lock()
        defer { condition.unlock() }
        precondition(delivered == released, "release() the previous batch before asking for the next")
        guard firstStep + delivered < sampler.stepsPerEpoch else {
            throw DataError(.emptyDataSet, "the epoch has no steps left")
        }
        let slot = slots[delivered % slots.count]
        while failure == nil && !(slot.filled == sampler.localBatch && slot.step == firstStep + delivered) {
            condition.wait()
        }
        if let failure { throw failure }
        stats.waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9
        stats.batchesDelivered += 1
        delivered += 1
        return LoadedBatch(epoch: epoch, step: slot.step, images: UnsafePointer(slot.images.data),
                           labels: slot.labels, indices: slot.indices, skipped: slot.skipped.flatMap { $0 })
    }

    /// Gives the last batch's buffer back to the decode threads.
    public func release() {
        condition.lock()
        released = delivered
        condition.broadcast()
        condition.unlock()
    }

    // MARK: - Decode threads

    private func work(_ worker: Int) {
        let size = configuration.imageSize
        let pixels = UnsafeMutablePointer<UInt8>.allocate(capacity: size * size * 3)
        defer {
            pixels.deallocate()
            condition.lock(); workersAlive -= 1; condition.broadcast(); condition.unlock()
        }
        let augmenter = Augmenter(policy: configuration.augmentation, size: size)
        guard let decoder = try? ImageDecoder() else {
            condition.lock(); failure = DataError(.undecodable, "cannot create an image decoder"); condition.broadcast(); condition.unlock()
            return
        }
        let batch = sampler.localBatch
        let judgedOver = Double(min(256, sampler.stepsPerEpoch * batch))
        while true {
            // Claim the next sample whose batch has a free slot.
            condition.lock()
            var job = -1
            while running && failure == nil {
                let batchOffset = nextJob / batch
                let step = firstStep + batchOffset
                if step >= sampler.stepsPerEpoch { break }
                if batchOffset < released + slots.count {
                    job = nextJob
                    nextJob += 1
                    let slot = slots[batchOffset % slots.count]
                    if job % batch == 0 { slot.filled = 0; slot.step = step }
                    break
                }
                condition.wait()
            }
            let epoch = self.epoch
            let index = job >= 0 ? Int(epochIndices[(firstStep + job / batch) * batch + job % batch]) : -1
            condition.unlock()
            if job < 0 { return }

            let started = DispatchTime.now().uptimeNanoseconds
            let slot = slots[(job / batch) % slots.count]
            let k = job % batch
            let outcome = loadSample(index, epoch: epoch, decoder: decoder, augmenter: augmenter, pixels: pixels,
                                     into: slot.images.data + k * size * size * 3)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9

            condition.lock()
            stats.decodeSeconds += seconds
            stats.samples += 1
            for record in outcome.failures {
                stats.badRecords += 1
                stats.badByReason[record.reason, default: 0] += 1
            }
            slot.skipped[k] = outcome.failures
            if let used = outcome.used {
                slot.labels[k] = Int32(used.label)
                slot.indices[k] = used.index
            } else if failure == nil {
                failure = DataError(.undecodable, "sample \(index) and all its replacements in \(source.name) are bad")
            }
            // Every sample reads one good record after its bad ones.
            let read = stats.samples + stats.badRecords
            if Double(stats.badRecords) > configuration.maxBadFraction * max(Double(read), judgedOver), failure == nil {
                failure = BadRecordLimitExceeded(badRecords: stats.badRecords, recordsRead: read,
                                                 allowedFraction: configuration.maxBadFraction, source: source.name,
                                                 summary: stats.summary)
            }
            slot.filled += 1
            if slot.filled == batch || failure != nil { condition.broadcast() }
            condition.unlock()
        }
    }

    /// Decodes, augments and normalises sample `index`; a bad record is replaced by a deterministic
    /// sequence of other samples. Returns the sample used and the records skipped.
    private func loadSample(_ index: Int, epoch: Int, decoder: ImageDecoder, augmenter: Augmenter,
                            pixels: UnsafeMutablePointer<UInt8>, into output: UnsafeMutablePointer<Float>)
        -> (used: (index: Int, label: Int)?, failures: [SkippedRecord]) {
        let size = configuration.imageSize
        var failures: [SkippedRecord] = []
        var candidate = index
        var replacements = SplitMix64(seed: configuration.seed, 0x5245_504C, UInt64(epoch) << 32 | UInt64(index))
        for _ in 0..<16 {
            do {
                let label = try source.label(of: candidate)
                try source.withEncodedImage(candidate) { bytes in
                    do {
                        try decoder.decode(bytes, into: UnsafeMutableBufferPointer(start: pixels, count: size * size * 3),
                                           expectedWidth: size, expectedHeight: size)
                    } catch let error as ImageDecodingError {
                        throw DataError(error.reason == .wrongSize ? .wrongSize : .undecodable,
                                        "\(source.recordDescription(candidate)): \(error)")
                    }
                }
                _ = augmenter.apply(pixels, seed: configuration.seed, epoch: epoch, index: candidate)
                InputNormalization.normalize(bgr: pixels, count: size * size * 3, into: output)
                return ((candidate, label), failures)
            } catch let error as DataError {
                failures.append(SkippedRecord(index: candidate, reason: error.reason, message: error.message))
            } catch {
                failures.append(SkippedRecord(index: candidate, reason: .unreadable,
                                              message: "\(source.recordDescription(candidate)): \(error)"))
            }
            candidate = Int(replacements.next() % UInt64(source.count))
        }
        return (nil, failures)
    }
}
