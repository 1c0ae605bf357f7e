// Learning-rate schedules: exact rates at milestone, warmup and decay boundaries, and how a
// configuration sets them up.
import Foundation
import Training
import XCTest

final class LearningRateScheduleTests: XCTestCase {
    private let tolerance = 1e-15

    private func assertRates(_ schedule: LearningRateSchedule, _ expected: [Int: Double],
                             file: StaticString = #filePath, line: UInt = #line) {
        for (step, rate) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(schedule.rate(atStep: step), rate, accuracy: tolerance, "step \(step)", file: file, line: line)
        }
    }

    func testMultiStepChangesOnTheFirstStepOfEachMilestoneEpoch() {
        let schedule = LearningRateSchedule(kind: .multistep, baseRate: 0.1, epochs: 26, stepsPerEpoch: 10,
                                            milestones: [12, 20, 24], gamma: 0.1)
        assertRates(schedule, [0: 0.1, 119: 0.1, 120: 0.01, 199: 0.01, 200: 0.001, 239: 0.001, 240: 0.0001, 259: 0.0001])
        // Beyond the last epoch (a capped or resumed run) the last rate holds.
        XCTAssertEqual(schedule.rate(atStep: 1000), 0.0001, accuracy: tolerance)
    }

    func testMultiStepWithAnEpochThatIsNotAWholeNumberOfMilestoneSteps() {
        // 7 steps per epoch, milestones at 1.5 and 2 epochs: 1.5 × 7 = 10.5, so step 11 is the first after it.
        let schedule = LearningRateSchedule(kind: .multistep, baseRate: 1, epochs: 3, stepsPerEpoch: 7,
                                            milestones: [1.5, 2], gamma: 0.5)
        assertRates(schedule, [10: 1, 11: 0.5, 13: 0.5, 14: 0.25, 20: 0.25])
        XCTAssertEqual(schedule.epoch(atStep: 14), 2)
    }

    func testLinearWarmupReachesTheBaseRateAtItsEnd() {
        // Half an epoch of 10 steps: 5 warmup steps at 1/5 … 5/5 of the rate, none at 0.
        let schedule = LearningRateSchedule(kind: .constant, baseRate: 0.1, epochs: 2, stepsPerEpoch: 10, warmupEpochs: 0.5)
        assertRates(schedule, [0: 0.02, 1: 0.04, 2: 0.06, 3: 0.08, 4: 0.1, 5: 0.1, 19: 0.1])
        // A warmup that ends between steps: 0.55 × 10 = 5.5 steps; step 5 is capped at the full rate.
        let uneven = LearningRateSchedule(kind: .constant, baseRate: 1, epochs: 2, stepsPerEpoch: 10, warmupEpochs: 0.55)
        assertRates(uneven, [0: 1 / 5.5, 4: 5 / 5.5, 5: 1, 6: 1])
    }

    func testWarmupCombinesWithMultiStep() {
        let schedule = LearningRateSchedule(kind: .multistep, baseRate: 0.4, epochs: 4, stepsPerEpoch: 4,
                                            milestones: [1, 3], gamma: 0.1, warmupEpochs: 1.5)
        // Warmup spans 6 steps; the milestone at epoch 1 (step 4) falls inside it.
        assertRates(schedule, [0: 0.4 / 6, 3: 0.4 * 4 / 6, 4: 0.04 * 5 / 6, 5: 0.04, 6: 0.04, 11: 0.04, 12: 0.004])
    }

    func testPolynomialDecayReachesZeroAtTheEnd() {
        let linear = LearningRateSchedule(kind: .poly, baseRate: 0.1, epochs: 2, stepsPerEpoch: 10, power: 1)
        assertRates(linear, [0: 0.1, 5: 0.075, 10: 0.05, 19: 0.005, 20: 0, 25: 0])
        let square = LearningRateSchedule(kind: .poly, baseRate: 0.1, epochs: 2, stepsPerEpoch: 10, power: 2)
        assertRates(square, [0: 0.1, 10: 0.025, 19: 0.1 * 0.05 * 0.05])
    }

    func testPolynomialDecayStartsAfterTheWarmup() {
        let schedule = LearningRateSchedule(kind: .poly, baseRate: 0.1, epochs: 2, stepsPerEpoch: 10, warmupEpochs: 0.5, power: 1)
        // Warmup over steps 0…4, the full rate at 0.5 epochs, then a line to 0 at epoch 2 (1.5 epochs long).
        assertRates(schedule, [0: 0.02, 4: 0.1, 5: 0.1, 8: 0.1 * (1 - 0.3 / 1.5), 12: 0.1 * (1 - 0.7 / 1.5), 19: 0.1 * (0.1 / 1.5)])
        XCTAssertEqual(schedule.rate(atStep: 20), 0)
    }

    func testConstant() {
        let schedule = LearningRateSchedule(kind: .constant, baseRate: 0.05, epochs: 3, stepsPerEpoch: 5, milestones: [1, 2])
        for step in 0..<30 { XCTAssertEqual(schedule.rate(atStep: step), 0.05) }
    }

    func testNeverIncreasesAfterTheWarmup() {
        for kind in TrainingConfiguration.ScheduleKind.allCases {
            let schedule = LearningRateSchedule(kind: kind, baseRate: 0.1, epochs: 5, stepsPerEpoch: 13,
                                                milestones: [1.2, 2.5, 4], gamma: 0.3, warmupEpochs: 0.7, power: 0.9)
            var previous = 0.0
            for step in 0..<(5 * 13) {
                let rate = schedule.rate(atStep: step)
                XCTAssertGreaterThan(rate, 0, "\(kind) step \(step)")
                if schedule.epoch(atStep: step) < 0.7 {
                    XCTAssertGreaterThanOrEqual(rate, previous, "\(kind) step \(step)")
                } else if step > 0 && schedule.epoch(atStep: step - 1) >= 0.7 {
                    XCTAssertLessThanOrEqual(rate, previous, "\(kind) step \(step)")
                }
                previous = rate
            }
        }
    }

    func testScheduleOfAConfiguration() throws {
        var configuration = try TrainingConfiguration.load(path: trainingConfigsDirectory + "/ir50_webface4m.json")
        try configuration.apply(overrides: [("training.global_batch", "1024")])
        // WebFace4M at 1024: the linear scaling rule doubles the rate.
        let schedule = LearningRateSchedule(configuration: configuration, stepsPerEpoch: 4100)
        XCTAssertEqual(schedule.baseRate, 0.2)
        XCTAssertEqual(schedule.kind, .multistep)
        XCTAssertEqual(schedule.rate(atStep: 12 * 4100 - 1), 0.2)
        XCTAssertEqual(schedule.rate(atStep: 12 * 4100), 0.02, accuracy: tolerance)
        XCTAssertEqual(schedule.summary, "multistep ×0.1 at epochs 12, 20, 24 of 26 epochs, base 0.2, 4100 steps/epoch")

        let small = LearningRateSchedule(configuration: try TrainingConfiguration.embeddedDefault(), stepsPerEpoch: 20)
        XCTAssertEqual(small.kind, .poly)
        XCTAssertEqual(small.warmupEpochs, 0.5)
        XCTAssertEqual(small.rate(atStep: 0), 0.01, accuracy: tolerance)
        XCTAssertEqual(small.rate(atStep: 9), 0.1, accuracy: tolerance)
        XCTAssertLessThan(small.rate(atStep: 79), 0.01)
        XCTAssertTrue(small.summary.contains("warmup 0.5 epochs"))
    }
}
