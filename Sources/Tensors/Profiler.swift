// Wall-clock time per kernel kind, for `bench backbone --profile`. Off by default; when off, a
// measured region costs one branch.
import Foundation

public enum KernelProfiler {
    nonisolated(unsafe) public static var isEnabled = false
    nonisolated(unsafe) private static var totals: [String: (seconds: Double, calls: Int, flops: Double)] = [:]

    @inline(__always)
    public static func measure<T>(_ name: @autoclosure () -> String, flops: Double = 0,
                                  _ body: () throws -> T) rethrows -> T {
        guard isEnabled else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        let key = name()
        let previous = totals[key] ?? (0, 0, 0)
        totals[key] = (previous.seconds + seconds, previous.calls + 1, previous.flops + flops)
        return result
    }

    public static func reset() { totals = [:] }

    /// Rows of (name, seconds, calls, GFLOP/s or nil), slowest first.
    public static var report: [(name: String, seconds: Double, calls: Int, gflops: Double?)] {
        totals.map { ($0.key, $0.value.seconds, $0.value.calls, $0.value.flops > 0 ? $0.value.flops / $0.value.seconds * 1e-9 : nil) }
            .sorted { $0.seconds > $1.seconds }
    }
}
