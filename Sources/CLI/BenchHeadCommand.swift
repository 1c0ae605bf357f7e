// `adaface-dist bench head`: forward+backward time and memory of the class-partitioned head, per
// rank, under mpirun.
import Collectives
import Foundation
import Heads
import Tensors

enum BenchHeadCommand {
    static let spec = CommandSpec(
        name: "head",
        abstract: "Class-partitioned head: per-rank forward+backward time and memory.",
        discussion: """
            Run under mpirun: every rank owns an even slice of the classes, the global batch is \
            ranks × --batch. Times cover the head step (all-gather, logits, margin, distributed \
            cross-entropy, gradients, reduce-scatter) and the sparse SGD update. The last line is \
            one JSON object.
            """,
        options: [
            .option("classes", valueName: "classes", help: "Identities in the classifier.", default: "205990"),
            .option("batch", valueName: "batch", help: "Samples per rank (the global batch is ranks × batch).", default: "128"),
            .option("sample-rate", valueName: "rate", help: "Partial FC rate in (0, 1]; 1 is the full softmax.", default: "1.0"),
            .option("embedding", valueName: "dim", help: "Embedding size.", default: "512"),
            .option("margin", valueName: "margin", help: "adaface, arcface or cosface.", default: "adaface"),
            CommonOptions.threads,
            .option("steps", valueName: "steps", help: "Timed steps.", default: "3"),
            .option("warmup", valueName: "warmup", help: "Untimed steps first.", default: "1"),
            .flag("profile", help: "Print rank 0's time per part of the head step."),
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let world = try MPIRuntime.world()
        defer { MPIRuntime.finalize() }
        let classes = try args.requiredInt("classes", min: 1)
        let batch = try args.requiredInt("batch", min: 1)
        let rate = try args.requiredDouble("sample-rate", min: 1e-6, max: 1)
        let d = try args.requiredInt("embedding", min: 1)
        let margin: MarginPolicy
        switch try args.requiredChoice("margin", ["adaface", "arcface", "cosface"]) {
        case "arcface": margin = .arcFaceDefault
        case "cosface": margin = .cosFaceDefault
        default: margin = .adaFaceDefault
        }
        let steps = try args.requiredInt("steps", min: 1), warmup = try args.requiredInt("warmup", min: 0)
        let node = try world.splitByNode()
        let threads = try args.int("threads", min: 1)
            ?? max(1, ProcessInfo.processInfo.activeProcessorCount / node.size)
        ComputeThreads.configure(threads)

        let config = HeadConfiguration(totalClasses: classes, embeddingSize: d, margin: margin, sampleRate: rate, seed: 1)
        let built = MonotonicClock.now()
        let head = try PartitionedSoftmaxHead(configuration: config, group: world)
        let initSeconds = MonotonicClock.now() - built
        var rng = SplitMix64(seed: 7, UInt64(world.rank))
        var embeddings = [Float](repeating: 0, count: batch * d)
        for i in 0..<batch {
            var norm: Float = 0
            for j in 0..<d { embeddings[i * d + j] = rng.nextNormal(); norm += embeddings[i * d + j] * embeddings[i * d + j] }
            for j in 0..<d { embeddings[i * d + j] /= norm.squareRoot() }
        }
        let norms = (0..<batch).map { _ in 10 + 20 * rng.nextUniform() }
        let labels = (0..<batch).map { _ in Int32(rng.next() % UInt64(classes)) }
        var gradient = [Float](repeating: 0, count: batch * d)
        if world.rank == 0 {
            print(String(format: "head: %d classes over %d ranks, global batch %d, sample rate %g, %@, %d threads per rank (init %.1f s)",
                         classes, world.size, batch * world.size, rate, margin.name, threads, initSeconds))
        }
        var stepSeconds = 0.0, updateSeconds = 0.0, loss = 0.0
        for step in 0..<(warmup + steps) {
            try world.barrier()
            KernelProfiler.isEnabled = args.flag("profile") && step >= warmup && world.rank == 0
            let t0 = MonotonicClock.now()
            let result = try gradient.withUnsafeMutableBufferPointer {
                try head.step(embeddings: embeddings, norms: norms, labels: labels, batch: batch, step: step,
                              gradEmbeddings: $0.baseAddress!)
            }
            let t1 = MonotonicClock.now()
            head.applySGD(learningRate: 0.01)
            let t2 = MonotonicClock.now()
            if step >= warmup { stepSeconds += t1 - t0; updateSeconds += t2 - t1 }
            loss = result.loss
        }
        KernelProfiler.isEnabled = false
        let perStep = stepSeconds / Double(steps), perUpdate = updateSeconds / Double(steps)
        if args.flag("profile") && world.rank == 0 { BenchCommand.printProfile(stepSeconds: perStep, steps: steps) }
        let memory = head.memory
        // Every rank's figures at rank 0, in rank order.
        let mine: [Double] = [perStep, perUpdate, Double(memory.weights), Double(memory.momentum), Double(memory.logits),
                              Double(memory.gradientAndBatch), Double(head.classRange.count)]
        var all = [Double](repeating: 0, count: mine.count * world.size)
        try mine.withUnsafeBufferPointer { src in
            try all.withUnsafeMutableBufferPointer { try world.allGather(src.baseAddress!, count: mine.count, into: $0.baseAddress!) }
        }
        guard world.rank == 0 else { return 0 }
        let columns = mine.count
        var slowest = 0.0, maxBytes = 0.0
        for r in 0..<world.size {
            let row = Array(all[(r * columns)..<((r + 1) * columns)])
            slowest = max(slowest, row[0] + row[1])
            let bytes = row[2] + row[3] + row[4] + row[5]
            maxBytes = max(maxBytes, bytes)
            print(String(format: "  rank %d: %d classes, forward+backward %.1f ms, update %.1f ms; memory %.0f MB (weights %.0f, momentum %.0f, logits %.0f, gradient and batch %.0f)",
                         r, Int(row[6]), row[0] * 1e3, row[1] * 1e3, bytes / 1e6, row[2] / 1e6, row[3] / 1e6,
                         row[4] / 1e6, row[5] / 1e6))
        }
        print(String(format: "loss %.4f; slowest rank %.1f ms per step including the update", loss, slowest * 1e3))
        print(JSONLine.render([
            ("bench", JSONLine.string("head")), ("ranks", "\(world.size)"), ("classes", "\(classes)"),
            ("local_batch", "\(batch)"), ("global_batch", "\(batch * world.size)"),
            ("sample_rate", JSONLine.number(rate)), ("threads_per_rank", "\(threads)"),
            ("step_ms_max", JSONLine.number(all.enumerated().filter { $0.offset % columns == 0 }.map(\.element).max()! * 1e3, digits: 2)),
            ("update_ms_max", JSONLine.number(all.enumerated().filter { $0.offset % columns == 1 }.map(\.element).max()! * 1e3, digits: 2)),
            ("memory_bytes_max_rank", "\(Int(maxBytes))"),
            ("weights_bytes_rank0", "\(Int(all[2]))"), ("momentum_bytes_rank0", "\(Int(all[3]))"),
            ("logits_bytes_rank0", "\(Int(all[4]))"), ("loss", JSONLine.number(loss)),
        ]))
        return 0
    }
}
