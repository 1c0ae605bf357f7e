// The GEMM wrapper's transposes, the parallel range split, and the determinism of the random streams.
import Tensors
import XCTest

final class KernelTests: XCTestCase {
    func testGemmTransposesAgainstNaiveProduct() {
        let m = 5, n = 7, k = 3
        var rng = SplitMix64(seed: 1)
        let a = (0..<(m * k)).map { _ in rng.nextNormal() }, b = (0..<(k * n)).map { _ in rng.nextNormal() }
        var expected = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { expected[i * n + j] += a[i * k + p] * b[p * n + j] } } }
        // Aᵀ stored k×m and Bᵀ stored n×k must give the same product.
        let at = (0..<(k * m)).map { a[($0 % m) * k + $0 / m] }, bt = (0..<(n * k)).map { b[($0 % k) * n + $0 / k] }
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            var c = [Float](repeating: 1, count: m * n)
            (ta ? at : a).withUnsafeBufferPointer { ap in (tb ? bt : b).withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!)
                } } }
            for i in 0..<(m * n) { XCTAssertEqual(c[i], expected[i], accuracy: 1e-5, "transA \(ta) transB \(tb)") }
        }
    }

    func testParallelRangesCoverEveryIndexOnce() {
        ComputeThreads.count = 3
        defer { ComputeThreads.count = 1 }
        let n = 10_007
        let hits = UnsafeMutablePointer<Int32>.allocate(capacity: n)
        defer { hits.deallocate() }
        hits.initialize(repeating: 0, count: n)
        Parallel.forRanges(n, grain: 100) { range in for i in range { hits[i] += 1 } }
        XCTAssertTrue((0..<n).allSatisfy { hits[$0] == 1 })
    }

    func testRandomStreamsAreDeterministicAndIndependent() {
        var a = SplitMix64(seed: 7, 3, 11), b = SplitMix64(seed: 7, 3, 11), c = SplitMix64(seed: 7, 3, 12)
        let sa = (0..<4).map { _ in a.next() }, sb = (0..<4).map { _ in b.next() }, sc = (0..<4).map { _ in c.next() }
        XCTAssertEqual(sa, sb)
        XCTAssertNotEqual(sa, sc)
        var normal = SplitMix64(seed: 5)
        let samples = (0..<20_000).map { _ in Double(normal.nextNormal()) }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }
}
