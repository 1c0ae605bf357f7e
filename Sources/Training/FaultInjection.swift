// A test hook for the fault-injection suite (Scripts/faults.sh): non-finite values planted at a
// chosen step on a chosen rank, so that the skip/abort path and the checkpoint writer's refusal of
// non-finite values run through the real binary. Read once, from the environment, at start:
//
//   ADAFACE_DIST_INJECT_NONFINITE=loss@5            NaN as rank 0's loss of step 5
//   ADAFACE_DIST_INJECT_NONFINITE=gradient@5:1      +Inf in one of rank 1's gradients of step 5, before
//                                                   the all-reduce (so every rank's average is Inf)
//   ADAFACE_DIST_INJECT_NONFINITE=weight@5          NaN in one of rank 0's backbone weights after the
//                                                   update of step 5 (bypasses the step check, so
//                                                   only the checkpoint writer stands in the way)
//   ADAFACE_DIST_INJECT_NONFINITE=loss@3,gradient@4 several, comma-separated
//
// Steps count from 1, as the log numbers them. Unset or empty: nothing is injected.
import Foundation

public struct NonFiniteInjection: Equatable, Sendable, CustomStringConvertible {
    public enum Target: String, Sendable, CaseIterable {
        case loss, gradient, weight
    }

    public static let environmentVariable = "ADAFACE_DIST_INJECT_NONFINITE"

    public let target: Target
    /// The global step, counted from 1.
    public let step: Int
    public let rank: Int

    public init(target: Target, step: Int, rank: Int = 0) {
        self.target = target; self.step = step; self.rank = rank
    }

    public var description: String { "\(target.rawValue)@\(step):\(rank)" }

    /// Parses a comma-separated list of `TARGET@STEP[:RANK]`; the error names the bad item.
    public static func parse(_ text: String) throws -> [NonFiniteInjection] {
        try text.split(separator: ",", omittingEmptySubsequences: true).map { item in
            let spec = item.trimmingCharacters(in: .whitespaces)
            func bad(_ why: String) -> TrainingFailure {
                TrainingFailure("\(environmentVariable): '\(spec)': \(why) (expected TARGET@STEP[:RANK], "
                                + "TARGET one of \(Target.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let parts = spec.split(separator: "@", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw bad("no single '@'") }
            guard let target = Target(rawValue: String(parts[0])) else { throw bad("unknown target '\(parts[0])'") }
            let place = parts[1].split(separator: ":", omittingEmptySubsequences: false)
            guard place.count <= 2, let step = Int(place[0]), step >= 1 else { throw bad("the step must be a whole number ≥ 1") }
            var rank = 0
            if place.count == 2 {
                guard let r = Int(place[1]), r >= 0 else { throw bad("the rank must be a whole number ≥ 0") }
                rank = r
            }
            return NonFiniteInjection(target: target, step: step, rank: rank)
        }
    }

    /// The injections of the environment variable, none when it is unset.
    public static func fromEnvironment(_ environment: [String: String]) throws -> [NonFiniteInjection] {
        guard let text = environment[environmentVariable] else { return [] }
        return try parse(text)
    }
}

extension [NonFiniteInjection] {
    /// Whether `target` is planted at `step` on `rank`.
    func plants(_ target: NonFiniteInjection.Target, step: Int, rank: Int) -> Bool {
        contains { $0.target == target && $0.step == step && $0.rank == rank }
    }
}
