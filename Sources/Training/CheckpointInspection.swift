// What `adaface-dist inspect` reports about a checkpoint directory or a checkpoint root, as text for
// people and as JSON for scripts. Lives here (not in the CLI) so the trainer's tests can check it.
import Foundation
import Heads
import Serialization

public struct CheckpointReport {
    public struct File {
        public let name: String
        /// On disk; nil when the file is missing.
        public let size: Int?
        /// From the manifest; nil when the manifest does not list the file.
        public let manifestSize: Int?
        public let crc32c: UInt32?
    }

    public let directory: String
    public let step: Int?
    /// Empty when the manifest verified.
    public let problems: [String]
    public let manifest: CheckpointManifest?
    public let trainerState: TrainerState?
    public let files: [File]
    public let shards: [(file: String, classRange: Range<Int>)]

    public var isValid: Bool { problems.isEmpty }
}

public struct CheckpointRootReport {
    public let root: String
    public let checkpoints: [CheckpointListing]
    /// Interrupted writes; ignored by resume, removed by pruning once a newer checkpoint exists.
    public let temporaries: [(step: Int, directory: String)]
    public let newestValid: CheckpointReport?
}

public enum CheckpointInspection {
    public enum Result {
        case checkpoint(CheckpointReport)
        case root(CheckpointRootReport)
    }

    /// A directory holding manifest.json or named `step-…` is a checkpoint; any other directory is a root.
    public static func inspect(path: String) throws -> Result {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard CheckpointDirectory.isDirectory(trimmed) else {
            throw CheckpointError(.notFound, "\(path): no such directory")
        }
        let name = trimmed.split(separator: "/").last.map(String.init) ?? trimmed
        if CheckpointLayout.step(fromDirectoryName: name) != nil
            || CheckpointDirectory.exists(trimmed + "/" + CheckpointLayout.manifestFile) {
            return .checkpoint(try report(directory: trimmed))
        }
        let listings = try CheckpointStore.list(root: trimmed)
        let newest = try listings.first(where: \.isValid).map { try report(directory: $0.directory, listing: $0) }
        return .root(CheckpointRootReport(root: trimmed, checkpoints: listings,
                                          temporaries: CheckpointStore.temporaryDirectories(root: trimmed), newestValid: newest))
    }

