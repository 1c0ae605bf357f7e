// `adaface-dist eval`: verification accuracy of a backbone on InsightFace .bin sets (LFW, CFP-FP,
// AgeDB-30, CALFW, CPLFW, or synthetic held-out pairs), with the extraction split over the ranks.
import Collectives
import DataPipeline
import Evaluation
import Foundation
import Layers
import Serialization
import Tensors
import Training

enum EvalCommand {
    static let spec = CommandSpec(
        name: "eval",
        abstract: "Verification accuracy on InsightFace .bin pair sets (10-fold, flip fusion).",
        discussion: """
            Embeddings are flip-fused (the un-normalised embeddings of an image and its mirror image \
            summed, then normalised); the distance is the squared L2 distance; thresholds 0:0.01:4 \
            with 10-fold cross-validation without shuffling. Under mpirun the ranks share the \
            extraction and rank 0 reports.
            """,
        options: [
            .option("checkpoint", valueName: "dir",
                    help: "A checkpoint directory, or a checkpoint root (its newest verified checkpoint)."),
            .option("weights", valueName: "file", help: "Backbone weights (.safetensors) instead of a checkpoint."),
            .option("arch", valueName: "arch", help: "Backbone (default: the checkpoint's; required with --weights)."),
            .option("bin", valueName: "file", help: "A verification .bin set (repeatable).", repeatable: true),
            .option("batch", valueName: "batch", help: "Images per forward pass (each also mirrored).", default: "32"),
            .option("json", valueName: "file", help: "Write the results as JSON."),
            CommonOptions.threads,
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let bins = args.strings("bin")
        guard !bins.isEmpty else { throw UsageError("give at least one --bin set") }
        let batch = try args.requiredInt("batch", min: 1)
        let world = try MPIRuntime.world()
        defer { MPIRuntime.finalize() }
        let node = try world.splitByNode()
        let threads = try args.int("threads", min: 1) ?? max(1, ProcessInfo.processInfo.activeProcessorCount / node.size)
        ComputeThreads.configure(threads)

        let (net, source) = try ModelSource.load(args, group: world)

        var rows: [(name: String, pairs: Int, result: VerificationResult, seconds: Double)] = []
        for path in bins {
            let started = Clock.now()
            let set = try VerificationSet.read(path: path)
            let result = try DistributedExtraction.verify(set, network: net, group: world, batch: batch)
            rows.append((set.name, set.pairCount, result, Clock.now() - started))
        }
        guard world.rank == 0 else { return 0 }
        print("model: \(source)")
        print("set".padding(toLength: 14, withPad: " ", startingAt: 0)
              + "   pairs   accuracy (10-fold)   threshold   TAR@FAR=1e-3   TAR@FAR=1e-4   seconds")
        for row in rows {
            let tar = row.result.tarAtFAR.map { String(format: "%12.2f%%", 100 * $0.tar) }.joined(separator: "   ")
            print(row.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                  + String(format: " %7d   %6.2f%% ± %5.2f     %9.2f   ", row.pairs, 100 * row.result.accuracyMean,
                           100 * row.result.accuracyStd, row.result.bestThreshold)
                  + tar + String(format: "   %7.1f", row.seconds))
        }
        let mean = rows.map(\.result.accuracyMean).reduce(0, +) / Double(rows.count)
        print(String(format: "mean accuracy over %d set(s): %.2f%%", rows.count, 100 * mean))
        if let jsonPath = args.string("json") {
            let sets = rows.map { row in
                JSONLine.render([
                    ("name", JSONLine.string(row.name)), ("pairs", "\(row.pairs)"),
                    ("accuracy_mean", JSONLine.number(row.result.accuracyMean, digits: 6)),
                    ("accuracy_std", JSONLine.number(row.result.accuracyStd, digits: 6)),
                    ("best_threshold", JSONLine.number(row.result.bestThreshold, digits: 4)),
                    ("tar_at_far", "{" + row.result.tarAtFAR.map { "\"\($0.far)\":" + JSONLine.number($0.tar, digits: 6) }
                        .joined(separator: ",") + "}"),
                    ("fold_accuracies", "[" + row.result.foldAccuracies.map { JSONLine.number($0, digits: 6) }
                        .joined(separator: ",") + "]"),
                    ("roc", JSONLine.render([
                        ("fpr", "[" + row.result.roc.fpr.map { JSONLine.number($0, digits: 6) }.joined(separator: ",") + "]"),
                        ("tpr", "[" + row.result.roc.tpr.map { JSONLine.number($0, digits: 6) }.joined(separator: ",") + "]"),
                    ])),
                ])
            }
            let json = JSONLine.render([("model", JSONLine.string(source)), ("world_size", "\(world.size)"),
                                        ("mean_accuracy", JSONLine.number(mean, digits: 6)),
                                        ("sets", "[" + sets.joined(separator: ",") + "]")]) + "\n"
            try AtomicFile.write(Array(json.utf8), to: jsonPath)
            print("wrote \(jsonPath)")
        }
        return 0
    }
}
