// `adaface-dist synth`: a synthetic face data set with known identities and quality levels, for
// training and verification runs end to end without a real face data set.
import DataPipeline
import Foundation

enum SynthCommand {
    static let spec = CommandSpec(
        name: "synth",
        abstract: "Generate a synthetic face data set with known identities and quality levels.",
        discussion: """
            Draws procedural 112×112 cartoon faces. An identity fixes the face's layout, shapes, colours \
            and skin texture; every image adds a small pose change, expression, background, lighting and \
            noise, and a quality level in [0, 1] (60 % high, 25 % medium, 15 % low) that sets blur, loss \
            of resolution, noise and JPEG quality. Output is the same for a seed whatever the thread count.

            Writes into the output directory: train.rec, train.idx and property (InsightFace RecordIO, \
            labels 0..<identities); val.bin (an InsightFace verification pickle of --pairs pairs, half \
            same identity, from held-out identities not in the training set); and the quality file \
            (split, key or bin index, identity, image index, quality level of every image).
            """,
        options: [
            .option("out", valueName: "dir", help: "Output directory (created if missing).", required: true),
            .option("identities", valueName: "n", help: "Training identities.", default: "1000"),
            .option("images-per-identity", valueName: "n", help: "Images of every identity.", default: "20"),
            .option("pairs", valueName: "n", help: "Verification pairs in val.bin (0: no val.bin).", default: "3000"),
            .option("seed", valueName: "seed", help: "Seed of every identity, image and pair.", default: "1"),
            .option("holdout-identities", valueName: "n",
                    help: "Identities beyond the training ones that the pairs are drawn from. (default: max(50, identities/10))"),
            .option("quality-file", valueName: "name", help: "Name of the quality CSV in the output directory.",
                    default: "quality.csv"),
            .option("preview", valueName: "png",
                    help: "Also write a PNG sheet of 8 identities × 8 images, each row from clean to degraded."),
            CommonOptions.threads,
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let directory = try args.requiredString("out")
        let identities = try args.requiredInt("identities", min: 1)
        let configuration = SyntheticDataSet.Configuration(
            identities: identities,
            imagesPerIdentity: try args.requiredInt("images-per-identity", min: 1),
            pairs: try args.requiredInt("pairs", min: 0),
            seed: UInt64(try args.requiredInt("seed", min: 0)),
            holdoutIdentities: try args.int("holdout-identities", min: 0),
            qualityFileName: try args.requiredString("quality-file"),
            threads: try args.int("threads", min: 1, max: 1024) ?? ProcessInfo.processInfo.activeProcessorCount)
        if let problem = configuration.problem { throw UsageError(problem) }

        let started = Clock.now()
        let summary = try SyntheticDataSet.write(configuration, to: directory) { message in
            FileHandle.standardError.write(Data("\rsynth: \(message)   ".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let seconds = Clock.now() - started

        if let previewPath = args.string("preview") {
            let faces = SyntheticFaces(seed: configuration.seed)
            let sheet = faces.previewSheet(identities: Array(0..<min(8, identities)),
                                           imagesPerIdentity: min(8, configuration.imagesPerIdentity))
            let png = sheet.bgr.withUnsafeBufferPointer { ImageEncoder.png(bgr: $0, width: sheet.width, height: sheet.height) }
            do {
                try Data(png).write(to: URL(fileURLWithPath: previewPath))
            } catch {
                throw CommandExit(code: 1, message: "cannot write \(previewPath): \(error.localizedDescription)")
            }
            print("wrote preview \(previewPath) (\(sheet.width)×\(sheet.height))")
        }

        print(String(format: "wrote %d training images of %d identities%@ to %@ in %.1f s (%.0f images/s)",
                     summary.trainImages, summary.classes,
                     summary.pairs > 0 ? " and \(summary.pairs) pairs of \(summary.holdoutIdentities) held-out identities" : "",
                     directory, seconds,
                     Double(summary.trainImages + summary.holdoutIdentities * configuration.imagesPerIdentity) / max(seconds, 1e-9)))
        for file in summary.files {
            print(String(format: "  %@  %@", file.name.padding(toLength: 14, withPad: " ", startingAt: 0),
                         byteCount(file.bytes)))
        }
        return 0
    }

    static func byteCount(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? String(format: "%.1f MB", Double(bytes) / 1_048_576)
            : bytes >= 1 << 10 ? String(format: "%.1f kB", Double(bytes) / 1024) : "\(bytes) B"
    }
}
