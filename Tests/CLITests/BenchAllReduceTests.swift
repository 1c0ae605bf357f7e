// The alpha-beta fit behind `bench allreduce`, and its argument errors (checked before MPI starts).
import CLI
import XCTest

final class BenchAllReduceTests: XCTestCase {
    func testFitRecoversLatencyAndBandwidthFromExactTimes() {
        let alpha = 25e-6, beta = 1 / 3e9
        let samples = stride(from: 12, through: 28, by: 2).map { k -> (bytes: Double, seconds: Double) in
            let n = Double(1 << k)
            return (n, alpha + beta * n)
        }
        let fit = AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha, alpha, accuracy: alpha * 1e-6)
        XCTAssertEqual(fit.beta, beta, accuracy: beta * 1e-6)
        XCTAssertEqual(fit.bandwidth, 3e9, accuracy: 3e3)
    }

    func testFitWeighsSizesByRelativeError() {
        // 10% noise alternating in sign: the fit stays within the noise at both ends.
        let alpha = 5e-6, beta = 1e-9
        let samples = (0..<10).map { i -> (bytes: Double, seconds: Double) in
            let n = Double(4096 << (2 * i / 2))
            return (n, (alpha + beta * n) * (i % 2 == 0 ? 1.1 : 0.9))
        }
        let fit = AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha, alpha, accuracy: alpha * 0.25)
        XCTAssertEqual(fit.beta, beta, accuracy: beta * 0.25)
    }

    func testFitOfASingleSizeIsPureLatency() {
        XCTAssertEqual(AlphaBeta.fit([(4096, 2e-6), (4096, 2e-6)]), AlphaBeta(alpha: 2e-6, beta: 0))
    }

    func testBadArgumentsNameTheOption() {
        // 2 for a value the command rejects, 64 (usage) for one the parser's range check rejects.
        let cases: [([String], String, Int32)] = [
            (["--ops", "allreduce,gossip"], "gossip", 2),
            (["--to", "3X"], "--to", 2),
            (["--from", "1M", "--to", "4K"], "--from", 2),
            (["--factor", "1"], "--factor", 64),
        ]
        for (extra, needle, expected) in cases {
            var out = "", err = ""
            let code = CommandLineTool.run(AdaFaceDist.root, arguments: ["bench", "allreduce"] + extra,
                                           stdout: &out, stderr: &err)
            XCTAssertEqual(code, expected, "\(extra): \(err)")
            XCTAssertTrue(err.contains(needle), "\(extra): the error names \(needle): \(err)")
        }
    }
}
