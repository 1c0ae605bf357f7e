// The distributed trainer (DESIGN.md §2): every rank holds a backbone replica and its slice of the
// classifier; a step is load → backbone forward → partitioned AdaFace head → backbone backward with
// bucketed all-reduces overlapped → SGD on the backbone and the head shard. Checkpoints go to shared
// storage; a preemption signal leads to a checkpoint and a clean exit.
import Collectives
import DataPipeline
import Evaluation
import Foundation
import Heads
import Layers
import Serialization
import Tensors

public enum ResumeMode: Equatable, Sendable {
    /// The newest checkpoint that verifies, or a fresh start when there is none.
    case auto
    /// Always a fresh start.
    case none
    /// This checkpoint directory; an error if it does not verify.
    case path(String)
}

public struct TrainingSummary: Sendable {
    public var steps = 0
    public var skippedSteps = 0
    public var lastLoss = Double.nan
    public var firstLoss = Double.nan
    public var lastCheckpoint: String?
    public var stoppedBySignal = false
    public var verification: [(name: String, accuracy: Double, std: Double)] = []
    public var runDirectory = ""
    public var metricsFile = ""
}

public struct TrainingFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class Trainer {
    public let configuration: TrainingConfiguration
    let world: Communicator
    let resume: ResumeMode
    let log: (String) -> Void

    public init(configuration: TrainingConfiguration, world: Communicator, resume: ResumeMode,
                log: @escaping (String) -> Void) {
        self.configuration = configuration
        self.world = world
        self.resume = resume
        self.log = log
    }

    /// Rank 0 speaks; the others stay quiet.
    private func say(_ line: @autoclosure () -> String) { if world.rank == 0 { log(line()) } }

