// Pieces several subcommands share: architecture and thread options, clocks, memory figures.
import Collectives
import Foundation
import Layers
import Serialization
import Tensors
import Training

enum CommonOptions {
    static let architectures = ["ir18", "ir34", "ir50", "ir100", "ir101"]

    static func architecture(help: String = "Backbone: ir18, ir34, ir50, ir100 (alias ir101).",
                             default value: String? = nil) -> OptionSpec {
        .option("arch", valueName: "arch", help: help, default: value, required: value == nil)
    }

    static let threads = OptionSpec.option(
        "threads", valueName: "threads",
        help: "Compute threads of this process (OpenBLAS and the engine's own loops). (default: the cores)")

    static func parseArchitecture(_ args: ParsedArguments) throws -> IResNetArchitecture {
        let name = try args.requiredChoice("arch", architectures)
        return IResNetArchitecture(name: name)!
    }

    /// Applies `--threads` (or all cores) to OpenBLAS and the engine's loops; returns the count.
    @discardableResult
    static func applyThreads(_ args: ParsedArguments) throws -> Int {
        let n = try args.int("threads", min: 1, max: 1024) ?? ProcessInfo.processInfo.activeProcessorCount
        ComputeThreads.configure(n)
        return n
    }
}

/// A backbone from `--checkpoint DIR` (a checkpoint or a root: its newest verified one; the
/// architecture from the checkpoint's configuration unless `--arch` says otherwise) or from
/// `--weights FILE --arch irNN`. Returns the network and where it came from.
enum ModelSource {
    static func load(_ args: ParsedArguments, group: CollectiveGroup) throws -> (network: IResNet, source: String) {
        if let path = args.string("checkpoint") {
            let checkpoint = try resolveCheckpoint(path, group: group)
            let archName = try args.string("arch") ?? TrainingConfiguration(
                jsonText: checkpoint.trainerState.configJSON, source: checkpoint.directory).model.arch.rawValue
            guard let arch = IResNetArchitecture(name: archName) else { throw UsageError("unknown --arch '\(archName)'") }
            let net = IResNet(arch)
            try checkpoint.loadBackbone(into: net.store)
            return (net, checkpoint.directory)
        }
        if let weights = args.string("weights") {
            guard let name = args.string("arch"), let arch = IResNetArchitecture(name: name) else {
                throw UsageError("--weights needs --arch ir18|ir34|ir50|ir100")
            }
            let net = IResNet(arch)
            try net.store.readSafeTensors(from: weights)
            return (net, weights)
        }
        throw UsageError("give --checkpoint DIR or --weights FILE")
    }

    /// A checkpoint directory that verifies, or the newest verified one under a root.
    static func resolveCheckpoint(_ path: String, group: CollectiveGroup) throws -> Checkpoint {
        let direct = try CheckpointStore.verify(directory: path, group: group)
        if let checkpoint = direct.checkpoint { return checkpoint }
        let (latest, _) = try CheckpointStore.latestValid(root: path, group: group)
        guard let checkpoint = latest else {
            throw CommandExit(code: 1, message: "\(path): no verified checkpoint (\(direct.problems.joined(separator: "; ")))")
        }
        return checkpoint
    }
}

/// The commands' clock (the standard library's `Clock` protocol would otherwise shadow it).
typealias Clock = MonotonicClock

enum ProcessMemory {
    /// Peak resident set size of this process, in bytes.
    static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }
}

enum JSONLine {
    /// One-line JSON from ordered pairs (values already formatted as JSON literals).
    static func render(_ pairs: [(String, String)]) -> String {
        "{" + pairs.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    static func string(_ s: String) -> String { jsonQuoted(s) }

    static func number(_ x: Double, digits: Int = 4) -> String {
        x.isFinite ? String(format: "%.\(digits)f", x) : "null"
    }
}
