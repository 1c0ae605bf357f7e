// `adaface-dist bench backbone`: training and inference throughput of the backbone on this machine,
// against the sgemm peak measured in the same run.
import Foundation
import Layers
import Tensors

enum BenchCommand {
    static let spec = CommandSpec(
        name: "bench",
        abstract: "Measure the speed of parts of the system.",
        subcommands: [backbone, BenchHeadCommand.spec, BenchLoaderCommand.spec, BenchAllReduceCommand.spec])

    static let backbone = CommandSpec(
        name: "backbone",
        abstract: "Backbone train and inference images/s, GFLOP/s and peak memory.",
        discussion: """
            A training step is forward + backward + SGD on random input. The last line of output is \
            one JSON object with the figures.
            """,
        options: [
            CommonOptions.architecture(default: "ir50"),
            .option("batch", valueName: "batch", help: "Images per step.", default: "64"),
            CommonOptions.threads,
            .option("steps", valueName: "steps", help: "Timed steps of each kind.", default: "5"),
            .option("warmup", valueName: "warmup", help: "Untimed steps first.", default: "1"),
            .flag("profile", help: "Print where the time of the timed training steps goes, per kernel and layer shape."),
        ],
        run: runBackbone)

    static func runBackbone(_ args: ParsedArguments) throws -> Int32 {
        let arch = try CommonOptions.parseArchitecture(args)
        let batch = try args.requiredInt("batch", min: 2)
        let steps = try args.requiredInt("steps", min: 1)
        let warmup = try args.requiredInt("warmup", min: 0)
        let threads = try CommonOptions.applyThreads(args)

        let peak = SgemmPeak.measure()
        print(String(format: "sgemm peak (2048³, %d threads): %.1f GFLOP/s", threads, peak))

        let net = IResNet(arch)
        net.prepare(batchCapacity: batch)
        var rng = SplitMix64(seed: 1)
        for i in 0..<net.input.count { net.input.data[i] = rng.nextUniform() * 2 - 1 }
        let gradient = Tensor(shape: [batch, net.configuration.embeddingSize])
        for i in 0..<gradient.count { gradient.data[i] = rng.nextNormal() * 1e-3 }
        let sgd = SGD(store: net.store)
        let forwardGFLOP = Double(net.macsPerImage) * 2e-9
        print(String(format: "%@: %.1fM parameters, %.2f GFLOP per image forward, batch %d",
                     arch.rawValue, Double(net.store.trainableScalarCount) / 1e6, forwardGFLOP, batch))

        var phase = (forward: 0.0, backward: 0.0, update: 0.0)
        for step in 0..<(warmup + steps) {
            KernelProfiler.isEnabled = args.flag("profile") && step >= warmup
            let t0 = MonotonicClock.now()
            net.forward(batch: batch, training: true)
            let t1 = MonotonicClock.now()
            net.backward(gradEmbeddings: gradient.data)
            let t2 = MonotonicClock.now()
            sgd.step(learningRate: 1e-4)
            let t3 = MonotonicClock.now()
            let timed = step >= warmup
            if timed { phase.forward += t1 - t0; phase.backward += t2 - t1; phase.update += t3 - t2 }
            print(String(format: "  train step %d%@: %.3f s (forward %.3f, backward %.3f, update %.3f)",
                         step + 1, timed ? "" : " (warm-up)", t3 - t0, t1 - t0, t2 - t1, t3 - t2))
        }
        KernelProfiler.isEnabled = false
        let trainSeconds = phase.forward + phase.backward + phase.update
        if args.flag("profile") { printProfile(stepSeconds: trainSeconds / Double(steps), steps: steps) }
        let trainRate = Double(batch * steps) / trainSeconds

        var inferenceSeconds = 0.0
        for step in 0..<(warmup + steps) {
            let t0 = MonotonicClock.now()
            net.forward(batch: batch, training: false)
            let dt = MonotonicClock.now() - t0
            if step >= warmup { inferenceSeconds += dt }
        }
        let inferenceRate = Double(batch * steps) / inferenceSeconds
        let trainGFLOPS = 3 * forwardGFLOP * trainRate
        let peakMB = Double(ProcessMemory.peakResidentBytes) / 1e6

        print(String(format: "train:     %.2f images/s, %.1f GFLOP/s (%.0f%% of the sgemm peak); forward %.0f%%, backward %.0f%%, update %.0f%% of the step",
                     trainRate, trainGFLOPS, 100 * trainGFLOPS / peak, 100 * phase.forward / trainSeconds,
                     100 * phase.backward / trainSeconds, 100 * phase.update / trainSeconds))
        print(String(format: "inference: %.2f images/s, %.1f GFLOP/s", inferenceRate, forwardGFLOP * inferenceRate))
        print(String(format: "peak memory: %.0f MB (activations and workspace %.0f MB)", peakMB, Double(net.activationBytes) / 1e6))
        print(JSONLine.render([
            ("bench", JSONLine.string("backbone")), ("impl", JSONLine.string("adaface-dist")),
            ("arch", JSONLine.string(arch.rawValue)), ("batch", "\(batch)"), ("threads", "\(threads)"),
            ("steps", "\(steps)"),
            ("train_images_per_s", JSONLine.number(trainRate)),
            ("inference_images_per_s", JSONLine.number(inferenceRate)),
            ("forward_gflop_per_image", JSONLine.number(forwardGFLOP)),
            ("train_gflops", JSONLine.number(trainGFLOPS, digits: 2)),
            ("sgemm_peak_gflops", JSONLine.number(peak, digits: 2)),
            ("train_fraction_of_peak", JSONLine.number(trainGFLOPS / peak)),
            ("peak_rss_mb", JSONLine.number(peakMB, digits: 1)),
        ]))
        return 0
    }
}

extension BenchCommand {
    static func printProfile(stepSeconds: Double, steps: Int) {
        print("profile of one training step (mean over \(steps) steps):")
        print("  " + "kernel".padding(toLength: 44, withPad: " ", startingAt: 0) + "    ms/step  share  GFLOP/s")
        var accounted = 0.0
        for row in KernelProfiler.report {
            let perStep = row.seconds / Double(steps)
            accounted += perStep
            let rate = row.gflops.map { String(format: "%8.1f", $0) } ?? ""
            print("  " + row.name.padding(toLength: 44, withPad: " ", startingAt: 0)
                  + String(format: " %9.1f  %4.1f%%", perStep * 1e3, 100 * perStep / stepSeconds) + " " + rate)
        }
        print(String(format: "  %@ %9.1f  %4.1f%%", "other (output layer, SGD, dispatch)".padding(toLength: 44, withPad: " ", startingAt: 0),
                     (stepSeconds - accounted) * 1e3, 100 * (stepSeconds - accounted) / stepSeconds))
        KernelProfiler.reset()
    }
}

/// The machine's dense GEMM peak as OpenBLAS delivers it with the current thread count.
enum SgemmPeak {
    static func measure(size n: Int = 2048, repetitions: Int = 3) -> Double {
        let a = Tensor(shape: [n, n]), b = Tensor(shape: [n, n]), c = Tensor(shape: [n, n])
        a.fill(0.5); b.fill(0.25)
        BLAS.gemm(m: n, n: n, k: n, a: a.data, b: b.data, c: c.data)
        var best = Double.infinity
        for _ in 0..<repetitions {
            let t0 = MonotonicClock.now()
            BLAS.gemm(m: n, n: n, k: n, a: a.data, b: b.data, c: c.data)
            best = min(best, MonotonicClock.now() - t0)
        }
        return 2 * Double(n) * Double(n) * Double(n) / best * 1e-9
    }
}
