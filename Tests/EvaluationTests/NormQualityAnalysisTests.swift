// Correlations and the per-quality accuracy split of analyze-norms.
import Evaluation
import XCTest

final class NormQualityAnalysisTests: XCTestCase {
    func testCorrelationsAgainstHandValues() {
        let x: [Double] = [1, 2, 3, 4, 5], y: [Double] = [2, 4, 5, 4, 5]
        // numpy.corrcoef(x, y)[0, 1] = 0.7745966692414834
        XCTAssertEqual(NormQualityAnalysis.pearson(x, y), 0.7745966692414834, accuracy: 1e-12)
        // scipy.stats.spearmanr(x, y): ranks of y with ties averaged = [1, 2.5, 4.5, 2.5, 4.5] → 0.7378647873726218
        XCTAssertEqual(NormQualityAnalysis.spearman(x, y), 0.7378647873726218, accuracy: 1e-12)
        XCTAssertEqual(NormQualityAnalysis.pearson(x, x.map { -3 * $0 + 1 }), -1, accuracy: 1e-12)
    }

    func testAccuracyByQualityBand() {
        let distances: [Double] = [0.5, 1.5, 0.2, 2.0, 0.9, 1.1]
        let issame: [Bool] = [true, true, true, false, false, false]
        let quality: [Double] = [0.1, 0.2, 0.5, 0.6, 0.9, 0.95]
        let rows = NormQualityAnalysis.accuracyByQuality(
            distances: distances, issame: issame, pairQuality: quality, threshold: 1.0,
            bands: [("low", 0..<0.35), ("medium", 0.35..<0.75), ("high", 0.75..<1.01)])
        XCTAssertEqual(rows.map(\.pairs), [2, 2, 2])
        XCTAssertEqual(rows[0].accuracy, 0.5)   // 0.5 < 1 same ✓, 1.5 ≥ 1 but same ✗
        XCTAssertEqual(rows[1].accuracy, 1.0)
        XCTAssertEqual(rows[2].accuracy, 0.5)   // 0.9 < 1 predicted same ✗, 1.1 ≥ 1 different ✓
    }
}
