// Finding, verifying and pruning the checkpoints under a root.
//
// A checkpoint exists only once its manifest verifies: the manifest parses, lists every file a
// checkpoint of its rank count needs, and every listed file is present with the listed size and
// CRC-32C; the trainer state parses and agrees with the manifest. Verification is collective so that
// every rank reaches the same verdict: rank 0 reads the directory, the manifest and the trainer state
// and shares them; the large files are checksummed round-robin across the ranks.
import Collectives
import Foundation
import Glibc
import Heads
import Serialization

/// One `step-…` directory and its verdict.
public struct CheckpointListing: Sendable {
    public let step: Int
    public let directory: String
    /// Why it does not verify; empty for a valid checkpoint.
    public let problems: [String]
    public let checkpoint: Checkpoint?

    public var isValid: Bool { checkpoint != nil }
}

public struct CheckpointPruneReport: Sendable, Equatable {
    /// Directories removed (checkpoints past keep-last, damaged ones older than a valid one, and
    /// stale temporary directories).
    public var removed: [String] = []
    /// Why something that would have been removed was left.
    public var warnings: [String] = []
}

public enum CheckpointStore {
    /// Every `step-…` directory under `root`, newest first, each verified. An absent root has none.
    /// Collective: every rank of `group` must call it and gets the same answer.
    public static func list(root: String, group: CollectiveGroup = SingleProcessGroup()) throws -> [CheckpointListing] {
        try candidates(root: root, group: group).map { try verify(directory: root + "/" + $0.name, step: $0.step, group: group) }
    }

    /// The newest checkpoint that verifies, and the newer ones skipped with their problems.
    /// Collective, like `list`.
    public static func latestValid(root: String, group: CollectiveGroup = SingleProcessGroup()) throws
        -> (checkpoint: Checkpoint?, skipped: [CheckpointListing]) {
        var skipped: [CheckpointListing] = []
        for candidate in try candidates(root: root, group: group) {
            let listing = try verify(directory: root + "/" + candidate.name, step: candidate.step, group: group)
            if let checkpoint = listing.checkpoint { return (checkpoint, skipped) }
            skipped.append(listing)
        }
        return (nil, skipped)
    }

    /// Verifies one checkpoint directory (for `--resume PATH`). Collective.
    public static func verify(directory: String, group: CollectiveGroup = SingleProcessGroup()) throws -> CheckpointListing {
        let name = directory.split(separator: "/").last.map(String.init) ?? directory
        return try verify(directory: directory, step: CheckpointLayout.step(fromDirectoryName: name), group: group)
    }

    /// `.tmp-step-…` directories under `root` (interrupted writes), with their steps.
    public static func temporaryDirectories(root: String) -> [(step: Int, directory: String)] {
        guard let names = try? CheckpointDirectory.entries(root) else { return [] }
        return names.compactMap { name in
            guard let step = CheckpointLayout.step(fromTemporaryName: name),
                  CheckpointDirectory.isDirectory(root + "/" + name) else { return nil }
            return (step, root + "/" + name)
        }.sorted { ($0.step, $0.directory) > ($1.step, $1.directory) }
    }

    // MARK: Pruning