    public func run() throws -> TrainingSummary {
        let config = configuration
        let rank = world.rank, size = world.size
        try agreeOnConfiguration()
        try config.validate(worldSize: size)

        // Threads: the node's cores divided by its ranks, unless the configuration says otherwise.
        let node = try world.splitByNode()
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let threads = config.training.threads > 0 ? config.training.threads : max(1, cores / node.size)
        let loaderThreads = config.data.loaderThreads > 0 ? config.data.loaderThreads : max(1, cores / node.size)
        ComputeThreads.configure(threads)

        // Data.
        let (format, source) = try DataSetInspection.open(config.data.train)
        let classes = config.classCount(datasetClasses: source.classCount)
        try config.validate(datasetClasses: source.classCount, images: source.count, worldSize: size)
        let localBatch = config.localBatch(worldSize: size)
        let sampler = try DistributedSampler(datasetSize: source.count, worldSize: size, rank: rank,
                                             localBatch: localBatch, seed: UInt64(config.seed))
        let stepsPerEpoch = sampler.stepsPerEpoch
        say("data: \(source.name) (\(format.rawValue)), \(source.count) images, \(classes) classes; "
            + "\(size) rank(s) × \(localBatch) = global batch \(sampler.globalBatch), \(stepsPerEpoch) steps per epoch; "
            + "\(threads) compute and \(loaderThreads) loader thread(s) per rank")

        // Model, head, optimizer.
        guard let arch = IResNetArchitecture(name: config.model.arch.rawValue) else {
            throw TrainingFailure("model.arch: unknown architecture \(config.model.arch.rawValue)")
        }
        var netConfig = IResNetConfiguration(arch)
        netConfig.dropout = Float(config.model.dropout)
        netConfig.embeddingSize = config.model.embeddingSize
        let net = IResNet(configuration: netConfig)
        var initRNG = SplitMix64(seed: UInt64(config.seed), 0x4E45_5457)
        net.resetParameters(&initRNG)
        net.prepare(batchCapacity: localBatch)
        let sgd = SGD(store: net.store, momentum: Float(config.optimizer.momentum),
                      weightDecay: Float(config.optimizer.weightDecay))
        let head = try PartitionedSoftmaxHead(configuration: HeadConfiguration(
            totalClasses: classes, embeddingSize: config.model.embeddingSize, margin: marginPolicy(config.head),
            scale: config.head.s, sampleRate: config.head.sampleRate, seed: UInt64(config.seed)), group: world)
        let schedule = LearningRateSchedule(configuration: config, stepsPerEpoch: stepsPerEpoch)
        let buckets = GradientBuckets(store: net.store, group: world,
                                      bucketBytes: Int(config.training.bucketMB * 1_048_576),
                                      firstBucketBytes: Int(config.training.firstBucketMB * 1_048_576))
        net.gradientsReady = { [buckets] offset in
            // Errors here surface again in `finish()`, which waits for every bucket.
            try? buckets.gradientsReady(fromOffset: offset)
        }

        // The run folder: resolved configuration and world size (rank 0), metrics (every rank).
        let runDirectory = config.runDir
        try FileManager.default.createDirectory(atPath: runDirectory + "/metrics", withIntermediateDirectories: true)
        if rank == 0 {
            try AtomicFile.write(Array(config.resolvedJSON().utf8), to: runDirectory + "/config.resolved.json")
            try AtomicFile.write(Array("{\"world_size\": \(size), \"threads_per_rank\": \(threads)}\n".utf8),
                                 to: runDirectory + "/world.json")
        }
        let metrics = try MetricsLog(path: runDirectory + "/metrics/rank-\(String(format: "%05d", rank)).jsonl")

        // Start: a checkpoint, or rank 0's initial parameters everywhere.
        var globalStep = 0, epoch = 0, stepInEpoch = 0, samplesSeen = 0
        var counters: [String: Int] = [:]
        let checkpointRoot = config.checkpoint.dir
        var resumedFrom: Int?
        if let checkpoint = try checkpointToResume(root: checkpointRoot) {
            try checkpoint.loadBackbone(into: net.store)
            try checkpoint.loadOptimizer(into: sgd, of: net.store)
            try checkpoint.restoreHead(head)
            let state = checkpoint.trainerState
            head.normStatistics.mean = state.normMean
            head.normStatistics.std = state.normStd
            globalStep = state.globalStep
            counters = state.counters
            samplesSeen = state.samplesSeen
            // Position in the epoch in samples, so that another rank count continues at the same place.
            epoch = state.epoch
            stepInEpoch = state.epochSamplesConsumed / sampler.globalBatch
            if state.epochSamplesConsumed % sampler.globalBatch != 0 {
                say("note: the checkpoint's epoch position (\(state.epochSamplesConsumed) samples) is not a multiple of "
                    + "the new global batch; continuing at step \(stepInEpoch) of epoch \(epoch)")
            }
            if stepInEpoch >= stepsPerEpoch { epoch += 1; stepInEpoch = 0 }
            resumedFrom = state.globalStep
            say("resumed from \(checkpoint.directory) (step \(state.globalStep), epoch \(state.epoch), "
                + "saved by \(state.worldSize) rank(s))")
        } else {
            try world.broadcast(net.store.values, count: net.store.parameterCount, root: 0)
            try world.broadcast(net.store.bufferValues, count: net.store.bufferCount, root: 0)
        }
        try verifyIdenticalParameters(net.store)

        let writer = CheckpointWriter(root: checkpointRoot, group: world, keepLast: config.checkpoint.keepLast,
                                      protectedStep: resumedFrom,
                                      compression: config.checkpoint.compression == .zstd
                                        ? .zstd(level: config.checkpoint.compressionLevel) : .none)
        let validationSets = try config.validation.bins.map { try VerificationSet.read(path: $0) }
        var bestAccuracy = -1.0
        let signals = PreemptionSignals.install()
        let watchdog = Watchdog(timeout: config.training.timeoutSeconds, rank: rank)
        defer { watchdog.stop() }
        let loader = BatchLoader(source: source, sampler: sampler, configuration: LoaderConfiguration(
            threads: loaderThreads, queueDepth: config.data.queueDepth, augmentation: augmentationPolicy(config.data),
            seed: UInt64(config.seed), imageSize: net.configuration.inputSize, maxBadFraction: config.data.maxBadFraction))
        defer { loader.stop() }

        let totalSteps = config.training.maxSteps > 0
            ? min(config.training.maxSteps, config.training.epochs * stepsPerEpoch) : config.training.epochs * stepsPerEpoch
        var summary = TrainingSummary()
        summary.runDirectory = runDirectory
        summary.metricsFile = runDirectory + "/metrics"
        let d = config.model.embeddingSize
        let headGradient = Tensor(shape: [localBatch, d])
        var labels = [Int32](repeating: 0, count: localBatch)
        var window = StepTimes()
        let runStarted = MonotonicClock.now()
        let startStep = globalStep
        say("training \(arch.rawValue) with \(head.configuration.margin.name), \(totalSteps) steps "
            + "(\(config.training.epochs) epochs), lr \(schedule.summary)")

        func state(stepInEpoch: Int) -> TrainerState {
            TrainerState(globalStep: globalStep, epoch: epoch, stepInEpoch: stepInEpoch,
                         epochSamplesConsumed: stepInEpoch * sampler.globalBatch, samplesSeen: samplesSeen,
                         worldSize: size, localBatch: localBatch, globalBatch: sampler.globalBatch,
                         seed: UInt64(config.seed), normMean: head.normStatistics.mean, normStd: head.normStatistics.std,
                         learningRate: schedule.rate(atStep: max(0, globalStep - 1)), counters: counters,
                         totalClasses: classes, embeddingSize: d, configName: config.name,
                         configJSON: config.resolvedJSON())
        }

        func checkpoint(stepInEpoch: Int, reason: String) throws {
            watchdog.touch("writing the checkpoint of step \(globalStep)")
            defer { watchdog.touch("training") }
            try averageRunningStatistics(net.store)
            let started = MonotonicClock.now()
            do {
                let result = try writer.write(state: state(stepInEpoch: stepInEpoch), backbone: net.store, optimizer: sgd,
                                              head: HeadShard(head))
                summary.lastCheckpoint = result.directory
                say(String(format: "checkpoint (%@): %@, %.1f MB in %.1f s", reason, result.directory,
                           Double(result.totalBytes) / 1e6, MonotonicClock.now() - started))
            } catch let error as CheckpointError {
                say("checkpoint failed: \(error)")
                if config.checkpoint.onDiskFull == .stop { throw error }
            }
        }

        /// Verification on the configured sets, extraction shared by the ranks; rank 0 reports, logs
        /// the results to the metrics file and marks the best checkpoint by the mean accuracy.
        func runValidation(reason: String) throws {
            if validationSets.isEmpty { return }
            watchdog.touch("validating at step \(globalStep)")
            try averageRunningStatistics(net.store)
            var accuracies: [Double] = []
            var results: [(name: String, accuracy: Double, std: Double)] = []
            for set in validationSets {
                let result = try DistributedExtraction.verify(set, network: net, group: world, batch: config.validation.batch)
                accuracies.append(result.accuracyMean)
                results.append((set.name, result.accuracyMean, result.accuracyStd))
                say(String(format: "verification %@ (step %d, %@): %.2f%% ± %.2f (%d pairs, threshold %.2f)", set.name,
                           globalStep, reason, 100 * result.accuracyMean, 100 * result.accuracyStd, set.pairCount,
                           result.bestThreshold))
                try metrics.write([("step", "\(globalStep)"), ("rank", "\(rank)"), ("validation", jsonQuoted(set.name)),
                                   ("accuracy", JSONNumber.format(result.accuracyMean)),
                                   ("accuracy_std", JSONNumber.format(result.accuracyStd)),
                                   ("threshold", JSONNumber.format(result.bestThreshold))])
            }
            summary.verification = results
            let mean = accuracies.reduce(0, +) / Double(accuracies.count)
            if mean > bestAccuracy, let directory = summary.lastCheckpoint, rank == 0 {
                bestAccuracy = mean
                let sets = results.map { "{\"name\":\(jsonQuoted($0.name)),\"accuracy\":\(JSONNumber.format($0.accuracy))}" }
                let json = "{\"step\":\(globalStep),\"mean_accuracy\":\(JSONNumber.format(mean)),\"checkpoint\":"
                    + "\(jsonQuoted(directory)),\"sets\":[\(sets.joined(separator: ","))]}\n"
                try AtomicFile.write(Array(json.utf8), to: checkpointRoot + "/best.json")
                say(String(format: "best so far: mean verification accuracy %.2f%% at step %d (%@/best.json)",
                           100 * mean, globalStep, checkpointRoot))
            }
            watchdog.touch("training")
        }

        training: while epoch < config.training.epochs && globalStep < totalSteps {
            loader.start(epoch: epoch, fromStep: stepInEpoch)
            while stepInEpoch < stepsPerEpoch && globalStep < totalSteps {
                watchdog.touch("training step \(globalStep + 1)")
                var t = MonotonicClock.now()
                let batch = try loader.next()
                net.input.data.update(from: batch.images, count: net.input.count)
                for k in 0..<localBatch { labels[k] = batch.labels[k] }
                loader.release()
                let dataTime = MonotonicClock.now() - t

                t = MonotonicClock.now()
                net.dropoutSeed = UInt64(config.seed) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(globalStep)
                net.forward(batch: localBatch, training: true)
                let forwardTime = MonotonicClock.now() - t

                t = MonotonicClock.now()
                let result = try labels.withUnsafeBufferPointer {
                    try head.step(embeddings: net.embeddings.data, norms: net.norms.data, labels: $0.baseAddress!,
                                  batch: localBatch, step: globalStep, gradEmbeddings: headGradient.data)
                }
                let headTime = MonotonicClock.now() - t

                t = MonotonicClock.now()
                buckets.beginBackward()
                let exposedBefore = buckets.exposedSeconds
                net.backward(gradEmbeddings: headGradient.data)
                let backwardTime = MonotonicClock.now() - t
                try buckets.finish()
                let communicationTime = buckets.exposedSeconds - exposedBefore

                t = MonotonicClock.now()
                let finite = try allFinite(loss: result.loss, store: net.store)
                let rate = schedule.rate(atStep: globalStep)
                if finite {
                    sgd.step(learningRate: Float(rate))
                    head.applySGD(learningRate: Float(rate), momentum: Float(config.optimizer.momentum),
                                  weightDecay: Float(config.optimizer.weightDecay))
                } else {
                    counters["skipped_nonfinite_steps", default: 0] += 1
                    summary.skippedSteps += 1
                    say("step \(globalStep + 1): non-finite loss or gradient, step skipped "
                        + "(\(counters["skipped_nonfinite_steps"]!) so far)")
                    if config.training.nonfinite == .abort {
                        throw TrainingFailure("step \(globalStep + 1): non-finite loss or gradient (training.nonfinite = abort)")
                    }
                    if config.training.maxSkippedSteps > 0 && summary.skippedSteps > config.training.maxSkippedSteps {
                        throw TrainingFailure("more than \(config.training.maxSkippedSteps) steps skipped for non-finite values")
                    }
                }
                let updateTime = MonotonicClock.now() - t

                globalStep += 1
                stepInEpoch += 1
                samplesSeen += sampler.globalBatch
                summary.steps += 1
                if summary.firstLoss.isNaN { summary.firstLoss = result.loss }
                summary.lastLoss = result.loss
                let times = StepTimes(data: dataTime, forward: forwardTime, head: headTime, backward: backwardTime,
                                      communication: communicationTime, update: updateTime)
                window.add(times)
                try metrics.write([
                    ("step", "\(globalStep)"), ("epoch", "\(epoch)"), ("rank", "\(rank)"),
                    ("loss", JSONNumber.format(result.loss)), ("lr", JSONNumber.format(rate)),
                    ("norm_mean", JSONNumber.format(result.normStatistics.mean)),
                    ("norm_std", JSONNumber.format(result.normStatistics.std)),
                    ("batch_norm_mean", JSONNumber.format(result.batchNormMean)),
                    ("data_s", JSONNumber.format(dataTime)), ("forward_s", JSONNumber.format(forwardTime)),
                    ("head_s", JSONNumber.format(headTime)), ("backward_s", JSONNumber.format(backwardTime)),
                    ("communication_s", JSONNumber.format(communicationTime)), ("update_s", JSONNumber.format(updateTime)),
                    ("images_per_s", JSONNumber.format(Double(localBatch) / times.total)),
                    ("skipped", finite ? "false" : "true"),
                ])
                if globalStep % config.training.logEvery == 0 || globalStep == totalSteps || globalStep == startStep + 1 {
                    let elapsed = MonotonicClock.now() - runStarted
                    let perStep = elapsed / Double(globalStep - startStep)
                    say(String(format: "epoch %d step %d/%d (%d/%d): loss %.4f lr %.5f | %.1f img/s (%.1f per rank) | "
                               + "norm μ %.3f σ %.3f | %@ | ETA %@",
                               epoch, globalStep, totalSteps, stepInEpoch, stepsPerEpoch, result.loss, rate,
                               Double(sampler.globalBatch) / window.meanTotal, Double(localBatch) / window.meanTotal,
                               result.normStatistics.mean, result.normStatistics.std, window.split,
                               formatDuration(perStep * Double(totalSteps - globalStep))))
                    window = StepTimes()
                }
                if config.training.verifyParametersEvery > 0 && globalStep % config.training.verifyParametersEvery == 0 {
                    try verifyIdenticalParameters(net.store)
                }
                if try signals.anyRankSignalled(world) {
                    say("preemption signal received: writing a checkpoint and stopping")
                    try checkpoint(stepInEpoch: stepInEpoch, reason: "signal")
                    summary.stoppedBySignal = true
                    break training
                }
                if config.checkpoint.everySteps > 0 && globalStep % config.checkpoint.everySteps == 0 {
                    try checkpoint(stepInEpoch: stepInEpoch, reason: "every \(config.checkpoint.everySteps) steps")
                }
                if config.validation.everySteps > 0 && globalStep % config.validation.everySteps == 0 && globalStep < totalSteps {
                    try runValidation(reason: "every \(config.validation.everySteps) steps")
                }
            }
            loader.stop()
            if stepInEpoch >= stepsPerEpoch {
                let loaderStats = loader.statistics
                say("epoch \(epoch) done: \(loaderStats.summary); loader wait \(String(format: "%.1f", loaderStats.waitSeconds)) s")
                epoch += 1
                stepInEpoch = 0
                if config.checkpoint.atEpochEnd && globalStep < totalSteps {
                    try checkpoint(stepInEpoch: 0, reason: "end of epoch \(epoch - 1)")
                }
                if config.validation.atEpochEnd && globalStep < totalSteps {
                    try runValidation(reason: "end of epoch \(epoch - 1)")
                }
            }
        }
        if !summary.stoppedBySignal {
            try checkpoint(stepInEpoch: stepInEpoch, reason: "end of training")
            try runValidation(reason: "end of training")
        }
        return summary
    }

