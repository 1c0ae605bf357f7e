// The fault-injection test hook's specification: what it plants where, and errors that name it.
import Training
import XCTest

final class FaultInjectionTests: XCTestCase {
    func testParsesTargetsStepsAndRanks() throws {
        XCTAssertEqual(try NonFiniteInjection.parse("loss@5"), [NonFiniteInjection(target: .loss, step: 5, rank: 0)])
        XCTAssertEqual(try NonFiniteInjection.parse("gradient@3:1, weight@7:2"),
                       [NonFiniteInjection(target: .gradient, step: 3, rank: 1),
                        NonFiniteInjection(target: .weight, step: 7, rank: 2)])
        XCTAssertEqual(try NonFiniteInjection.parse(""), [])
        XCTAssertEqual(try NonFiniteInjection.fromEnvironment([:]), [])
        XCTAssertEqual(try NonFiniteInjection.fromEnvironment([NonFiniteInjection.environmentVariable: "loss@2"]).count, 1)
    }

    func testMistakesNameTheVariableAndTheItem() {
        for text in ["loss", "los@3", "loss@0", "loss@x", "loss@3:-1", "loss@3:1:2", "loss@@3"] {
            XCTAssertThrowsError(try NonFiniteInjection.parse(text), text) { error in
                XCTAssertTrue("\(error)".hasPrefix("ADAFACE_DIST_INJECT_NONFINITE: '\(text)': "), "\(error)")
            }
        }
    }
}
