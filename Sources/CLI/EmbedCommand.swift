// `adaface-dist embed`: unit embeddings and norms of a folder of aligned 112×112 face images.
import DataPipeline
import Foundation
import Layers
import Serialization
import Tensors

enum EmbedCommand {
    static let spec = CommandSpec(
        name: "embed",
        abstract: "Embed a folder of aligned 112×112 face images with a trained backbone.",
        discussion: """
            Reads every .jpg, .jpeg and .png in the folder in sorted file-name order, runs the backbone \
            in evaluation mode and writes N×512 float32 unit embeddings (and optionally the N norms) \
            as .npy files.
            """,
        options: [
            CommonOptions.architecture(),
            .option("weights", valueName: "file", help: "Backbone weights (.safetensors, official key names).", required: true),
            .option("images", valueName: "dir", help: "Folder of aligned 112×112 images.", required: true),
            .option("out", valueName: "file", help: "Output .npy of unit embeddings.", required: true),
            .option("norms", valueName: "file", help: "Output .npy of embedding norms."),
            .option("batch", valueName: "batch", help: "Images per forward pass.", default: "64"),
            CommonOptions.threads,
        ],
        run: run)

    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    static func listImages(in directory: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UsageError("--images '\(directory)' is not a directory")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted()
        guard !names.isEmpty else { throw UsageError("--images '\(directory)' holds no .jpg, .jpeg or .png files") }
        return names.map { (directory as NSString).appendingPathComponent($0) }
    }

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let arch = try CommonOptions.parseArchitecture(args)
        let weightsPath = try args.requiredString("weights")
        let files = try listImages(in: try args.requiredString("images"))
        let outPath = try args.requiredString("out")
        let normsPath = args.string("norms")
        let batch = try args.requiredInt("batch", min: 1)
        try CommonOptions.applyThreads(args)

        let net = IResNet(arch)
        try net.store.readSafeTensors(from: weightsPath)
        let capacity = min(batch, files.count)
        net.prepare(batchCapacity: capacity)
        let size = net.configuration.inputSize, d = net.configuration.embeddingSize
        let decoder = try ImageDecoder()
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        var embeddings = [Float](repeating: 0, count: files.count * d)
        var norms = [Float](repeating: 0, count: files.count)
        let started = MonotonicClock.now()
        var start = 0
        while start < files.count {
            let count = min(capacity, files.count - start)
            for j in 0..<count {
                let path = files[start + j]
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw CommandExit(code: 1, message: "cannot read \(path)")
                }
                do {
                    try data.withUnsafeBytes { bytes in
                        try pixels.withUnsafeMutableBufferPointer {
                            try decoder.decode(bytes, into: $0, expectedWidth: size, expectedHeight: size)
                        }
                    }
                } catch {
                    throw CommandExit(code: 1, message: "\(path): \(error)")
                }
                InputNormalization.normalize(bgr: pixels, count: pixels.count,
                                             into: net.input.data + j * size * size * 3)
            }
            net.forward(batch: count, training: false)
            embeddings.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + start * d).update(from: net.embeddings.data, count: count * d)
            }
            for j in 0..<count { norms[start + j] = net.norms.data[j] }
            start += count
            FileHandle.standardError.write(Data(String(format: "\rembedded %d/%d images", start, files.count).utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        try NumpyFile.write(floats: embeddings, shape: [files.count, d], to: outPath)
        if let normsPath { try NumpyFile.write(floats: norms, shape: [files.count], to: normsPath) }
        print(String(format: "wrote %@ (%d × %d)%@ in %.1f s", outPath, files.count, d,
                     normsPath.map { " and \($0)" } ?? "", MonotonicClock.now() - started))
        return 0
    }
}
