// `adaface-dist inspect`: what a checkpoint holds and whether its manifest verifies.
import Foundation
import Training

enum InspectCommand {
    static let spec = CommandSpec(
        name: "inspect",
        abstract: "Show a checkpoint's step, epoch, ranks, head shards, norm EMA and files, and verify it.",
        discussion: """
            CHECKPOINT is a checkpoint directory (step-000001200) or a checkpoint root. For a root, every \
            checkpoint is listed with its status, then the newest valid one is shown. Verification checks \
            the manifest: every file present with its listed size and CRC-32C, all head shards listed, and \
            the trainer state readable; the damage found is named.

            Exit status: 0 when the checkpoint (or, for a root, some checkpoint) verifies; 1 when none \
            does; 2 when the path is not a directory.
            """,
        arguments: [
            .argument("checkpoint", help: "A checkpoint directory or a checkpoint root."),
        ],
        options: [
            .flag("json", help: "Print the report as one JSON object."),
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let path = try args.requiredString("checkpoint")
        let result: CheckpointInspection.Result
        do {
            result = try CheckpointInspection.inspect(path: path)
        } catch let error as CheckpointError {
            throw CommandExit(code: 2, message: error.message)
        }
        print(args.flag("json") ? result.json() : result.text())
        return result.hasValidCheckpoint ? 0 : 1
    }
}