    /// Keeps the newest `keepLast` complete checkpoints up to `justWritten`, `justWritten` itself, and
    /// `resumedFrom` until a newer complete checkpoint exists. Removes the other checkpoints older
    /// than the newest complete one (damaged ones included) and temporary directories of steps up to
    /// it. Checkpoints newer than `justWritten` (left by an earlier attempt and skipped on resume) are
    /// not this run's to judge and stay. Only directories named and filled like checkpoints are
    /// touched. Not collective: rank 0 calls it.
    ///
    /// "Complete" here means the manifest parses and lists every needed file, present with its listed
    /// size; CRCs are not recomputed (resume does that), so pruning stays cheap.
    public static func prune(root: String, keepLast: Int, resumedFrom: Int? = nil,
                             justWritten: Int? = nil) -> CheckpointPruneReport {
        precondition(keepLast >= 1, "keep-last must be at least 1")
        var report = CheckpointPruneReport()
        guard let names = try? CheckpointDirectory.entries(root) else { return report }
        let limit = justWritten ?? Int.max
        let steps = names.compactMap { name -> (step: Int, path: String)? in
            guard let step = CheckpointLayout.step(fromDirectoryName: name), step <= limit,
                  CheckpointDirectory.isDirectory(root + "/" + name) else { return nil }
            return (step, root + "/" + name)
        }.sorted { $0.step > $1.step }
        let complete = steps.filter { looksComplete($0.path) }.map(\.step)
        guard let newestComplete = complete.first else { return report }

        var keep = Set(complete.prefix(keepLast))
        if let justWritten { keep.insert(justWritten) }
        if let resumedFrom, !complete.contains(where: { $0 > resumedFrom }) { keep.insert(resumedFrom) }

        func remove(_ path: String) {
            if let warning = CheckpointDirectory.removeOwn(path) { report.warnings.append(warning) } else { report.removed.append(path) }
        }
        for entry in steps where !keep.contains(entry.step) && entry.step < newestComplete {
            remove(entry.path)
        }
        for temporary in temporaryDirectories(root: root) where temporary.step <= newestComplete {
            remove(temporary.directory)
        }
        if !report.removed.isEmpty {
            do { try CheckpointDirectory.sync(root) } catch { report.warnings.append("\(error)") }
        }
        return report
    }

    private static func looksComplete(_ directory: String) -> Bool {
        guard let bytes = try? readWholeFile(directory + "/" + CheckpointLayout.manifestFile),
              let manifest = try? CheckpointManifest.decode(bytes) else { return false }
        let listed = Set(manifest.files.map(\.name))
        guard CheckpointManifest.requiredFiles(worldSize: manifest.worldSize).allSatisfy(listed.contains) else { return false }
        return manifest.files.allSatisfy { fileSize(directory + "/" + $0.name) == $0.size }
    }

    // MARK: Verification

    /// Rank 0's listing of `step-…` directories, shared so that every rank walks the same list.
    private static func candidates(root: String, group: CollectiveGroup) throws -> [(step: Int, name: String)] {
        var payload: [UInt8] = []
        if group.rank == 0 {
            var info = stat()
            if lstat(root, &info) != 0 {
                payload = errno == ENOENT ? Array("ok\n".utf8) : Array("error\n\(root): \(errnoText())".utf8)
            } else if (info.st_mode & S_IFMT) != S_IFDIR {
                payload = Array("error\n\(root): not a directory".utf8)
            } else {
                do {
                    let names = try CheckpointDirectory.entries(root).filter {
                        CheckpointLayout.step(fromDirectoryName: $0) != nil && CheckpointDirectory.isDirectory(root + "/" + $0)
                    }
                    payload = Array((["ok"] + names).joined(separator: "\n").utf8)
                } catch {
                    payload = Array("error\n\(error)".utf8)
                }
            }
        }
        let lines = String(decoding: try RankExchange.broadcastFromRoot(payload, group), as: UTF8.self)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.first == "ok" else {
            throw CheckpointError(.notFound, "checkpoint root " + lines.dropFirst().joined(separator: "\n"))
        }
        return lines.dropFirst().filter { !$0.isEmpty }
            .map { (CheckpointLayout.step(fromDirectoryName: $0)!, $0) }
            .sorted { ($0.step, $0.name) > ($1.step, $1.name) }
    }

    /// Rank 0's copy of a small file: "missing", "error: …" or the bytes.
    private enum Shared {
        case missing
        case unreadable(String)
        case bytes([UInt8])
    }

    private static func share(_ path: String, _ group: CollectiveGroup) throws -> Shared {
        var payload: [UInt8] = []
        if group.rank == 0 {
            if !CheckpointDirectory.exists(path) {
                payload = [0]
            } else {
                do { payload = [1] + (try readWholeFile(path)) } catch { payload = [2] + Array("\(error)".utf8) }
            }
        }
        let received = try RankExchange.broadcastFromRoot(payload, group)
        switch received.first {
        case 1: return .bytes(Array(received.dropFirst()))
        case 2: return .unreadable(String(decoding: received.dropFirst(), as: UTF8.self))
        default: return .missing
        }
    }