    // MARK: - Pieces

    private func marginPolicy(_ head: TrainingConfiguration.HeadSection) -> MarginPolicy {
        switch head.margin {
        case .adaface: return .adaFace(margin: head.m, h: head.h, tAlpha: head.tAlpha)
        case .arcface: return .arcFace(margin: head.m)
        case .cosface: return .cosFace(margin: head.m)
        }
    }

    private func augmentationPolicy(_ data: TrainingConfiguration.DataSection) -> AugmentationPolicy {
        let a = data.effectiveAugmentation
        return AugmentationPolicy(cropProbability: Float(a.crop), lowResolutionProbability: Float(a.lowResolution),
                                  photometricProbability: Float(a.photometric), flipProbability: Float(a.flip))
    }

    /// Rank 0's configuration hash against every rank's: a mismatch stops every rank.
    private func agreeOnConfiguration() throws {
        var hash = [configuration.canonicalHash]
        try world.broadcast(&hash, root: 0)
        let mismatch = try world.allReduce(Int64(hash[0] == configuration.canonicalHash ? 0 : 1), .sum)
        if mismatch > 0 {
            throw TrainingFailure("\(mismatch) rank(s) have a configuration that differs from rank 0's "
                                  + "(hash \(String(hash[0], radix: 16))); start every rank with the same config and --set")
        }
    }

