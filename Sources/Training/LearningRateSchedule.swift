// The learning rate of every step: multi-step decay, polynomial decay or constant, with an
// optional linear warmup. Positions are in epochs, fractions included: step s of an epoch of S
// steps sits at s / S, so a schedule means the same thing at any batch size or rank count.
import Foundation

public struct LearningRateSchedule: Equatable, Sendable {
    public let kind: TrainingConfiguration.ScheduleKind
    /// The rate after warmup and before any decay (already scaled with the global batch).
    public let baseRate: Double
    public let epochs: Int
    public let stepsPerEpoch: Int
    public let milestones: [Double]
    public let gamma: Double
    public let warmupEpochs: Double
    public let power: Double

    public init(kind: TrainingConfiguration.ScheduleKind, baseRate: Double, epochs: Int, stepsPerEpoch: Int,
                milestones: [Double] = [], gamma: Double = 0.1, warmupEpochs: Double = 0, power: Double = 1) {
        precondition(stepsPerEpoch >= 1, "an epoch needs at least one step, got \(stepsPerEpoch)")
        precondition(epochs >= 1, "the schedule needs at least one epoch, got \(epochs)")
        precondition(warmupEpochs >= 0 && warmupEpochs < Double(epochs), "warmup must end before the last epoch")
        self.kind = kind; self.baseRate = baseRate; self.epochs = epochs; self.stepsPerEpoch = stepsPerEpoch
        self.milestones = milestones; self.gamma = gamma; self.warmupEpochs = warmupEpochs; self.power = power
    }

    /// The schedule of a configuration: its effective (batch-scaled) rate over `training.epochs`.
    public init(configuration: TrainingConfiguration, stepsPerEpoch: Int) {
        let schedule = configuration.optimizer.schedule
        self.init(kind: schedule.type, baseRate: configuration.effectiveLearningRate,
                  epochs: configuration.training.epochs, stepsPerEpoch: stepsPerEpoch,
                  milestones: schedule.milestones, gamma: schedule.gamma,
                  warmupEpochs: schedule.warmupEpochs, power: schedule.power)
    }

    /// The position of a step in epochs.
    public func epoch(atStep globalStep: Int) -> Double { Double(globalStep) / Double(stepsPerEpoch) }

    /// The rate for the update of step `globalStep` (0-based, counted over the whole run).
    ///
    /// - Warmup: step s (while s / S < warmup_epochs) gets (s + 1) / (warmup_epochs·S) of the
    ///   rate, so the first step is near 0, none is exactly 0, and the rate is reached at the end.
    /// - multistep: × gamma for every milestone at or before the step's position (the rate changes
    ///   on the first step of the milestone epoch, as PyTorch's MultiStepLR stepped per epoch).
    /// - poly: base × (1 − (t − w)/(T − w))^power after the warmup w, reaching 0 at the end T.
    public func rate(atStep globalStep: Int) -> Double {
        precondition(globalStep >= 0, "negative step \(globalStep)")
        let t = epoch(atStep: globalStep)
        let total = Double(epochs)
        var rate = baseRate
        switch kind {
        case .constant:
            break
        case .multistep:
            let passed = milestones.reduce(0) { $0 + (t >= $1 ? 1 : 0) }
            rate *= pow(gamma, Double(passed))
        case .poly:
            if t >= warmupEpochs {
                let remaining = max(0, 1 - (t - warmupEpochs) / (total - warmupEpochs))
                rate *= pow(remaining, power)
            }
        }
        if t < warmupEpochs {
            rate *= min(1, Double(globalStep + 1) / (warmupEpochs * Double(stepsPerEpoch)))
        }
        return rate
    }

    /// One line for the log, e.g. "multistep ×0.1 at epochs 12, 20, 24 of 26, base 0.1".
    public var summary: String {
        var text: String
        switch kind {
        case .constant: text = "constant"
        case .multistep:
            text = milestones.isEmpty ? "multistep (no milestones)"
                : "multistep ×\(configNumber(gamma)) at epochs " + milestones.map(configNumber).joined(separator: ", ")
        case .poly: text = "poly (power \(configNumber(power)))"
        }
        text += " of \(epochs) epochs, base \(configNumber(baseRate)), \(stepsPerEpoch) steps/epoch"
        if warmupEpochs > 0 { text += ", warmup \(configNumber(warmupEpochs)) epochs" }
        return text
    }
}
