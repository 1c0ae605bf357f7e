// Gradient buckets: PyTorch DDP's layout (first ~1 MB, then ~25 MB, reverse registration order).
import Collectives
import Layers
import Training
import XCTest

final class GradientBucketsTests: XCTestCase {
    func testBucketsTileTheArenaInReverseOrderWithDDPSizes() {
        let net = IResNet(.ir50)
        let buckets = GradientBuckets(store: net.store, group: SingleProcessGroup())
        let b = buckets.buckets
        XCTAssertEqual(b.first?.range.upperBound, net.store.parameterCount)
        XCTAssertEqual(b.last?.range.lowerBound, 0)
        for (later, earlier) in zip(b, b.dropFirst()) { XCTAssertEqual(earlier.range.upperBound, later.range.lowerBound) }
        // A bucket closes at the first parameter that takes it past its limit, and parameters are
        // never split: the first (1 MB) bucket closes on the 51 MB linear weight, which is the
        // second parameter backward finishes.
        let linear = net.store.parameters[net.store.parameterIndex(named: "output_layer.3.weight")!]
        XCTAssertEqual(b[0].range.lowerBound, linear.offset)
        for bucket in b.dropFirst().dropLast() { XCTAssertGreaterThanOrEqual(bucket.bytes, 25 << 20) }
        XCTAssertLessThan(b.last!.bytes, 25 << 20 + 10 << 20)
        XCTAssertTrue((4...8).contains(b.count), "\(b.count) buckets for 174 MB of gradients")
    }

    func testSingleProcessFinishLeavesGradientsUnchanged() throws {
        let store = ParameterStore()
        _ = store.registerParameter("a", shape: [100], group: .decayed)
        _ = store.registerParameter("b", shape: [50], group: .notDecayed)
        store.finalize()
        for i in 0..<store.parameterCount { store.gradients[i] = Float(i) }
        let buckets = GradientBuckets(store: store, group: SingleProcessGroup(), bucketBytes: 256, firstBucketBytes: 64)
        buckets.beginBackward()
        try buckets.gradientsReady(fromOffset: store.parameters[1].offset)
        try buckets.finish()
        for i in 0..<store.parameterCount { XCTAssertEqual(store.gradients[i], Float(i)) }
    }
}
