// `adaface-dist data inspect`: counts and checks a training set (RecordIO or image folder).
import DataPipeline
import Foundation

enum DataCommand {
    static let spec = CommandSpec(
        name: "data",
        abstract: "Inspect training data sets.",
        subcommands: [DataInspectCommand.spec])
}

enum DataInspectCommand {
    static let spec = CommandSpec(
        name: "inspect",
        abstract: "Report a training set's format, image and identity counts, and its bad records.",
        discussion: """
            PATH is a RecordIO set (a directory holding train.rec and train.idx, or a .rec file with \
            its .idx beside it) or an image folder (one folder per identity). The report gives the \
            number of images and identities and the minimum, median and maximum images per identity. \
            Every record's framing and label are read; with --verify every image is also decoded and \
            must be 112×112 (or the size in the set's property file). Each bad record is listed with \
            its key (the idx key, or the path below an image folder) and the reason.

            Exit status: 0 when no bad record was found; 1 when some were; 2 when the set cannot be \
            opened (for example a missing train.idx or an empty folder).
            """,
        arguments: [
            .argument("path", help: "A RecordIO directory or .rec file, or an image folder."),
        ],
        options: [
            .flag("verify", help: "Decode every image and list those that fail or have the wrong size."),
            .flag("json", help: "Print the report as one JSON object."),
            .option("threads", valueName: "threads",
                    help: "Threads reading and decoding records. (default: the cores)"),
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let path = try args.requiredString("path")
        let verify = args.flag("verify")
        let threads = try args.int("threads", min: 1, max: 1024) ?? ProcessInfo.processInfo.activeProcessorCount
        guard FileManager.default.fileExists(atPath: path) else {
            throw UsageError("'\(path)' does not exist")
        }
        var display: ProgressDisplay?
        let report: DataSetReport
        do {
            report = try DataSetInspection.inspect(path, verify: verify, threads: threads) { done, total in
                if display == nil { display = ProgressDisplay(verb: verify ? "verified" : "read", total: total) }
                display?.update(done)
            }
        } catch let error as DataError {
            display?.finish()
            throw CommandExit(code: 2, message: error.message)
        }
        display?.finish()
        print(args.flag("json") ? report.json() : report.text())
        return report.badCount > 0 ? 1 : 0
    }
}
