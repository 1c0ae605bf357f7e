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
    /// Bad training records skipped (and replaced) over all ranks since the run began, resumes
    /// included, by reason.
    public var badRecords: [String: Int] = [:]
    /// Checkpoints dropped for a full disk under `checkpoint.on_disk_full = continue`.
    public var failedCheckpoints = 0
}

public struct TrainingFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A failure every rank meets at the same point and agrees on — a checkpoint that cannot be written,
/// a non-finite step under `training.nonfinite = abort`, no checkpoint to resume from — so the job
/// can end with MPI_Finalize and exit code 1 instead of MPI_Abort. Checkpoints already written are
/// intact.
public struct TrainingStopped: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class Trainer {
    public let configuration: TrainingConfiguration
    let world: Communicator
    let resume: ResumeMode
    let log: (String) -> Void
    /// Non-finite values to plant (a test hook, `NonFiniteInjection`); empty in normal runs.
    public var injections: [NonFiniteInjection] = []

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
        let plantGradient = PendingInjection()
        net.gradientsReady = { [buckets, store = net.store] offset in
            // The test hook's Inf goes in before the all-reduce, as a real overflow would.
            if plantGradient.pending { store.gradients[offset] = .infinity; plantGradient.pending = false }
            // Errors here surface again in `finish()`, which waits for every bucket.
            try? buckets.gradientsReady(fromOffset: offset)
        }

        // What to resume from, decided before anything is written: a checkpoint that does not
        // verify (or a root with nothing but damaged ones) stops the run with the run folder untouched.
        let checkpointRoot = config.checkpoint.dir
        let resumeCheckpoint = try checkpointToResume(root: checkpointRoot)

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
        var resumedFrom: Int?
        var newestCheckpoint: String?
        /// The step of this run's last successful checkpoint.
        var lastWrittenStep: Int?
        if let checkpoint = resumeCheckpoint {
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
            newestCheckpoint = checkpoint.directory
            say("resumed from \(checkpoint.directory) (step \(state.globalStep), epoch \(state.epoch), "
                + "saved by \(state.worldSize) rank(s))")
        } else {
            try world.broadcast(net.store.values, count: net.store.parameterCount, root: 0)
            try world.broadcast(net.store.bufferValues, count: net.store.bufferCount, root: 0)
        }
        try verifyIdenticalParameters(net.store, "at the start")

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