    private static func verify(directory: String, step: Int?, group: CollectiveGroup) throws -> CheckpointListing {
        func damaged(_ problems: [String]) -> CheckpointListing {
            CheckpointListing(step: step ?? -1, directory: directory, problems: problems, checkpoint: nil)
        }
        let manifest: CheckpointManifest
        switch try share(directory + "/" + CheckpointLayout.manifestFile, group) {
        case .missing: return damaged(["manifest missing"])
        case .unreadable(let message): return damaged(["manifest unreadable: \(message)"])
        case .bytes(let bytes):
            do { manifest = try CheckpointManifest.decode(bytes) } catch { return damaged(["\(error)"]) }
        }
        let stateShared = try share(directory + "/" + CheckpointLayout.trainerStateFile, group)

        var problems: [String] = []
        if let step, manifest.step != step {
            problems.append("manifest says step \(manifest.step), the directory is \(CheckpointLayout.directoryName(step: step))")
        }
        let listed = Set(manifest.files.map(\.name))
        let required = CheckpointManifest.requiredFiles(worldSize: manifest.worldSize)
        for name in required where !listed.contains(name) {
            problems.append("manifest does not list \(name)")
        }
        for name in manifest.files.map(\.name) where !required.contains(name) {
            problems.append("manifest lists unexpected file \(name)")
        }

        var trainerState: TrainerState?
        if let record = manifest.file(CheckpointLayout.trainerStateFile) {
            switch stateShared {
            case .missing: problems.append(missing(record.name))
            case .unreadable(let message): problems.append("file \(record.name): \(message)")
            case .bytes(let bytes):
                if bytes.count != record.size {
                    problems.append("file \(record.name): size \(bytes.count), manifest says \(record.size)")
                } else if Checksum.crc32c(bytes) != record.crc32c {
                    problems.append("file \(record.name): CRC mismatch")
                } else {
                    do {
                        let state = try TrainerState.decode(bytes)
                        if state.globalStep != manifest.step || state.worldSize != manifest.worldSize {
                            problems.append("trainer state is step \(state.globalStep) of \(state.worldSize) ranks, "
                                            + "the manifest step \(manifest.step) of \(manifest.worldSize)")
                        } else if (try? ClassPartition(totalClasses: state.totalClasses, parts: state.worldSize)) == nil {
                            problems.append("trainer state: \(state.totalClasses) classes cannot be split over \(state.worldSize) ranks")
                        } else {
                            trainerState = state
                        }
                    } catch {
                        problems.append("\(error)")
                    }
                }
            }
        }

        // The other files, checksummed round-robin: file i by rank i mod P.
        let files = manifest.files.filter { $0.name != CheckpointLayout.trainerStateFile }
        var mine = ""
        for (index, record) in files.enumerated() where index % group.size == group.rank {
            if let problem = check(directory + "/" + record.name, record) { mine += "\(index)\t\(problem)\n" }
        }
        var found: [(index: Int, text: String)] = []
        for part in try RankExchange.allGather(Array(mine.utf8), group) {
            for line in String(decoding: part, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: "\t", maxSplits: 1)
                found.append((Int(fields[0]) ?? 0, fields.count > 1 ? String(fields[1]) : ""))
            }
        }
        problems += found.sorted { $0.index < $1.index }.map(\.text)

        guard problems.isEmpty, let trainerState else {
            return damaged(problems.isEmpty ? ["trainer state missing"] : problems)
        }
        let checkpoint = Checkpoint(directory: directory, manifest: manifest, trainerState: trainerState)
        return CheckpointListing(step: manifest.step, directory: directory, problems: [], checkpoint: checkpoint)
    }

    private static func check(_ path: String, _ record: CheckpointManifest.FileRecord) -> String? {
        guard let size = fileSize(path) else { return missing(record.name) }
        if size != record.size { return "file \(record.name): size \(size), manifest says \(record.size)" }
        do {
            if try Checksum.crc32c(fileAt: path) != record.crc32c { return "file \(record.name): CRC mismatch" }
        } catch {
            return "file \(record.name): \(error)"
        }
        return nil
    }

    private static func missing(_ name: String) -> String {
        if CheckpointLayout.headShard(fromFile: name) != nil {
            return "shard \(name.dropLast(".safetensors".count)) missing"
        }
        return "file \(name) missing"
    }
}

/// Size of a regular file, nil when there is none.
func fileSize(_ path: String) -> Int? {
    var info = stat()
    guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
    return Int(info.st_size)
}
