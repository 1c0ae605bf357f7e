// `adaface-dist bench allreduce`: latency and bandwidth of the collectives the trainer uses, over a
// range of message sizes, under mpirun. The figures feed the alpha-beta model of
// Scripts/scaling_model.py.
import Collectives
import Foundation
import Serialization
import Tensors

enum BenchAllReduceCommand {
    static let spec = CommandSpec(
        name: "allreduce",
        abstract: "Collective latency and bandwidth from 4 KB to 256 MB (all-reduce, all-gather, reduce-scatter, broadcast).",
        discussion: """
            Run under mpirun. Sizes run from --from to --to by factors of --factor. The size is the \
            all-reduced buffer, the gathered output, the scattered input or the broadcast buffer, \
            as in nccl-tests. Per size, every rank times the same number of back-to-back \
            operations; the figure is the slowest rank's mean. algbw = bytes / time; busbw scales \
            it by what each rank must move at least (all-reduce 2(P-1)/P, all-gather and \
            reduce-scatter (P-1)/P), so it compares with link bandwidth. Each collective ends with \
            a least-squares fit t = alpha + bytes/bandwidth. --json writes every row and fit.
            """,
        options: [
            .option("ops", valueName: "list",
                    help: "Comma-separated: allreduce, iallreduce (start + wait, as the gradient buckets), allgather, reducescatter, broadcast.",
                    default: "allreduce,iallreduce,allgather,reducescatter,broadcast"),
            .option("from", valueName: "bytes", help: "Smallest size (suffixes K, M, G: powers of 1024).", default: "4K"),
            .option("to", valueName: "bytes", help: "Largest size.", default: "256M"),
            .option("factor", valueName: "n", help: "Size step.", default: "4"),
            .option("seconds", valueName: "s", help: "Target time per size (sets the repetitions, 3 to 1000).", default: "0.5"),
            .option("json", valueName: "file", help: "Write the rows and fits as JSON (rank 0)."),
        ],
        run: run)

    enum Operation: String, CaseIterable {
        case allreduce, iallreduce, allgather, reducescatter, broadcast

        /// What each rank must send at least, per byte of `size`, so that busbw compares with a link.
        func busFactor(ranks p: Int) -> Double {
            let pd = Double(p)
            switch self {
            case .allreduce, .iallreduce: return p > 1 ? 2 * (pd - 1) / pd : 0
            case .allgather, .reducescatter: return p > 1 ? (pd - 1) / pd : 0
            case .broadcast: return p > 1 ? 1 : 0
            }
        }
    }

    struct Row {
        let operation: Operation
        let bytes: Int
        let repetitions: Int
        let seconds: Double
    }

