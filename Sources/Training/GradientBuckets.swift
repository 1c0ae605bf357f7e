// Data-parallel gradient averaging overlapped with the backward pass, as PyTorch DDP does it:
// gradients are grouped into buckets of about 25 MB (the first, which completes earliest, about
// 1 MB) in reverse registration order, and each bucket's all-reduce starts as soon as backward has
// finished all of its gradients. The parameter arena is contiguous in registration order, so every
// bucket is one contiguous range of the gradient arena and is reduced in place.
//
// Open MPI has no progress thread of its own: a non-blocking collective advances only inside MPI
// calls. Testing the requests only between residual units left a 96 MB all-reduce over TCP almost
// wholly exposed (1.26 s after a 3.0 s backward at 1 Gbit/s), so a progress thread of ours starts the
// buckets and tests them every `pollInterval` while backward runs. The main thread makes no MPI call
// between `beginBackward()` and the end of `finish()`, which is what MPI_THREAD_SERIALIZED asks. A
// group that cannot be called from another thread gets the old way: tests between units.
import Collectives
import Foundation
import Layers
import Tensors

public final class GradientBuckets {
    public struct Bucket: Sendable {
        /// Range of the gradient arena.
        public let range: Range<Int>
        public var bytes: Int { range.count * 4 }
    }

    public let buckets: [Bucket]
    /// Seconds spent blocked in `finish()` waiting for all-reduces: the exposed communication.
    public private(set) var exposedSeconds = 0.0
    /// Whether a progress thread drives the all-reduces (false: tests between residual units).
    public var usesProgressThread: Bool { progress != nil }
    /// Whether every bucket of this backward pass has been reduced (before the `finish()` scaling).
    public var allReduced: Bool { progress?.isDone ?? reducer.allDone }

    private let reducer: BucketReducer
    private let progress: ProgressThread?
    /// Buckets whose gradients are complete (main thread's count).
    private var readyCount = 0

    public init(store: ParameterStore, group: CollectiveGroup, bucketBytes: Int = 25 << 20, firstBucketBytes: Int = 1 << 20,
                pollInterval: Double = 50e-6) {
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
        reducer = BucketReducer(buckets: buckets.map(\.range), gradients: store.gradients, group: group)
        progress = group.size > 1 && group.allowsCallsFromAnotherThread
            ? ProgressThread(reducer: reducer, pollInterval: pollInterval) : nil
    }

    deinit { progress?.stop() }

    /// Call before each backward pass.
    public func beginBackward() {
        readyCount = 0
        if let progress { progress.begin() } else { reducer.reset() }
    }

    /// Backward has finished every gradient at or above `offset`: the buckets it completes can start.
    public func gradientsReady(fromOffset offset: Int) throws {
        var ready = readyCount
        while ready < buckets.count && buckets[ready].range.lowerBound >= offset { ready += 1 }
        if let progress {
            if ready > readyCount { progress.markReady(ready) }
        } else {
            try reducer.advance(readyCount: ready)
        }
        readyCount = ready
    }

    /// Starts whatever is left, waits for every bucket and divides by the world size, so each rank
    /// holds the average gradient.
    public func finish() throws {
        let started = MonotonicClock.now()
        if let progress {
            try progress.finish(bucketCount: buckets.count)
        } else {
            try reducer.advance(readyCount: buckets.count)
            try reducer.waitAll()
        }
        readyCount = buckets.count
        exposedSeconds += MonotonicClock.now() - started
        let size = reducer.group.size
        if size > 1 {
            let scale = 1 / Float(size)
            let g = reducer.gradients, total = buckets.first.map { $0.range.upperBound } ?? 0
            Parallel.forRanges(total, grain: 1 << 16) { range in for i in range { g[i] *= scale } }
        }
    }

    /// All-reduces without overlap (for measuring what the overlap saves).
    public func reduceAllAtOnce() throws {
        beginBackward()
        try finish()
    }
}

/// The buckets' requests: starts the ready ones and tests those in flight. Used by one thread at a
/// time (the progress thread, or the main thread when there is none).
final class BucketReducer {
    let ranges: [Range<Int>]
    let gradients: UnsafeMutablePointer<Float>
    let group: CollectiveGroup
    private var requests: [CollectiveRequest?]
    private(set) var launched = 0
    private(set) var completed = 0

    init(buckets: [Range<Int>], gradients: UnsafeMutablePointer<Float>, group: CollectiveGroup) {
        ranges = buckets
        self.gradients = gradients
        self.group = group
        requests = [CollectiveRequest?](repeating: nil, count: buckets.count)
    }

    func reset() {
        launched = 0
        completed = 0
        for i in requests.indices { requests[i] = nil }
    }

    var allDone: Bool { completed == ranges.count }
    var inFlight: Bool { completed < launched }

    /// Starts buckets up to `readyCount` and tests the ones in flight once.
    func advance(readyCount: Int) throws {
        while launched < readyCount {
            let range = ranges[launched]
            requests[launched] = try group.startAllReduce(gradients + range.lowerBound, count: range.count, .sum)
            launched += 1
        }
        for i in 0..<launched {
            if let request = requests[i], try request.test() {
                requests[i] = nil
                completed += 1
            }
        }
    }

    func waitAll() throws {
        for i in 0..<launched {
            if let request = requests[i] {
                try request.wait()
                requests[i] = nil
                completed += 1
            }
        }
    }
}

/// Drives a `BucketReducer` from its own thread between `begin()` and `finish()`; parked on a
/// condition otherwise, so it makes no MPI call while the main thread does.
final class ProgressThread: @unchecked Sendable {
    private let reducer: BucketReducer
    private let pollNanoseconds: Int
    private let condition = NSCondition()
    // Shared with the main thread, under `condition`.
    private var active = false
    private var readyCount = 0
    private var done = true
    private var stopping = false
    private var failure: Error?

    init(reducer: BucketReducer, pollInterval: Double) {
        self.reducer = reducer
        pollNanoseconds = max(1_000, Int(pollInterval * 1e9))
        let thread = Thread { [self] in run() }
        thread.name = "gradient-buckets"
        thread.start()
    }

    func begin() {
        condition.lock()
        precondition(done, "beginBackward() while the previous step's all-reduces are still running")
        reducer.reset()
        readyCount = 0
        failure = nil
        done = false
        active = true
        condition.unlock()
    }

    func markReady(_ count: Int) {
        condition.lock()
        readyCount = max(readyCount, count)
        condition.signal()
        condition.unlock()
    }

    /// Every bucket is ready: returns when all are reduced (or rethrows the first error).
    func finish(bucketCount: Int) throws {
        condition.lock()
        readyCount = bucketCount
        condition.signal()
        while !done { condition.wait() }
        let error = failure
        condition.unlock()
        if let error { throw error }
    }

    var isDone: Bool {
        condition.lock()
        defer { condition.unlock() }
        return done
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while !stopping {
            guard active else { condition.wait(); continue }
            let ready = readyCount
            condition.unlock()
            var error: Error?
            do { try reducer.advance(readyCount: ready) } catch let e { error = e }
            condition.lock()
            if error != nil || (reducer.allDone && ready == reducer.ranges.count) {
                failure = error
                active = false
                done = true
                condition.broadcast()
            } else if !reducer.inFlight && readyCount == reducer.launched {
                condition.wait()  // Nothing to test until backward completes another bucket.
            } else {
                condition.unlock()
                var pause = timespec(tv_sec: 0, tv_nsec: pollNanoseconds)
                nanosleep(&pause, nil)
                condition.lock()
            }
        }
        condition.unlock()
    }
}
