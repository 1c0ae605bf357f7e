// A small test harness for multi-rank tests. MPI can be initialised once per process, so these tests
// run in one executable launched by `mpirun -n P`. Every rank runs every test; a test fails when it
// fails on any rank. Rank 0 prints the results and the closing `N passed, N failed` line.
import Collectives
import Foundation

final class Expectations {
    private(set) var failures: [String] = []

    func fail(_ message: String, file: StaticString = #file, line: UInt = #line) {
        failures.append("\(URL(fileURLWithPath: "\(file)").lastPathComponent):\(line): \(message)")
    }

    func check(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
        if !condition { fail(message(), file: file, line: line) }
    }

    func equal<T: Equatable>(_ a: T, _ b: T, _ what: String, file: StaticString = #file, line: UInt = #line) {
        if a != b { fail("\(what): \(a) != \(b)", file: file, line: line) }
    }

    /// |a − b| ≤ tolerance · max(1, |b|).
    func near(_ a: Double, _ b: Double, tolerance: Double, _ what: String, file: StaticString = #file, line: UInt = #line) {
        if !(abs(a - b) <= tolerance * max(1, abs(b))) { fail("\(what): \(a) vs \(b) (tolerance \(tolerance))", file: file, line: line) }
    }
}

struct MPITest {
    let name: String
    /// Smallest world the test makes sense for.
    let minimumRanks: Int
    let body: (Communicator, Expectations) throws -> Void

    init(_ name: String, minimumRanks: Int = 1, _ body: @escaping (Communicator, Expectations) throws -> Void) {
        self.name = name; self.minimumRanks = minimumRanks; self.body = body
    }
}

enum MPITestRunner {
    static func run(_ tests: [MPITest], filter: String?) -> Int32 {
        let world: Communicator
        do { world = try MPIRuntime.world() } catch {
            print("Error: cannot initialise MPI: \(error)")
            return 1
        }
        var passed = 0, failed = 0, skipped = 0
        for test in tests {
            if let filter, !test.name.contains(filter) { continue }
            if world.size < test.minimumRanks { skipped += 1; continue }
            let expectations = Expectations()
            do { try test.body(world, expectations) } catch { expectations.fail("threw \(error)") }
            // A test fails if it failed anywhere; rank 0 reports every rank's messages.
            let localFailures = Int64(expectations.failures.count)
            let anyFailures = (try? world.allReduce(localFailures, .sum)) ?? 1
            let messages = gatherMessages(expectations.failures, world: world)
            if world.rank == 0 {
                if anyFailures == 0 {
                    print("PASS \(test.name) [\(world.size) ranks]")
                } else {
                    print("FAIL \(test.name) [\(world.size) ranks]")
                    for m in messages { print("    \(m)") }
                }
            }
            if anyFailures == 0 { passed += 1 } else { failed += 1 }
        }
        if world.rank == 0 {
            print("\(passed) passed, \(failed) failed" + (skipped > 0 ? ", \(skipped) skipped" : ""))
        }
        return failed == 0 ? 0 : 1
    }

    /// Every rank's failure messages, prefixed with the rank, at rank 0.
    private static func gatherMessages(_ failures: [String], world: Communicator) -> [String] {
        let text = failures.map { "rank \(world.rank): \($0)\n" }.joined()
        let bytes = Array(text.utf8)
        var lengths = [Int64](repeating: 0, count: world.size)
        let mine = Int64(bytes.count)
        guard (try? lengths.withUnsafeMutableBufferPointer { out in
            try withUnsafePointer(to: mine) { try world.allGather($0, count: 1, into: out.baseAddress!) }
        }) != nil else { return ["(could not gather failure messages)"] }
        let total = Int(lengths.reduce(0, +))
        var all = [UInt8](repeating: 0, count: max(total, 1))
        let ok = (try? bytes.withUnsafeBufferPointer { src in
            try all.withUnsafeMutableBufferPointer { dst in
                try world.allGatherV(src.baseAddress ?? UnsafePointer(dst.baseAddress!), counts: lengths.map { Int($0) },
                                     into: dst.baseAddress!)
            }
        }) != nil
        guard ok else { return ["(could not gather failure messages)"] }
        return String(decoding: all.prefix(total), as: UTF8.self).split(separator: "\n").map(String.init)
    }
}
