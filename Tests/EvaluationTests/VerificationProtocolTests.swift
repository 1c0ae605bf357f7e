// The verification protocol against the NumPy / scikit-learn reference
// (Scripts/reference/verification_reference.py writes the fixtures): 10-fold accuracy, ROC and TAR@FAR.
import Foundation
import XCTest
import Evaluation

private struct VerificationFixture: Decodable {
    struct TAR: Decodable { let far: Double; let tar: Double }
    let name: String
    let distances: [Double]
    let issame: [Bool]
    let fold_accuracies: [Double]
    let accuracy_mean: Double
    let accuracy_std: Double
    let best_thresholds: [Double]
    let best_threshold_mean: Double
    let roc_fpr: [Double]
    let roc_tpr: [Double]
    let roc_thresholds_after_first: [Double]
    let tar_at_far: [TAR]
}

private let verificationFixtureNames = ["overlap600", "ties_grid300", "unbalanced2000", "odd257", "negatives3000"]

private func loadVerificationFixture(_ name: String) throws -> VerificationFixture {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("verification_\(name).json")
    return try JSONDecoder().decode(VerificationFixture.self, from: Data(contentsOf: url))
}

private func assertClose(_ a: [Double], _ b: [Double], _ what: String, tolerance: Double = 1e-6,
                         file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): count", file: file, line: line)
    for (i, (x, y)) in zip(a, b).enumerated() where !(abs(x - y) <= tolerance) {
        XCTFail("\(what)[\(i)]: \(x) vs \(y)", file: file, line: line)
        return
    }
}

final class VerificationProtocolTests: XCTestCase {
    func testTenFoldAccuracyMatchesReference() throws {
        for name in verificationFixtureNames {
            let f = try loadVerificationFixture(name)
            let r = VerificationProtocol.evaluate(distances: f.distances, issame: f.issame)
            assertClose(r.foldAccuracies, f.fold_accuracies, "\(name) fold accuracies")
            XCTAssertEqual(r.accuracyMean, f.accuracy_mean, accuracy: 1e-6, name)
            XCTAssertEqual(r.accuracyStd, f.accuracy_std, accuracy: 1e-6, name)
            XCTAssertEqual(r.bestThreshold, f.best_threshold_mean, accuracy: 1e-6, name)
        }
    }

    func testROCMatchesScikitLearn() throws {
        for name in verificationFixtureNames {
            let f = try loadVerificationFixture(name)
            let roc = ROC(scores: f.distances.map { -$0 }, labels: f.issame)
            assertClose(roc.fpr, f.roc_fpr, "\(name) fpr")
            assertClose(roc.tpr, f.roc_tpr, "\(name) tpr")
            XCTAssertEqual(roc.thresholds.first, .infinity, name)
            assertClose(Array(roc.thresholds.dropFirst()), f.roc_thresholds_after_first, "\(name) thresholds")
            // evaluate reports the same curve.
            let r = VerificationProtocol.evaluate(distances: f.distances, issame: f.issame)
            assertClose(r.roc.fpr, f.roc_fpr, "\(name) evaluate fpr")
            assertClose(r.roc.tpr, f.roc_tpr, "\(name) evaluate tpr")
        }
    }

    func testTARAtFARMatchesReference() throws {
        var nonzero = 0
        for name in verificationFixtureNames {
            let f = try loadVerificationFixture(name)
            let r = VerificationProtocol.evaluate(distances: f.distances, issame: f.issame)
            XCTAssertEqual(r.tarAtFAR.map { $0.far }, f.tar_at_far.map(\.far), name)
            assertClose(r.tarAtFAR.map { $0.tar }, f.tar_at_far.map(\.tar), "\(name) TAR@FAR")
            nonzero += f.tar_at_far.filter { $0.tar > 0 }.count
        }
        XCTAssertGreaterThan(nonzero, 0, "the fixtures exercise a non-zero TAR")
    }

    /// scikit-learn's documented example: roc_curve([1, 1, 2, 2], [0.1, 0.4, 0.35, 0.8], pos_label=2).
    func testROCDocumentedExample() {
        let roc = ROC(scores: [0.1, 0.4, 0.35, 0.8], labels: [false, false, true, true])
        XCTAssertEqual(roc.fpr, [0, 0, 0.5, 0.5, 1])
        XCTAssertEqual(roc.tpr, [0, 0.5, 0.5, 1, 1])
        XCTAssertEqual(roc.thresholds, [.infinity, 0.8, 0.4, 0.35, 0.1])
    }

    /// Ties make one point; collinear points are dropped; the nearest point is the first one.
    func testROCTiesDropIntermediateAndNearestPoint() {
        // Scores 3, 3, 2, 1, 0 with labels T, F, T, T, F: cumulative (fp, tp) at 3, 2, 1, 0 are
        // (1, 1), (1, 2), (1, 3), (2, 3); the point at 2 lies between its neighbours and is dropped.
        let roc = ROC(scores: [3, 2, 3, 1, 0], labels: [true, true, false, true, false])
        XCTAssertEqual(roc.thresholds, [.infinity, 3, 1, 0])
        XCTAssertEqual(roc.fpr, [0, 0.5, 0.5, 1])
        XCTAssertEqual(roc.tpr, [0, 1.0 / 3, 1, 1])
        // FAR 0.5 is met exactly by two points; the first wins, as numpy's argmin picks it.
        XCTAssertEqual(roc.tar(atFAR: 0.5), 1.0 / 3)
        // FAR 0.2 is nearest fpr 0, the origin.
        XCTAssertEqual(roc.tar(atFAR: 0.2), 0)
        XCTAssertEqual(roc.tar(atFAR: 0.9), 1)
    }

    func testSeparableSetIsPerfect() {
        let issame: [Bool] = (0..<100).map { $0 % 2 == 0 }
        let distances: [Double] = (0..<100).map { i in (issame[i] ? 0.5 : 2.0) + Double(i) * 1e-5 }
        let r = VerificationProtocol.evaluate(distances: distances, issame: issame)
        XCTAssertEqual(r.accuracyMean, 1)
        XCTAssertEqual(r.accuracyStd, 0)
        XCTAssertEqual(r.foldAccuracies.count, 10)
        // As scikit-learn gives it: the first threshold's point is always kept.
        XCTAssertEqual(r.roc.fpr, [0, 0, 0, 1])
        XCTAssertEqual(r.roc.tpr, [0, 0.02, 1, 1])
        // With 50 negatives the nearest fpr to 1e-3 and 1e-4 is 0, and the first point with fpr 0
        // is the origin: the IJB convention (numpy's argmin) then reports TAR 0.
        XCTAssertEqual(r.tarAtFAR.map { $0.tar }, [0, 0])
    }
}
