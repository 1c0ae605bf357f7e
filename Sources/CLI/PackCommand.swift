// `adaface-dist pack`: an image folder (root/<identity>/<image>) into an InsightFace RecordIO set.
import DataPipeline
import Foundation
import Tensors

enum PackCommand {
    static let spec = CommandSpec(
        name: "pack",
        abstract: "Pack an image folder into an InsightFace RecordIO set (train.rec, train.idx, property).",
        discussion: """
            Identity folders sorted by name give the class ids 0, 1, …; images are sorted by name \
            within an identity. Only .jpg, .jpeg and .png files are packed, as their original bytes \
            (nothing is re-encoded); other entries are ignored and counted. Files that cannot be read \
            or do not start with a JPEG or PNG signature are skipped and listed; images are not decoded \
            here (run 'adaface-dist data inspect --verify' on the result for that). As in InsightFace's \
            packs, key 0 is a header record, images are keys 1…N and identity records follow. The \
            files are written under temporary names and renamed at the end, so an interrupted pack \
            leaves no partial set; the result is read back before the command reports success.
            """,
        options: [
            .option("images", valueName: "dir", help: "Image folder with one folder per identity.", required: true),
            .option("out", valueName: "dir", help: "Output directory (created if missing).", required: true),
            .option("threads", valueName: "threads",
                    help: "Threads listing folders and reading images. (default: the cores)"),
            .flag("overwrite", help: "Replace a RecordIO set already in the output directory."),
        ],
        run: run)

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let root = try args.requiredString("images")
        let out = try args.requiredString("out")
        let threads = try args.int("threads", min: 1, max: 1024) ?? ProcessInfo.processInfo.activeProcessorCount
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UsageError("--images '\(root)' is not a directory")
        }
        let existing = ["train.rec", "train.idx"].filter {
            FileManager.default.fileExists(atPath: (out as NSString).appendingPathComponent($0))
        }
        if !existing.isEmpty && !args.flag("overwrite") {
            throw UsageError("--out '\(out)' already holds \(existing.joined(separator: " and ")); "
                             + "pass --overwrite to replace the set")
        }

        let started = MonotonicClock.now()
        let folder: ImageFolderDataSet
        do {
            folder = try ImageFolderDataSet(root: root, threads: threads)
        } catch let error as DataError {
            throw CommandExit(code: 1, message: error.message)
        }
        if folder.ignoredCount > 0 {
            note("ignoring \(counted(folder.ignoredCount, "entry", "entries")) (not .jpg, .jpeg or .png images), "
                 + "e.g. \(folder.ignoredExamples.prefix(3).joined(separator: ", "))")
        }
        if !folder.emptyIdentities.isEmpty {
            note("no class id for \(counted(folder.emptyIdentities.count, "identity folder", "identity folders")) "
                 + "without images, e.g. \(folder.emptyIdentities.prefix(3).joined(separator: ", "))")
        }

        let display = ProgressDisplay(verb: "packed", total: folder.count)
        let summary: PackSummary
        do {
            summary = try RecordIOWriter.pack(folder, into: out, threads: threads) { display.update($0.done) }
        } catch let error as DataError {
            display.finish()
            throw CommandExit(code: 1, message: error.message)
        } catch let error as RecordIOWriteError {
            display.finish()
            throw CommandExit(code: 1, message: error.message)
        }
        display.finish()

        let seconds = MonotonicClock.now() - started
        print("packed \(counted(summary.images, "image", "images")) of "
              + "\(counted(summary.classCount, "identity", "identities")) into \(out) "
              + "(train.rec \(byteCount(summary.recordBytes))) in "
              + String(format: "%.1f s, %.0f images/s", seconds, Double(summary.images) / max(seconds, 1e-9)))
        if summary.splitRecords > 0 {
            print("\(counted(summary.splitRecords, "record", "records")) held the RecordIO magic number "
                  + "and were stored in parts")
        }
        if !summary.skipped.isEmpty {
            print("skipped \(counted(summary.skipped.count, "file", "files")) (unreadable, or not JPEG or PNG):")
            for skipped in summary.skipped.prefix(20) { print("  \(skipped.error.message)") }
            if summary.skipped.count > 20 { print("  … and \(summary.skipped.count - 20) more") }
        }
        return 0
    }

    private static func note(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func counted(_ n: Int, _ singular: String, _ plural: String) -> String {
        "\(ProgressDisplay.grouped(n)) \(n == 1 ? singular : plural)"
    }

    static func byteCount(_ bytes: Int) -> String {
        if bytes >= 1 << 30 { return String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
        if bytes >= 1 << 20 { return String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
        return String(format: "%.1f KiB", Double(bytes) / 1024)
    }
}

/// One line of progress on stderr (count, rate, ETA). On a terminal it is redrawn in place at most
/// four times a second; otherwise (a log file) a plain line is written every ten seconds.
final class ProgressDisplay {
    private let verb: String
    private let total: Int
    private let started = MonotonicClock.now()
    private let interactive = isatty(STDERR_FILENO) != 0
    private var lastDraw: Double
    private var drawn = false

    init(verb: String, total: Int) {
        self.verb = verb
        self.total = total
        lastDraw = interactive ? -Double.infinity : started
    }

    func update(_ done: Int) {
        let now = MonotonicClock.now()
        let due = now - lastDraw >= (interactive ? 0.25 : 10)
        guard due || (interactive && drawn && done == total) else { return }
        lastDraw = now
        drawn = true
        let elapsed = now - started
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        var line = "\(verb) \(Self.grouped(done))/\(Self.grouped(total)) images  "
            + Self.grouped(Int(rate.rounded())) + " images/s"
        if done < total && rate > 0 { line += "  ETA " + Self.duration(Double(total - done) / rate) }
        let text = interactive ? "\r" + line + "\u{1B}[K" : line + "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Ends the redrawn line.
    func finish() {
        if interactive && drawn { FileHandle.standardError.write(Data("\n".utf8)) }
        drawn = false
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh %02dm", s / 3600, (s % 3600) / 60) }
        if s >= 60 { return String(format: "%dm %02ds", s / 60, s % 60) }
        return "\(s)s"
    }

    static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = value < 0 ? "-" : ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }
}