    static func report(directory: String, listing given: CheckpointListing? = nil) throws -> CheckpointReport {
        let listing = try given ?? CheckpointStore.verify(directory: directory)
        // A damaged checkpoint still shows whatever parses.
        let manifest = listing.checkpoint?.manifest
            ?? (try? readWholeFile(directory + "/" + CheckpointLayout.manifestFile)).flatMap { try? CheckpointManifest.decode($0) }
        let state = listing.checkpoint?.trainerState
            ?? (try? readWholeFile(directory + "/" + CheckpointLayout.trainerStateFile)).flatMap { try? TrainerState.decode($0) }

        var names = manifest?.files.map(\.name) ?? []
        let present = ((try? CheckpointDirectory.entries(directory)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        names += present.filter { !names.contains($0) && $0 != CheckpointLayout.manifestFile }
        let files = names.map { name in
            CheckpointReport.File(name: name, size: fileSize(directory + "/" + name),
                                  manifestSize: manifest?.file(name)?.size, crc32c: manifest?.file(name)?.crc32c)
        }
        var shards: [(file: String, classRange: Range<Int>)] = []
        if let state, let partition = try? ClassPartition(totalClasses: state.totalClasses, parts: manifest?.worldSize ?? state.worldSize) {
            shards = (0..<partition.parts).map { (CheckpointLayout.headShardFile(rank: $0, of: partition.parts), partition.range(of: $0)) }
        }
        let name = directory.split(separator: "/").last.map(String.init) ?? directory
        return CheckpointReport(directory: directory, step: manifest?.step ?? CheckpointLayout.step(fromDirectoryName: name),
                                problems: listing.problems, manifest: manifest, trainerState: state, files: files, shards: shards)
    }
}

// MARK: - Text

extension CheckpointReport {
    public func text() -> String {
        var lines = ["checkpoint   \(directory)"]
        lines.append("manifest     " + (isValid ? "verified (\(manifest?.files.count ?? 0) files, sizes and CRC-32C match)" : "DAMAGED"))
        for problem in problems { lines.append("               - \(problem)") }
        if let step { lines.append("step         \(step)") }
        if let created = manifest?.created { lines.append("created      \(created)") }
        if let s = trainerState {
            lines.append("epoch        \(s.epoch), step \(s.stepInEpoch) of the epoch (\(s.epochSamplesConsumed) samples in)")
            lines.append("samples      \(s.samplesSeen) seen")
            lines.append("world size   \(ranks(manifest?.worldSize ?? s.worldSize)), global batch \(s.globalBatch) (\(s.localBatch) per rank)")
            lines.append("classes      \(s.totalClasses) × \(s.embeddingSize)")
            lines.append("norm EMA     μ \(s.normMean)  σ \(s.normStd)")
            lines.append("lr           \(s.learningRate)")
            lines.append("seed         \(s.seed)")
            if !s.counters.isEmpty {
                lines.append("counters     " + s.counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
            lines.append("config       \(s.configName.isEmpty ? "(unnamed)" : s.configName)")
        } else if let worldSize = manifest?.worldSize {
            lines.append("world size   \(ranks(worldSize))")
        }
        if !shards.isEmpty {
            lines.append("shards")
            let width = shards.map(\.file.count).max() ?? 0
            for shard in shards {
                lines.append("  " + shard.file.padding(toLength: width, withPad: " ", startingAt: 0)
                             + "  classes \(shard.classRange.lowerBound)..<\(shard.classRange.upperBound) (\(shard.classRange.count))")
            }
        }
        lines.append("files")
        let width = files.map(\.name.count).max() ?? 0
        for file in files {
            var line = "  " + file.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
            line += file.size.map { formatBytes($0) } ?? "missing"
            if let crc = file.crc32c { line += "  crc32c \(CheckpointLayout.hex32(crc))" }
            if file.manifestSize == nil { line += "  (not in the manifest)" }
            lines.append(line)
        }
        lines.append("total        \(formatBytes(files.reduce(0) { $0 + ($1.size ?? 0) }))")
        return lines.joined(separator: "\n")
    }

    func jsonObject() -> [String: Any] {
        var object: [String: Any] = [
            "directory": directory, "status": isValid ? "verified" : "damaged", "problems": problems,
            "files": files.map { file -> [String: Any] in
                var entry: [String: Any] = ["name": file.name, "size": file.size.map { $0 as Any } ?? NSNull()]
                if let size = file.manifestSize { entry["manifest_size"] = size }
                if let crc = file.crc32c { entry["crc32c"] = CheckpointLayout.hex32(crc) }
                return entry
            },
            "shards": shards.map { ["file": $0.file, "class_start": $0.classRange.lowerBound, "class_count": $0.classRange.count] },
        ]
        if let step { object["step"] = step }
        if let manifest {
            object["world_size"] = manifest.worldSize
            object["created"] = manifest.created
            object["format_version"] = manifest.formatVersion
        }
        if let s = trainerState {
            object["epoch"] = s.epoch
            object["step_in_epoch"] = s.stepInEpoch
            object["epoch_samples_consumed"] = s.epochSamplesConsumed
            object["samples_seen"] = s.samplesSeen
            object["global_batch"] = s.globalBatch
            object["local_batch"] = s.localBatch
            object["total_classes"] = s.totalClasses
            object["embedding_size"] = s.embeddingSize
            object["norm_ema"] = ["mean": s.normMean, "std": s.normStd,
                                  "mean_bits": CheckpointLayout.hex(s.normMean.bitPattern),
                                  "std_bits": CheckpointLayout.hex(s.normStd.bitPattern)]
            object["learning_rate"] = s.learningRate
            object["seed"] = String(s.seed)
            object["counters"] = s.counters
            object["config_name"] = s.configName
        }
        return object
    }

    public func json() -> String { renderJSON(jsonObject()) }
}

extension CheckpointRootReport {
    public func text() -> String {
        var lines = ["checkpoint root  \(root)"]
        if checkpoints.isEmpty { lines.append("  (no checkpoints)") }
        let width = checkpoints.map { ($0.directory.split(separator: "/").last ?? "").count }.max() ?? 0
        for listing in checkpoints {
            let name = String(listing.directory.split(separator: "/").last ?? "")
            let status = listing.isValid ? "verified" : "DAMAGED: " + listing.problems.joined(separator: "; ")
            lines.append("  " + name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + status)
        }
        for temporary in temporaries {
            let name = temporary.directory.split(separator: "/").last ?? ""
            lines.append("  \(name)  interrupted write of step \(temporary.step), ignored")
        }
        if let newestValid {
            lines.append("newest valid: \(newestValid.directory)")
            lines.append("")
            lines.append(newestValid.text())
        } else {
            lines.append("no valid checkpoint")
        }
        return lines.joined(separator: "\n")
    }

    public func json() -> String {
        var object: [String: Any] = [
            "root": root,
            "checkpoints": checkpoints.map { ["directory": $0.directory, "step": $0.step,
                                              "status": $0.isValid ? "verified" : "damaged", "problems": $0.problems] },
            "temporaries": temporaries.map { ["directory": $0.directory, "step": $0.step] },
        ]
        object["newest_valid"] = newestValid.map { $0.jsonObject() } ?? NSNull()
        return renderJSON(object)
    }
}

extension CheckpointInspection.Result {
    public func text() -> String {
        switch self {
        case .checkpoint(let report): return report.text()
        case .root(let report): return report.text()
        }
    }

    public func json() -> String {
        switch self {
        case .checkpoint(let report): return report.json()
        case .root(let report): return report.json()
        }
    }

    /// Whether what was inspected holds a usable checkpoint.
    public var hasValidCheckpoint: Bool {
        switch self {
        case .checkpoint(let report): return report.isValid
        case .root(let report): return report.newestValid != nil
        }
    }
}

private func ranks(_ count: Int) -> String { count == 1 ? "1 rank" : "\(count) ranks" }

private func renderJSON(_ object: [String: Any]) -> String {
    // Plain dictionaries of strings, numbers and arrays always serialise.
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}

/// "174,325,120 bytes (166.3 MiB)".
func formatBytes(_ bytes: Int) -> String {
    let grouped = String(bytes).reversed().enumerated()
        .map { $0.offset > 0 && $0.offset % 3 == 0 ? ",\($0.element)" : "\($0.element)" }.joined().reversed()
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = -1
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return String(grouped) + " bytes" + (unit >= 0 ? String(format: " (%.1f ", value) + units[unit] + ")" : "")
}
