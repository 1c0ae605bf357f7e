// `adaface-dist bench loader`: decode + augment throughput of the prefetching loader per thread
// count, against the images/s a training step consumes.
import DataPipeline
import Foundation
import Layers
import Tensors

enum BenchLoaderCommand {
    static let spec = CommandSpec(
        name: "loader",
        abstract: "Loader images/s (decode + augment + normalise) per thread count.",
        discussion: """
            Without --data it uses synthetic faces held in memory (JPEG), so only decoding and \
            augmentation are measured. The consumer rate is an IR-50 training step on this machine \
            (measured, unless --train-rate gives it). The last line is one JSON object.
            """,
        options: [
            .option("data", valueName: "path", help: "A RecordIO folder or an image folder (default: synthetic faces in memory)."),
            .option("batch", valueName: "batch", help: "Images per batch.", default: "64"),
            .option("threads", valueName: "list", help: "Comma-separated decode thread counts.", default: "1,2"),
            .option("steps", valueName: "steps", help: "Batches per measurement.", default: "20"),
            .flag("no-augment", help: "Decode and normalise only."),
            .option("arch", valueName: "arch", help: "Backbone whose training rate is the consumer.", default: "ir50"),
            .option("train-rate", valueName: "images/s", help: "Use this consumer rate instead of measuring it."),
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let batch = try args.requiredInt("batch", min: 1)
        let steps = try args.requiredInt("steps", min: 1)
        let threadCounts = try (args.string("threads") ?? "1,2").split(separator: ",").map { part -> Int in
            guard let n = Int(part.trimmingCharacters(in: .whitespaces)), n >= 1 else {
                throw UsageError("--threads takes comma-separated positive integers, got '\(part)'")
            }
            return n
        }
        let source: SampleSource
        if let path = args.string("data") {
            source = try DataSetInspection.open(path).source
        } else {
            let started = MonotonicClock.now()
            source = try InMemoryDataSet.syntheticFaces(identities: 32, imagesPerIdentity: 16, seed: 1)
            print(String(format: "made %d synthetic JPEG faces in memory (%.1f s)", source.count, MonotonicClock.now() - started))
        }
        let policy: AugmentationPolicy = args.flag("no-augment") ? .none : .adaFace
        let sampler = try DistributedSampler(datasetSize: source.count, worldSize: 1, rank: 0, localBatch: batch, seed: 1)
        let needed = steps + 1
        var rates: [(threads: Int, rate: Double)] = []
        for threads in threadCounts {
            let loader = BatchLoader(source: source, sampler: sampler, configuration: LoaderConfiguration(
                threads: threads, queueDepth: 4, augmentation: policy, seed: 1, maxBadFraction: 1))
            var delivered = 0, epoch = 0
            var started = 0.0
            while delivered < needed {
                loader.start(epoch: epoch)
                while loader.remainingSteps > 0 && delivered < needed {
                    _ = try loader.next()
                    loader.release()
                    delivered += 1
                    // The first batch includes thread start-up; time the rest.
                    if delivered == 1 { started = MonotonicClock.now() }
                }
                loader.stop()
                epoch += 1
            }
            let rate = Double(steps * batch) / (MonotonicClock.now() - started)
            rates.append((threads, rate))
            print(String(format: "  %d decode thread%@: %.0f images/s (%.0f per thread)", threads, threads == 1 ? "" : "s",
                         rate, rate / Double(threads)))
        }
        let trainRate: Double
        if let given = try args.double("train-rate", min: 1e-9) {
            trainRate = given
        } else {
            trainRate = try measureTrainingRate(architecture: args.string("arch") ?? "ir50", batch: batch)
        }
        let best = rates.max { $0.rate < $1.rate }!
        print(String(format: "training consumes %.2f images/s; the loader delivers %.0f× that with %d threads",
                     trainRate, best.rate / trainRate, best.threads))
        var pairs: [(String, String)] = [("bench", JSONLine.string("loader")), ("batch", "\(batch)"),
                                         ("augment", policy == AugmentationPolicy.none ? "false" : "true"),
                                         ("train_images_per_s", JSONLine.number(trainRate))]
        for r in rates {
            pairs.append(("images_per_s_\(r.threads)_threads", JSONLine.number(r.rate, digits: 1)))
        }
        pairs.append(("ratio_to_training", JSONLine.number(best.rate / trainRate, digits: 1)))
        print(JSONLine.render(pairs))
        return 0
    }

    /// Images/s of one training step (forward, backward, SGD) of `architecture` on all cores.
    static func measureTrainingRate(architecture: String, batch: Int) throws -> Double {
        guard let arch = IResNetArchitecture(name: architecture) else {
            throw UsageError("--arch must be one of \(CommonOptions.architectures.joined(separator: ", "))")
        }
        ComputeThreads.configure(ProcessInfo.processInfo.activeProcessorCount)
        let net = IResNet(arch)
        net.prepare(batchCapacity: batch)
        let gradient = Tensor(shape: [batch, net.configuration.embeddingSize])
        gradient.fill(1e-3)
        let sgd = SGD(store: net.store)
        var seconds = 0.0
        for step in 0..<2 {
            let t0 = MonotonicClock.now()
            net.forward(batch: batch, training: true)
            net.backward(gradEmbeddings: gradient.data)
            sgd.step(learningRate: 1e-4)
            if step == 1 { seconds = MonotonicClock.now() - t0 }
        }
        return Double(batch) / seconds
    }
}
