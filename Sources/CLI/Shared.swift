// Pieces several subcommands share: architecture and thread options, clocks, memory figures.
import Foundation
import Layers
import Serialization
import Tensors

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