    /// CRC32C of the trainable parameters compared across ranks (BatchNorm running statistics are
    /// per rank by design and are averaged only for checkpoints and evaluation).
    private func verifyIdenticalParameters(_ store: ParameterStore) throws {
        let values = UnsafeRawBufferPointer(start: store.values, count: store.parameterCount * 4)
        let crc = Int64(Checksum.crc32c(values))
        let low = try world.allReduce(crc, .min), high = try world.allReduce(crc, .max)
        if low != high {
            throw TrainingFailure("the ranks' backbone parameters differ (checksums \(low) … \(high))")
        }
    }

    /// BatchNorm running statistics averaged over the ranks (before a checkpoint or an evaluation),
    /// so that neither depends on which rank wrote it.
    private func averageRunningStatistics(_ store: ParameterStore) throws {
        if world.size == 1 { return }
        // In Double: the mean of P equal floats then comes back bit-exact for any P (in Float,
        // (a + a + a)·(1/3) can be 1 ulp off), so averaging statistics that already agree — right
        // after a resume, or twice at one step — changes nothing.
        var sums = (0..<store.bufferCount).map { Double(store.bufferValues[$0]) }
        try world.allReduce(&sums, .sum)
        let p = Double(world.size)
        for i in 0..<store.bufferCount { store.bufferValues[i] = Float(sums[i] / p) }
    }

