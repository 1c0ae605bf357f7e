// `adaface-dist analyze-norms`: feature norm against image quality on a synthetic set, and
// verification accuracy split by quality (the paper's claim: the norm tracks quality, and the
// adaptive margin helps most on low-quality faces).
import Collectives
import DataPipeline
import Evaluation
import Foundation
import Layers
import Serialization
import Tensors
import Training

enum AnalyzeNormsCommand {
    static let spec = CommandSpec(
        name: "analyze-norms",
        abstract: "Correlate feature norms with image quality on a synthetic set (from synth).",
        discussion: """
            Reads DIR/val.bin and DIR/quality.csv written by `adaface-dist synth`, computes each \
            image's feature norm (evaluation mode), and reports the Pearson and Spearman correlation \
            with the quality level, the mean norm per quality band, and the verification accuracy of \
            the pairs split by the lower quality of the two images (at the 10-fold protocol's mean \
            threshold). --csv writes one row per image for plots (Scripts/plot_norms.py).
            """,
        options: [
            .option("checkpoint", valueName: "dir", help: "A checkpoint directory or root."),
            .option("weights", valueName: "file", help: "Backbone weights instead of a checkpoint."),
            .option("arch", valueName: "arch", help: "Backbone (default: the checkpoint's)."),
            .option("data", valueName: "dir", help: "A folder written by `adaface-dist synth`.", required: true),
            .option("csv", valueName: "file", help: "Write index, identity, quality, norm per image."),
            .option("json", valueName: "file", help: "Write the report as JSON."),
            .option("batch", valueName: "batch", help: "Images per forward pass.", default: "32"),
            CommonOptions.threads,
        ],
        run: run)

    static let bands: [(name: String, range: Range<Double>)] = [
        ("low (q < 0.35)", 0..<0.35), ("medium (0.35–0.75)", 0.35..<0.75), ("high (q ≥ 0.75)", 0.75..<1.01),
    ]

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let dir = try args.requiredString("data")
        let batch = try args.requiredInt("batch", min: 1)
        try CommonOptions.applyThreads(args)
        let (net, source) = try ModelSource.load(args, group: SingleProcessGroup())
        let set = try VerificationSet.read(path: dir + "/val.bin")
        let quality = try readValidationQuality(dir + "/quality.csv", images: 2 * set.pairCount)

        let norms = try NormQualityAnalysis.norms(set, indices: 0..<(2 * set.pairCount), network: net, batch: batch)
        let normValues = norms.map(Double.init), qualityValues = quality.map(\.quality)
        let pearson = NormQualityAnalysis.pearson(normValues, qualityValues)
        let spearman = NormQualityAnalysis.spearman(normValues, qualityValues)
        let embeddings = try EmbeddingExtractor.flipFused(set, indices: 0..<(2 * set.pairCount), network: net, batch: batch)
        let distances = embeddings.withUnsafeBufferPointer {
            VerificationProtocol.pairDistances($0.baseAddress!, pairs: set.pairCount, dimension: net.configuration.embeddingSize)
        }
        let verification = VerificationProtocol.evaluate(distances: distances, issame: set.issame)
        let pairQuality = (0..<set.pairCount).map { min(quality[2 * $0].quality, quality[2 * $0 + 1].quality) }
        let byQuality = NormQualityAnalysis.accuracyByQuality(distances: distances, issame: set.issame, pairQuality: pairQuality,
                                                              threshold: verification.bestThreshold, bands: bands)

        print("model: \(source)")
        print(String(format: "feature norm vs quality over %d images: Pearson %.3f, Spearman %.3f", norms.count, pearson, spearman))
        for band in bands {
            let members = norms.indices.filter { band.range.contains(quality[$0].quality) }
            let mean = members.isEmpty ? Double.nan : members.map { Double(norms[$0]) }.reduce(0, +) / Double(members.count)
            print(String(format: "  %@: %d images, mean norm %.3f", band.name, members.count, mean))
        }
        print(String(format: "verification: %.2f%% ± %.2f (threshold %.2f); by the pair's lower quality:",
                     100 * verification.accuracyMean, 100 * verification.accuracyStd, verification.bestThreshold))
        for row in byQuality { print(String(format: "  %@: %d pairs, %.2f%%", row.name, row.pairs, 100 * row.accuracy)) }

        if let csv = args.string("csv") {
            var text = "index,identity,quality,norm\n"
            for i in norms.indices { text += "\(i),\(quality[i].identity),\(quality[i].quality),\(norms[i])\n" }
            try AtomicFile.write(Array(text.utf8), to: csv)
            print("wrote \(csv)")
        }
        if let json = args.string("json") {
            let rows = byQuality.map { JSONLine.render([("band", JSONLine.string($0.name)), ("pairs", "\($0.pairs)"),
                                                        ("accuracy", JSONLine.number($0.accuracy, digits: 6))]) }
            let text = JSONLine.render([
                ("model", JSONLine.string(source)), ("images", "\(norms.count)"),
                ("pearson", JSONLine.number(pearson, digits: 6)), ("spearman", JSONLine.number(spearman, digits: 6)),
                ("accuracy", JSONLine.number(verification.accuracyMean, digits: 6)),
                ("accuracy_by_quality", "[" + rows.joined(separator: ",") + "]"),
            ]) + "\n"
            try AtomicFile.write(Array(text.utf8), to: json)
            print("wrote \(json)")
        }
        return 0
    }

    /// Quality and identity of each val.bin image, from the `val` rows of quality.csv (split,key,identity,image,quality).
    static func readValidationQuality(_ path: String, images: Int) throws -> [(identity: Int, quality: Double)] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CommandExit(code: 1, message: "cannot read \(path) (written by `adaface-dist synth`)")
        }
        var rows = [(identity: Int, quality: Double)?](repeating: nil, count: images)
        for (number, line) in text.split(separator: "\n").enumerated() where number > 0 {
            let fields = line.split(separator: ",")
            guard fields.count == 5, fields[0] == "val" else { continue }
            guard let key = Int(fields[1]), let identity = Int(fields[2]), let q = Double(fields[4]),
                  key >= 0 && key < images else {
                throw CommandExit(code: 1, message: "\(path):\(number + 1): malformed row '\(line)'")
            }
            rows[key] = (identity, q)
        }
        guard let missing = rows.firstIndex(where: { $0 == nil }) else { return rows.map { $0! } }
        throw CommandExit(code: 1, message: "\(path) has no quality for val.bin image \(missing)")
    }
}
