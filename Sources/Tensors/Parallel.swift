// Threading inside one rank. Our own loops (im2col, normalisation, element-wise passes) split their
// range over `ComputeThreads.count` workers; OpenBLAS has its own pool, configured in `BLAS`.
import Dispatch

public enum ComputeThreads {
    /// Workers used by the element-wise and data-movement kernels. Set once at start-up, before any
    /// kernel runs (ranks on one node divide the cores between them).
    nonisolated(unsafe) public static var count: Int = 1

    /// Sets the rank's thread count for the engine's loops and OpenBLAS together (convolutions
    /// drop OpenBLAS to one thread while their image groups run side by side). Call before
    /// preparing a network: workspaces are sized for this count.
    public static func configure(_ n: Int) {
        count = max(1, n)
        BLAS.setThreads(count)
    }
}

public enum Parallel {
    /// Runs `body` over `0..<total` split into at most `ComputeThreads.count` contiguous chunks of at
    /// least `grain` items. Small ranges run inline so tiny tensors pay no dispatch cost.
    @inlinable
    public static func forRanges(_ total: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        let workers = min(ComputeThreads.count, max(1, total / max(grain, 1)))
        if workers <= 1 {
            if total > 0 { body(0..<total) }
            return
        }
        let chunk = (total + workers - 1) / workers
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = w * chunk
            let hi = min(total, lo + chunk)
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Like `forRanges`, but also passes the worker index, for per-worker partial sums.
    @inlinable
    public static func forRangesIndexed(_ total: Int, grain: Int = 1, _ body: (Int, Range<Int>) -> Void) -> Int {
        let workers = min(ComputeThreads.count, max(1, total / max(grain, 1)))
        if workers <= 1 {
            if total > 0 { body(0, 0..<total) }
            return 1
        }
        let chunk = (total + workers - 1) / workers
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = w * chunk
            let hi = min(total, lo + chunk)
            body(w, lo..<hi)
        }
        return workers
    }
}