    /// Every rank agrees whether the loss and the averaged gradients are finite.
    private func allFinite(loss: Double, store: ParameterStore) throws -> Bool {
        var bad: Int64 = loss.isFinite ? 0 : 1
        if bad == 0 {
            let g = store.gradients
            for i in 0..<store.parameterCount where !g[i].isFinite { bad = 1; break }
        }
        return try world.allReduce(bad, .max) == 0
    }

    private func checkpointToResume(root: String) throws -> Checkpoint? {
        switch resume {
        case .none:
            return nil
        case .path(let directory):
            let listing = try CheckpointStore.verify(directory: directory, group: world)
            guard let checkpoint = listing.checkpoint else {
                throw TrainingFailure("--resume \(directory): the checkpoint does not verify: "
                                      + listing.problems.joined(separator: "; "))
            }
            return checkpoint
        case .auto:
            // Collective: every rank must take the same branch, so no per-rank existence check here.
            let (checkpoint, skipped) = try CheckpointStore.latestValid(root: root, group: world)
            for listing in skipped {
                say("skipping damaged checkpoint \(listing.directory): \(listing.problems.joined(separator: "; "))")
            }
            return checkpoint
        }
    }
}

/// Per-step time split, accumulated over the log window.
struct StepTimes {
    var data = 0.0, forward = 0.0, head = 0.0, backward = 0.0, communication = 0.0, update = 0.0
    var count = 0

