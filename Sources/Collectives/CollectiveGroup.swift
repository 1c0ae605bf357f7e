// The collective operations the model-parallel head needs, as a protocol: the MPI communicator
// provides them across ranks, and `SingleProcessGroup` provides them for a world of one without MPI
// (unit tests, single-process tools).

public protocol CollectiveGroup: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    func allReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, _ op: ReductionOperation) throws
    func allGather<T: CollectiveScalar>(_ input: UnsafePointer<T>, count: Int, into output: UnsafeMutablePointer<T>) throws
    func allGatherV<T: CollectiveScalar>(_ input: UnsafePointer<T>, counts: [Int], into output: UnsafeMutablePointer<T>) throws
    func reduceScatter<T: CollectiveScalar>(_ input: UnsafePointer<T>, blockCount: Int,
                                            into output: UnsafeMutablePointer<T>, _ op: ReductionOperation) throws
    func broadcast<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int) throws
    func barrier() throws
    /// Starts an in-place all-reduce; the buffer stays untouched by the caller until it completes.
    func startAllReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                             _ op: ReductionOperation) throws -> CollectiveRequest
    /// Whether another thread may make this group's calls while the creating thread makes none.
    var allowsCallsFromAnotherThread: Bool { get }
}

extension CollectiveGroup {
    public var allowsCallsFromAnotherThread: Bool { false }
}

/// A non-blocking collective in flight.
public protocol CollectiveRequest: AnyObject {
    /// Drives progress without blocking; true once complete.
    func test() throws -> Bool
    func wait() throws
}

extension PendingCollective: CollectiveRequest {}

extension Communicator: CollectiveGroup {
    public var allowsCallsFromAnotherThread: Bool { MPIRuntime.serializedThreadsSupported }

    public func startAllReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                                    _ op: ReductionOperation) throws -> CollectiveRequest {
        try allReduceNonBlocking(buffer, count: count, op)
    }
}

/// The request of a collective that completed when it started (a world of one).
final class CompletedRequest: CollectiveRequest {
    func test() -> Bool { true }
    func wait() {}
}

/// A world of one process: every collective is the identity (or a copy).
public final class SingleProcessGroup: CollectiveGroup {
    public init() {}
    public var allowsCallsFromAnotherThread: Bool { true }
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, _ op: ReductionOperation) {}
    public func allGather<T: CollectiveScalar>(_ input: UnsafePointer<T>, count: Int, into output: UnsafeMutablePointer<T>) {
        if UnsafePointer(output) != input { output.update(from: input, count: count) }
    }
    public func allGatherV<T: CollectiveScalar>(_ input: UnsafePointer<T>, counts: [Int], into output: UnsafeMutablePointer<T>) {
        precondition(counts.count == 1, "a single-process group has one rank")
        if UnsafePointer(output) != input { output.update(from: input, count: counts[0]) }
    }
    public func reduceScatter<T: CollectiveScalar>(_ input: UnsafePointer<T>, blockCount: Int,
                                                   into output: UnsafeMutablePointer<T>, _ op: ReductionOperation) {
        if UnsafePointer(output) != input { output.update(from: input, count: blockCount) }
    }
    public func broadcast<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int) {}
    public func barrier() {}
    public func startAllReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                                    _ op: ReductionOperation) -> CollectiveRequest { CompletedRequest() }
}