    static func run(_ args: ParsedArguments) throws -> Int32 {
        let operations = try parseOperations(args.string("ops") ?? "")
        let smallest = try parseBytes(args.string("from") ?? "4K", option: "from")
        let largest = try parseBytes(args.string("to") ?? "256M", option: "to")
        let factor = try args.requiredInt("factor", min: 2)
        let target = try args.requiredDouble("seconds", min: 1e-3, max: 600)
        guard smallest >= 4, largest >= smallest else {
            throw CommandExit(code: 2, message: "--from must be at least 4 bytes and at most --to")
        }
        let world = try MPIRuntime.world()
        defer { MPIRuntime.finalize() }
        var sizes: [Int] = []
        var size = smallest
        while size <= largest { sizes.append(size); size *= factor }

        // Buffers for the largest size, touched once so that page faults stay out of the timings.
        let capacity = (largest + 3) / 4
        let send = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
        let receive = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
        defer { send.deallocate(); receive.deallocate() }
        var rng = SplitMix64(seed: 11, UInt64(world.rank))
        for i in 0..<capacity { send[i] = rng.nextUniform(); receive[i] = 0 }

        if world.rank == 0 {
            print("collectives over \(world.size) rank(s): \(operations.map(\.rawValue).joined(separator: ", ")); "
                  + "\(formatBytes(smallest)) to \(formatBytes(largest)) by ×\(factor), about \(target) s per size")
            print("  op             size     reps     time (us)   algbw (GB/s)   busbw (GB/s)")
        }
        var rows: [Row] = []
        for operation in operations {
            for bytes in sizes {
                let elements = bytes / 4
                let once = { try perform(operation, elements: elements, send: send, receive: receive, world: world) }
                // One untimed call, then a timed probe that sets the repetitions (rank 0's choice for all).
                try once()
                try world.barrier()
                var t = MonotonicClock.now()
                try once()
                let probe = try world.allReduce(MonotonicClock.now() - t, .max)
                let repetitions = min(1000, max(3, Int(target / max(probe, 1e-7))))
                try world.barrier()
                t = MonotonicClock.now()
                for _ in 0..<repetitions { try once() }
                let mean = try world.allReduce((MonotonicClock.now() - t) / Double(repetitions), .max)
                let row = Row(operation: operation, bytes: elements * 4, repetitions: repetitions, seconds: mean)
                rows.append(row)
                if world.rank == 0 {
                    let algorithmic = Double(row.bytes) / mean / 1e9
                    let name = operation.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)
                    let label = String(repeating: " ", count: max(0, 8 - formatBytes(row.bytes).count)) + formatBytes(row.bytes)
                    print("  " + name + " " + label + String(format: " %8d %13.1f %14.3f %14.3f", repetitions, mean * 1e6,
                                                              algorithmic, algorithmic * operation.busFactor(ranks: world.size)))
                    fflush(stdout)
                }
            }
        }
        guard world.rank == 0 else { return 0 }
        var fits: [(Operation, AlphaBeta)] = []
        for operation in operations {
            let fit = AlphaBeta.fit(rows.filter { $0.operation == operation }.map { (Double($0.bytes), $0.seconds) })
            fits.append((operation, fit))
            print(String(format: "%@: alpha %.1f us, beta %.3f ns/byte (%.2f GB/s algorithmic, %.2f GB/s bus)",
                         operation.rawValue, fit.alpha * 1e6, fit.beta * 1e9, fit.bandwidth / 1e9,
                         fit.bandwidth * operation.busFactor(ranks: world.size) / 1e9))
        }
        if let path = args.string("json") {
            let rowJSON = rows.map { row in
                JSONLine.render([("op", JSONLine.string(row.operation.rawValue)), ("bytes", "\(row.bytes)"),
                                 ("repetitions", "\(row.repetitions)"), ("seconds", String(format: "%.6e", row.seconds))])
            }
            let fitJSON = fits.map { operation, fit in
                JSONLine.render([("op", JSONLine.string(operation.rawValue)), ("alpha_s", String(format: "%.6e", fit.alpha)),
                                 ("beta_s_per_byte", String(format: "%.6e", fit.beta)),
                                 ("bus_factor", JSONLine.number(operation.busFactor(ranks: world.size)))])
            }
            let json = "{\"bench\":\"allreduce\",\"ranks\":\(world.size),\"rows\":[\n  "
                + rowJSON.joined(separator: ",\n  ") + "\n],\"fits\":[\n  " + fitJSON.joined(separator: ",\n  ") + "\n]}\n"
            try AtomicFile.write(Array(json.utf8), to: path)
            print("wrote \(path)")
        }
        return 0
    }

    /// One collective of `elements` floats in total, as the trainer calls it.
    static func perform(_ operation: Operation, elements: Int, send: UnsafeMutablePointer<Float>,
                        receive: UnsafeMutablePointer<Float>, world: Communicator) throws {
        let p = world.size
        switch operation {
        case .allreduce:
            try world.allReduce(send, count: elements, .sum)
        case .iallreduce:
            try world.allReduceNonBlocking(send, count: elements, .sum).wait()
        case .allgather:
            try world.allGather(UnsafePointer(send), count: max(1, elements / p), into: receive)
        case .reducescatter:
            try world.reduceScatter(UnsafePointer(send), blockCount: max(1, elements / p), into: receive)
        case .broadcast:
            try world.broadcast(send, count: elements, root: 0)
        }
    }

    static func parseOperations(_ list: String) throws -> [Operation] {
        let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty else { throw CommandExit(code: 2, message: "--ops: give at least one collective") }
        return try names.map { name in
            guard let operation = Operation(rawValue: name) else {
                throw CommandExit(code: 2, message: "--ops: unknown collective '\(name)' (one of "
                                  + Operation.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            return operation
        }
    }

    /// "4096", "4K", "256M", "1G" → bytes (powers of 1024).
    static func parseBytes(_ text: String, option: String) throws -> Int {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = text.uppercased()
        var unit = 1
        if let last = digits.last, let scale = units[last] { unit = scale; digits.removeLast() }
        guard let value = Int(digits), value > 0, value <= (1 << 31) / unit else {
            throw CommandExit(code: 2, message: "--\(option): expected a size like 4096, 4K or 256M (at most 2G), got '\(text)'")
        }
        return value * unit
    }

    static func formatBytes(_ bytes: Int) -> String {
        if bytes >= 1 << 30 && bytes % (1 << 30) == 0 { return "\(bytes >> 30) GB" }
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KB" }
        return "\(bytes) B"
    }
}

/// t(bytes) = alpha + beta·bytes, fitted by least squares on relative error (each size weighs the
/// same, so the small sizes fix alpha and the large ones beta).
public struct AlphaBeta: Equatable {
    public var alpha: Double
    public var beta: Double
    public var bandwidth: Double { beta > 0 ? 1 / beta : .infinity }

    public init(alpha: Double, beta: Double) { self.alpha = alpha; self.beta = beta }

    public static func fit(_ samples: [(bytes: Double, seconds: Double)]) -> AlphaBeta {
        // Minimise Σ ((alpha + beta·n − t) / t)²: weighted linear least squares with w = 1/t².
        var s00 = 0.0, s01 = 0.0, s11 = 0.0, r0 = 0.0, r1 = 0.0
        for (n, t) in samples where t > 0 {
            let w = 1 / (t * t)
            s00 += w; s01 += w * n; s11 += w * n * n
            r0 += w * t; r1 += w * n * t
        }
        let determinant = s00 * s11 - s01 * s01
        guard determinant > 1e-12 * s00 * s11 else { return AlphaBeta(alpha: samples.first?.seconds ?? 0, beta: 0) }
        let alpha = (r0 * s11 - r1 * s01) / determinant
        let beta = (s00 * r1 - s01 * r0) / determinant
        return AlphaBeta(alpha: max(0, alpha), beta: max(0, beta))
    }
}
