// `adaface-dist parity-dump`: everything `Scripts/parity/check_parity.py` needs to compare this
// backbone with an independent PyTorch one — weights, an input, the embeddings in both modes, and
// the parameter gradients of loss = Σ embedding · upstream.
import Foundation
import Layers
import Serialization
import Tensors

enum ParityDumpCommand {
    static let spec = CommandSpec(
        name: "parity-dump",
        abstract: "Write weights, input, embeddings and gradients for the PyTorch parity check.",
        options: [
            CommonOptions.architecture(default: "ir18"),
            .option("batch", valueName: "batch", help: "Images in the batch.", default: "4"),
            .option("seed", valueName: "seed", help: "Seed of the weights, input and upstream gradient.", default: "1"),
            .option("out", valueName: "dir", help: "Output folder (created if missing).", required: true),
            CommonOptions.threads,
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let arch = try CommonOptions.parseArchitecture(args)
        let batch = try args.requiredInt("batch", min: 2)
        let seed = UInt64(try args.requiredInt("seed", min: 0))
        let out = try args.requiredString("out")
        try CommonOptions.applyThreads(args)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        func path(_ name: String) -> String { (out as NSString).appendingPathComponent(name) }

        // Dropout off, so PyTorch can reproduce the training-mode pass without our mask.
        var config = IResNetConfiguration(arch)
        config.dropout = 0
        let net = IResNet(configuration: config)
        var rng = SplitMix64(seed: seed)
        net.resetParameters(&rng)
        // Non-trivial BatchNorm and PReLU values, so that parity covers every term.
        for (i, p) in net.store.parameters.enumerated() where p.shape.count == 1 {
            let v = net.store.value(i)
            for j in 0..<p.count { v[j] += 0.1 * rng.nextNormal() }
        }
        for bn in net.batchNorms {
            for c in 0..<bn.channels {
                bn.runningMean[c] = 0.1 * rng.nextNormal()
                bn.runningVariance[c] = 0.5 + rng.nextUniform()
            }
        }
        try net.store.writeSafeTensors(to: path("weights.safetensors"), metadata: ["arch": arch.rawValue])

        net.prepare(batchCapacity: batch)
        let size = config.inputSize, d = config.embeddingSize
        for i in 0..<net.input.count { net.input.data[i] = rng.nextUniform() * 2 - 1 }
        var nchw = [Float](repeating: 0, count: net.input.count)
        for b in 0..<batch { for y in 0..<size { for x in 0..<size { for c in 0..<3 {
            nchw[((b * 3 + c) * size + y) * size + x] = net.input.data[((b * size + y) * size + x) * 3 + c]
        } } } }
        try NumpyFile.write(floats: nchw, shape: [batch, 3, size, size], to: path("input.npy"))
        let upstream = (0..<(batch * d)).map { _ in rng.nextNormal() }
        try NumpyFile.write(floats: upstream, shape: [batch, d], to: path("upstream.npy"))

        net.forward(batch: batch, training: false)
        try NumpyFile.write(floats: Array(UnsafeBufferPointer(start: net.embeddings.data, count: batch * d)),
                            shape: [batch, d], to: path("eval_embeddings.npy"))
        try NumpyFile.write(floats: Array(UnsafeBufferPointer(start: net.norms.data, count: batch)),
                            shape: [batch], to: path("eval_norms.npy"))

        net.forward(batch: batch, training: true)
        try NumpyFile.write(floats: Array(UnsafeBufferPointer(start: net.embeddings.data, count: batch * d)),
                            shape: [batch, d], to: path("train_embeddings.npy"))
        try NumpyFile.write(floats: Array(UnsafeBufferPointer(start: net.norms.data, count: batch)),
                            shape: [batch], to: path("train_norms.npy"))
        net.store.zeroGradients()
        upstream.withUnsafeBufferPointer { net.backward(gradEmbeddings: $0.baseAddress!) }
        try net.store.writeGradientsSafeTensors(to: path("grads.safetensors"))
        var stats = SafeTensorsWriter()
        for tensor in net.store.exportState() where tensor.name.hasSuffix("running_mean") || tensor.name.hasSuffix("running_var") {
            if case .float32(let v) = tensor.values { stats.add(tensor.name, shape: tensor.shape, floats: v) }
        }
        try stats.write(to: path("running_stats_after.safetensors"))
        print("wrote the \(arch.rawValue) parity dump (batch \(batch), seed \(seed)) to \(out)")
        return 0
    }
}
