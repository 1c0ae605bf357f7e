// `adaface-dist eval-ijb`: IJB-B / IJB-C 1:1 template verification on the InsightFace release layout
// (loose crops aligned by their five landmarks, flip-fused features, media-mean template
// aggregation, cosine pair scores), reporting TAR at FAR 1e-6 … 1e-1.
import DataPipeline
import Evaluation
import Foundation
import Layers
import Serialization
import Tensors

enum EvalIJBCommand {
    static let spec = CommandSpec(
        name: "eval-ijb",
        abstract: "IJB-B / IJB-C 1:1 template verification (TAR at FAR 1e-6 … 1e-1).",
        discussion: """
            Reads ROOT/meta/<target>_face_tid_mid.txt, <target>_template_pair_label.txt and \
            <target>_name_5pts_score.txt and the loose crops in ROOT/loose_crop. Each crop is aligned \
            to the ArcFace 112×112 template by a similarity transform of its five landmarks; its \
            feature is the sum of the un-normalised embeddings of the face and its mirror image; a \
            template is the sum of its media's mean features, L2-normalised; pair scores are cosine \
            similarities. TAR is read at the ROC point nearest each FAR.
            """,
        options: [
            .option("root", valueName: "dir", help: "The IJB-B or IJB-C directory (holding meta/ and loose_crop/).",
                    required: true),
            .option("target", valueName: "target", help: "IJBB or IJBC.", default: "IJBC"),
            CommonOptions.architecture(),
            .option("weights", valueName: "file", help: "Backbone weights (.safetensors, official key names).", required: true),
            .option("batch", valueName: "batch", help: "Faces per forward pass (each also mirrored).", default: "32"),
            CommonOptions.threads,
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let root = try args.requiredString("root")
        let targetName = try args.requiredChoice("target", IJBTarget.allCases.map(\.rawValue))
        let target = IJBTarget(rawValue: targetName)!
        let arch = try CommonOptions.parseArchitecture(args)
        let weightsPath = try args.requiredString("weights")
        let batch = try args.requiredInt("batch", min: 1)
        try CommonOptions.applyThreads(args)

        let meta = try IJBMeta.load(root: root, target: target)
        guard !meta.images.isEmpty, !meta.pairs.isEmpty else {
            throw CommandExit(code: 1, message: "\(root): the \(target.rawValue) meta files list no images or no pairs")
        }
        let genuine = meta.pairs.filter(\.genuine).count
        print("\(target.rawValue): \(meta.images.count) images, \(Set(meta.images.map(\.template)).count) templates, "
              + "\(meta.pairs.count) pairs (\(genuine) genuine)")
        let net = IResNet(arch)
        try net.store.readSafeTensors(from: weightsPath)
        let started = Clock.now()
        var reported = 0
        let features = try IJBProtocol.networkFeatures(root: root, meta: meta, network: net, batch: batch) { done in
            if done - reported >= 10_000 || done == meta.images.count {
                reported = done
                print(String(format: "  %d / %d images, %.0f s", done, meta.images.count, Clock.now() - started))
            }
        }
        let scores = IJBProtocol.scores(meta: meta, features: features, dimension: net.configuration.embeddingSize)
        print("model: \(weightsPath)")
        print("FAR        TAR")
        for row in IJBProtocol.tarAtFAR(scores: scores, pairs: meta.pairs) {
            print(String(format: "%-9.0e  %.4f", row.far, row.tar))
        }
        return 0
    }
}
