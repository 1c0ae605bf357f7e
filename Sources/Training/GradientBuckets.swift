// Data-parallel gradient averaging overlapped with the backward pass, as PyTorch DDP does it:
// gradients are grouped into buckets of about 25 MB (the first, which completes earliest, about
// 1 MB) in reverse registration order, and each bucket's all-reduce starts as soon as backward has
// finished all of its gradients. The parameter arena is contiguous in registration order, so every
// bucket is one contiguous range of the gradient arena and is reduced in place.
//
// Open MPI here has no progress thread: a non-blocking collective advances only inside MPI calls.
// `gradientsReady` therefore also tests the buckets in flight, which happens after every residual
// unit's backward.
import Collectives
import Layers
import Tensors

public final class GradientBuckets {
    public struct Bucket: Sendable {
        /// Range of the gradient arena.
        public let range: Range<Int>
        public var bytes: Int { range.count * 4 }
    }

    public let buckets: [Bucket]
    let group: CollectiveGroup
    let gradients: UnsafeMutablePointer<Float>
    private var requests: [CollectiveRequest?]
    private var launched: Int = 0
    /// Seconds spent blocked in `finish()` waiting for all-reduces: the exposed communication.
    public private(set) var exposedSeconds = 0.0

    public init(store: ParameterStore, group: CollectiveGroup, bucketBytes: Int = 25 << 20, firstBucketBytes: Int = 1 << 20) {
        self.group = group
        gradients = store.gradients
        var buckets: [Bucket] = []
        var upper = store.parameterCount
        var lower = upper
        var limit = firstBucketBytes / 4
        for p in store.parameters.reversed() {
            lower = p.offset
            if upper - lower >= limit {
                buckets.append(Bucket(range: lower..<upper))
                upper = lower
                limit = bucketBytes / 4
            }
        }
        if upper > 0 { buckets.append(Bucket(range: 0..<upper)) }
        self.buckets = buckets
        requests = [CollectiveRequest?](repeating: nil, count: buckets.count)
    }

    /// Call before each backward pass.
    public func beginBackward() {
        launched = 0
        for i in requests.indices { requests[i] = nil }
    }

    /// Backward has finished every gradient at or above `offset`: start the buckets it completes and
    /// let the ones in flight progress.
    public func gradientsReady(fromOffset offset: Int) throws {
        while launched < buckets.count && buckets[launched].range.lowerBound >= offset {
            let range = buckets[launched].range
            requests[launched] = try group.startAllReduce(gradients + range.lowerBound, count: range.count, .sum)
            launched += 1
        }
        for case let request? in requests.prefix(launched) { _ = try request.test() }
    }

    /// Starts whatever is left, waits for every bucket and divides by the world size, so each rank
    /// holds the average gradient.
    public func finish() throws {
        try gradientsReady(fromOffset: 0)
        let started = MonotonicClock.now()
        for case let request? in requests { try request.wait() }
        exposedSeconds += MonotonicClock.now() - started
        let scale = 1 / Float(group.size)
        if group.size > 1 {
            let g = gradients, total = buckets.first.map { $0.range.upperBound } ?? 0
            Parallel.forRanges(total, grain: 1 << 16) { range in for i in range { g[i] *= scale } }
        }
    }

    /// All-reduces without overlap (for measuring what the overlap saves).
    public func reduceAllAtOnce() throws {
        beginBackward()
        try finish()
    }
}