        /// Writes a checkpoint. A failure is agreed by every rank (the writer's collectives) and leaves
        /// the previous checkpoints intact; a full disk on a periodic or end-of-epoch checkpoint
        /// follows `checkpoint.on_disk_full`, anything else stops the run (`TrainingStopped`).
        func checkpoint(stepInEpoch: Int, reason: String, mayContinue: Bool) throws {
            watchdog.touch("writing the checkpoint of step \(globalStep)")
            defer { watchdog.touch("training") }
            try averageRunningStatistics(net.store)
            // The writer saves rank 0's replica: it must stand for every rank's.
            do {
                try verifyIdenticalParameters(net.store, "before the checkpoint of step \(globalStep)")
            } catch let error as TrainingStopped {
                throw TrainingStopped("\(error); the newest complete checkpoint is \(newestCheckpoint ?? "none"); "
                                      + "training stopped")
            }
            let started = MonotonicClock.now()
            do {
                let result = try writer.write(state: state(stepInEpoch: stepInEpoch), backbone: net.store, optimizer: sgd,
                                              head: HeadShard(head))
                summary.lastCheckpoint = result.directory
                newestCheckpoint = result.directory
                lastWrittenStep = globalStep
                say(String(format: "checkpoint (%@): %@, %.1f MB in %.1f s", reason, result.directory,
                           Double(result.totalBytes) / 1e6, MonotonicClock.now() - started))
            } catch let error as CheckpointError {
                let previous = "the newest complete checkpoint is " + (newestCheckpoint ?? "none (no checkpoint yet)")
                if error.kind == .diskFull && mayContinue && config.checkpoint.onDiskFull == .continueTraining {
                    summary.failedCheckpoints += 1
                    say("warning: checkpoint (\(reason)) failed, disk full: \(error); \(previous); "
                        + "checkpoint.on_disk_full = continue: training goes on without it")
                    return
                }
                let why: String
                switch error.kind {
                case .diskFull where mayContinue: why = "disk full, checkpoint.on_disk_full = stop"
                case .diskFull: why = "disk full"
                case .nonFiniteValue: why = "non-finite values"
                default: why = "write failed"
                }
                throw TrainingStopped("checkpoint (\(reason)) failed (\(why)): \(error); \(previous); "
                                      + "training stopped (resume with --resume auto once the cause is fixed)")
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

        let bufferSnapshot = UnsafeMutablePointer<Float>.allocate(capacity: max(net.store.bufferCount, 1))
        defer { bufferSnapshot.deallocate() }
        var listedBadRecords = 0
        func countBadRecords(_ counts: [Int64]) {
            for (reason, n) in zip(DataError.Reason.allCases, counts) where n > 0 {
                counters["bad_records", default: 0] += Int(n)
                counters["bad_records_" + reason.rawValue, default: 0] += Int(n)
            }
        }
        func badRecordSummary() -> String {
            let total = counters["bad_records"] ?? 0
            if total == 0 { return "no bad records" }
            let reasons = DataError.Reason.allCases.compactMap { reason in
                counters["bad_records_" + reason.rawValue].map { "\(reason.rawValue) \($0)" }
            }
            return "\(total) bad record\(total == 1 ? "" : "s") skipped and replaced (\(reasons.joined(separator: ", ")))"
        }

        training: while epoch < config.training.epochs && globalStep < totalSteps {
            loader.start(epoch: epoch, fromStep: stepInEpoch)
            while stepInEpoch < stepsPerEpoch && globalStep < totalSteps {
                watchdog.touch("training step \(globalStep + 1)")
                var t = MonotonicClock.now()
                let batch: LoadedBatch
                do {
                    batch = try loader.next()
                } catch let error as BadRecordLimitExceeded {
                    throw TrainingFailure("data.max_bad_fraction = \(error.allowedFraction) exceeded on rank \(rank): \(error)")
                }
                net.input.data.update(from: batch.images, count: net.input.count)
                for k in 0..<localBatch { labels[k] = batch.labels[k] }
                let skippedRecords = batch.skipped
                loader.release()
                let dataTime = MonotonicClock.now() - t
                for record in skippedRecords where listedBadRecords < 20 {
                    listedBadRecords += 1
                    log("rank \(rank): bad record skipped (\(record.reason.rawValue)): \(record.message)"
                        + (listedBadRecords == 20 ? " (further bad records on this rank are counted, not listed)" : ""))
                }

                // What the forward pass and the head change besides the parameters, kept so that a
                // skipped step leaves no trace.
                bufferSnapshot.update(from: net.store.bufferValues, count: net.store.bufferCount)
                let batchCountersBefore = net.store.batchCounters
                let normStatisticsBefore = head.normStatistics
                let stepNumber = globalStep + 1

                t = MonotonicClock.now()
                net.dropoutSeed = UInt64(config.seed) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(globalStep)
                net.forward(batch: localBatch, training: true)
                let forwardTime = MonotonicClock.now() - t

                t = MonotonicClock.now()
                var result = try labels.withUnsafeBufferPointer {
                    try head.step(embeddings: net.embeddings.data, norms: net.norms.data, labels: $0.baseAddress!,
                                  batch: localBatch, step: globalStep, gradEmbeddings: headGradient.data)
                }
                if injections.plants(.loss, step: stepNumber, rank: rank) {
                    result.loss = .nan
                    log("rank \(rank): test hook: NaN loss planted at step \(stepNumber)")
                }
                let headTime = MonotonicClock.now() - t

                t = MonotonicClock.now()
                buckets.beginBackward()
                let exposedBefore = buckets.exposedSeconds
                if injections.plants(.gradient, step: stepNumber, rank: rank) {
                    plantGradient.pending = true
                    log("rank \(rank): test hook: +Inf gradient planted at step \(stepNumber)")
                }
                net.backward(gradEmbeddings: headGradient.data)
                plantGradient.pending = false
                let backwardTime = MonotonicClock.now() - t
                try buckets.finish()
                let communicationTime = buckets.exposedSeconds - exposedBefore

                t = MonotonicClock.now()
                let agreed = try agreeOnStep(loss: result.loss, store: net.store, skipped: skippedRecords)
                countBadRecords(agreed.badRecords)
                let finite = agreed.finite
                let rate = schedule.rate(atStep: globalStep)
                if finite {
                    sgd.step(learningRate: Float(rate))
                    head.applySGD(learningRate: Float(rate), momentum: Float(config.optimizer.momentum),
                                  weightDecay: Float(config.optimizer.weightDecay))
                } else {
                    net.store.bufferValues.update(from: bufferSnapshot, count: net.store.bufferCount)
                    net.store.batchCounters = batchCountersBefore
                    head.normStatistics = normStatisticsBefore
                    counters["skipped_nonfinite_steps", default: 0] += 1
                    summary.skippedSteps += 1
                    let skippedSoFar = counters["skipped_nonfinite_steps"]!
                    say("step \(stepNumber): non-finite loss or gradient, step skipped (\(skippedSoFar) so far)")
                    if config.training.nonfinite == .abort {
                        throw TrainingStopped("step \(stepNumber): non-finite loss or gradient (training.nonfinite = abort); "
                                              + "the newest complete checkpoint is \(newestCheckpoint ?? "none")")
                    }
                    if config.training.maxSkippedSteps > 0 && skippedSoFar > config.training.maxSkippedSteps {
                        throw TrainingStopped("\(skippedSoFar) steps skipped for non-finite values, more than "
                                              + "training.max_skipped_steps = \(config.training.maxSkippedSteps); "
                                              + "the newest complete checkpoint is \(newestCheckpoint ?? "none")")
                    }
                }
                if injections.plants(.weight, step: stepNumber, rank: rank) {
                    net.store.value(0)[0] = .nan
                    log("rank \(rank): test hook: NaN planted in '\(net.store.parameters[0].name)' after step \(stepNumber)")
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
                    ("bad_records", "\(agreed.badRecords.reduce(0, +))"),
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
                    try verifyIdenticalParameters(net.store, "after step \(globalStep)")
                }
                if try signals.anyRankSignalled(world) {
                    say("preemption signal received: writing a checkpoint and stopping")
                    try checkpoint(stepInEpoch: stepInEpoch, reason: "signal", mayContinue: false)
                    summary.stoppedBySignal = true
                    break training
                }
                if config.checkpoint.everySteps > 0 && globalStep % config.checkpoint.everySteps == 0 {
                    try checkpoint(stepInEpoch: stepInEpoch, reason: "every \(config.checkpoint.everySteps) steps",
                                   mayContinue: true)
                }
                if config.validation.everySteps > 0 && globalStep % config.validation.everySteps == 0 && globalStep < totalSteps {
                    try runValidation(reason: "every \(config.validation.everySteps) steps")
                }
            }
            loader.stop()
            if stepInEpoch >= stepsPerEpoch {
                let loaderStats = loader.statistics
                say("epoch \(epoch) done: \(badRecordSummary()) so far; loader wait \(String(format: "%.1f", loaderStats.waitSeconds)) s")
                epoch += 1
                stepInEpoch = 0
                // (Unless this very step was just checkpointed: the two resume at the same place.)
                if config.checkpoint.atEpochEnd && globalStep < totalSteps && lastWrittenStep != globalStep {
                    try checkpoint(stepInEpoch: 0, reason: "end of epoch \(epoch - 1)", mayContinue: true)
                }
                if config.validation.atEpochEnd && globalStep < totalSteps {
                    try runValidation(reason: "end of epoch \(epoch - 1)")
                }
            }
        }
        if !summary.stoppedBySignal {
            if lastWrittenStep == globalStep, let directory = summary.lastCheckpoint {
                // Nothing changed since: writing it again would only need the disk space twice.
                say("checkpoint (end of training): \(directory), written at this step already")
            } else {
                try checkpoint(stepInEpoch: stepInEpoch, reason: "end of training", mayContinue: false)
            }
            try runValidation(reason: "end of training")
        }
        if (counters["bad_records"] ?? 0) > 0 { say("data: \(badRecordSummary()) over the run") }
        summary.badRecords = counters.filter { $0.key.hasPrefix("bad_records_") }
            .reduce(into: [:]) { $0[String($1.key.dropFirst("bad_records_".count))] = $1.value }
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
    /// per rank by design and are averaged only for checkpoints and evaluation). Every rank reaches
    /// the same verdict, so a mismatch stops the job cleanly.
    private func verifyIdenticalParameters(_ store: ParameterStore, _ when: String) throws {
        let values = UnsafeRawBufferPointer(start: store.values, count: store.parameterCount * 4)
        let crc = Int64(Checksum.crc32c(values))
        var bounds = [crc, -crc]
        try world.allReduce(&bounds, .max)
        if bounds[0] != -bounds[1] {
            throw TrainingStopped("\(when): the ranks' backbone parameters differ (checksums \(-bounds[1]) … \(bounds[0])): "
                                  + "a replica was damaged, so no checkpoint can stand for all of them")
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

    /// One all-reduce per step: every rank agrees whether the loss and the averaged gradients are
    /// finite, and learns how many bad records all ranks skipped, by reason (`DataError.Reason`
    /// order).
    private func agreeOnStep(loss: Double, store: ParameterStore,
                             skipped: [SkippedRecord]) throws -> (finite: Bool, badRecords: [Int64]) {
        var bad: Int64 = loss.isFinite ? 0 : 1
        if bad == 0 {
            let g = store.gradients
            for i in 0..<store.parameterCount where !g[i].isFinite { bad = 1; break }
        }
        let reasons = DataError.Reason.allCases
        var values = [bad] + reasons.map { reason in Int64(skipped.filter { $0.reason == reason }.count) }
        try world.allReduce(&values, .sum)
        return (values[0] == 0, Array(values.dropFirst()))
    }

    private func checkpointToResume(root: String) throws -> Checkpoint? {
        switch resume {
        case .none:
            return nil
        case .path(let directory):
            let listing = try CheckpointStore.verify(directory: directory, group: world)
            guard let checkpoint = listing.checkpoint else {
                throw TrainingStopped("--resume \(directory): the checkpoint does not verify: "
                                      + listing.problems.joined(separator: "; ") + "; nothing was loaded or written")
            }
            return checkpoint
        case .auto:
            // Collective: every rank must take the same branch, so no per-rank existence check here.
            let (checkpoint, skipped) = try CheckpointStore.latestValid(root: root, group: world)
            for listing in skipped {
                say("skipping damaged checkpoint \(listing.directory): \(listing.problems.joined(separator: "; "))")
            }
            if checkpoint == nil && !skipped.isEmpty {
                // Starting afresh here would quietly throw away the run's progress.
                throw TrainingStopped("--resume auto: none of the \(skipped.count) checkpoint(s) under \(root) verifies "
                                      + "(listed above); nothing was loaded or written. Repair or move them, or start "
                                      + "afresh with --resume none")
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
        // The throwing write: the old `write(_:)` traps on an I/O error such as a full disk.
        try handle.write(contentsOf: Data(line.utf8))
    }
}

/// Set by the training loop, read by the backward pass's gradient callback (same thread).
private final class PendingInjection {
    var pending = false
}