    init() {}
    init(data: Double, forward: Double, head: Double, backward: Double, communication: Double, update: Double) {
        self.data = data; self.forward = forward; self.head = head; self.backward = backward
        self.communication = communication; self.update = update; count = 1
    }

    var total: Double { data + forward + head + backward + communication + update }
    var meanTotal: Double { total / Double(max(count, 1)) }

    mutating func add(_ other: StepTimes) {
        data += other.data; forward += other.forward; head += other.head; backward += other.backward
        communication += other.communication; update += other.update; count += other.count
    }

    /// "data 2% fwd 30% head 5% bwd 55% comm 1% upd 1%".
    var split: String {
        let t = max(total, 1e-12)
        return String(format: "data %.0f%% fwd %.0f%% head %.0f%% bwd %.0f%% comm %.0f%% upd %.0f%%",
                      100 * data / t, 100 * forward / t, 100 * head / t, 100 * backward / t,
                      100 * communication / t, 100 * update / t)
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) : String(format: "%dm%02ds", s / 60, s % 60)
}

enum JSONNumber {
    static func format(_ x: Double) -> String { x.isFinite ? String(format: "%.6g", x) : "null" }
}

/// One JSON object per line, appended; each rank has its own file, so nothing is shared.
final class MetricsLog {
    private let handle: FileHandle

    init(path: String) throws {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw TrainingFailure("cannot create the metrics file \(path)")
            }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw TrainingFailure("cannot open \(path)") }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    func write(_ pairs: [(String, String)]) throws {
        let line = "{" + pairs.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n"
        handle.write(Data(line.utf8))
    }
}
