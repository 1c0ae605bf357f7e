// The MPI communicator the rest of the system uses. No MPI type appears in the public API: buffers
// are typed Swift pointers, reductions are an enum, failures are `CollectiveError` values naming the
// MPI call. Communicators run with MPI_ERRORS_RETURN so that a failure reaches Swift instead of
// aborting the job inside the library.
import CMPI

public struct CollectiveError: Error, CustomStringConvertible {
    public let call: String
    public let code: Int32
    public let message: String
    public var description: String { "\(call) failed (MPI error \(code)): \(message)" }
}

public enum ReductionOperation: Sendable { case sum, max, min }

public enum CollectiveScalarKind: Sendable { case float32, float64, int32, int64, uint64, byte }

/// Element types the collectives move.
public protocol CollectiveScalar { static var collectiveKind: CollectiveScalarKind { get } }
extension Float: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .float32 } }
extension Double: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .float64 } }
extension Int32: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .int32 } }
extension Int64: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .int64 } }
extension UInt64: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .uint64 } }
extension UInt8: CollectiveScalar { public static var collectiveKind: CollectiveScalarKind { .byte } }

extension CollectiveScalar {
    static var mpiDatatype: MPI_Datatype {
        switch collectiveKind {
        case .float32: return cmpi_float()
        case .float64: return cmpi_double()
        case .int32: return cmpi_int32()
        case .int64: return cmpi_int64()
        case .uint64: return cmpi_uint64()
        case .byte: return cmpi_byte()
        }
    }
}

@inline(__always)
func mpiCall(_ name: String, _ code: Int32) throws {
    if code == cmpi_success() { return }
    var length: Int32 = 0
    var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
    MPI_Error_string(code, &buffer, &length)
    throw CollectiveError(call: name, code: code, message: String(cString: buffer))
}

extension ReductionOperation {
    var mpiOp: MPI_Op {
        switch self {
        case .sum: return cmpi_op_sum()
        case .max: return cmpi_op_max()
        case .min: return cmpi_op_min()
        }
    }
}

/// MPI initialisation for the process. MPI can be initialised once per process: the world
/// communicator is created on first use and lives until `finalize()`. A process started without
/// `mpirun` becomes a singleton world of size 1.
public enum MPIRuntime {
    nonisolated(unsafe) private static var worldCommunicator: Communicator?
    /// Whether MPI lets a second thread make calls while the first makes none (MPI_THREAD_SERIALIZED).
    nonisolated(unsafe) public private(set) static var serializedThreadsSupported = false

    public static func world() throws -> Communicator {
        if let w = worldCommunicator { return w }
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            var provided: Int32 = 0
            // SERIALIZED: the main thread and the gradient buckets' progress thread both call MPI,
            // never at the same time (the buckets hand over between them); compute threads never do.
            try mpiCall("MPI_Init_thread", MPI_Init_thread(nil, nil, cmpi_thread_serialized(), &provided))
        }
        var level: Int32 = 0
        try mpiCall("MPI_Query_thread", MPI_Query_thread(&level))
        serializedThreadsSupported = level >= cmpi_thread_serialized()
        let w = try Communicator(handle: cmpi_comm_world(), owned: false)
        worldCommunicator = w
        return w
    }

    public static func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized != 0 && finalized == 0 { MPI_Finalize() }
    }

    /// Ends every rank of the job at once (after an unrecoverable error on one rank, so that the
    /// others do not wait forever in a collective).
    public static func abort(code: Int32) -> Never {
        MPI_Abort(cmpi_comm_world(), code)
        fatalError("MPI_Abort returned")
    }

    public static var wallTime: Double { MPI_Wtime() }
}

/// A non-blocking collective in flight. The buffer it was started on must stay alive and untouched
/// until `wait()` (or a `test()` that returns true).
public final class PendingCollective {
    var request: MPI_Request?
    let name: String

    init(request: MPI_Request?, name: String) { self.request = request; self.name = name }

    public func wait() throws {
        try mpiCall("MPI_Wait(\(name))", MPI_Wait(&request, cmpi_status_ignore()))
    }

    /// Drives progress without blocking; true once the operation is complete.
    public func test() throws -> Bool {
        var flag: Int32 = 0
        try mpiCall("MPI_Test(\(name))", MPI_Test(&request, &flag, cmpi_status_ignore()))
        return flag != 0
    }
}

public final class Communicator {
    let handle: MPI_Comm
    let owned: Bool
    public let rank: Int
    public let size: Int

    init(handle: MPI_Comm, owned: Bool) throws {
        self.handle = handle
        self.owned = owned
        try mpiCall("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(handle, cmpi_errors_return()))
        var r: Int32 = 0, s: Int32 = 0
        try mpiCall("MPI_Comm_rank", MPI_Comm_rank(handle, &r))
        try mpiCall("MPI_Comm_size", MPI_Comm_size(handle, &s))
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        if owned {
            var h: MPI_Comm? = handle
            MPI_Comm_free(&h)
        }
    }

    public func barrier() throws { try mpiCall("MPI_Barrier", MPI_Barrier(handle)) }

    /// The ranks that share this rank's node (MPI_COMM_TYPE_SHARED), for local rank and thread counts.
    public func splitByNode() throws -> Communicator {
        var node: MPI_Comm? = nil
        try mpiCall("MPI_Comm_split_type",
                    MPI_Comm_split_type(handle, cmpi_comm_type_shared(), Int32(rank), cmpi_info_null(), &node))
        return try Communicator(handle: node!, owned: true)
    }

    /// Splits into sub-communicators of the ranks with the same `color`, ordered by `key`.
    public func split(color: Int, key: Int) throws -> Communicator {
        var sub: MPI_Comm? = nil
        try mpiCall("MPI_Comm_split", MPI_Comm_split(handle, Int32(color), Int32(key), &sub))
        return try Communicator(handle: sub!, owned: true)
    }

    public func broadcast<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int = 0) throws {
        try mpiCall("MPI_Bcast", MPI_Bcast(buffer, Int32(count), T.mpiDatatype, Int32(root), handle))
    }

    public func broadcast<T: CollectiveScalar>(_ values: inout [T], root: Int = 0) throws {
        try values.withUnsafeMutableBufferPointer { try broadcast($0.baseAddress!, count: $0.count, root: root) }
    }

    /// In place: every rank ends with the reduction over all ranks.
    public func allReduce<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                               _ op: ReductionOperation) throws {
        if count == 0 { return }
        try mpiCall("MPI_Allreduce", MPI_Allreduce(cmpi_in_place(), buffer, Int32(count), T.mpiDatatype, op.mpiOp, handle))
    }

    public func allReduce<T: CollectiveScalar>(_ values: inout [T], _ op: ReductionOperation) throws {
        try values.withUnsafeMutableBufferPointer { try allReduce($0.baseAddress!, count: $0.count, op) }
    }

    public func allReduce<T: CollectiveScalar>(_ value: T, _ op: ReductionOperation) throws -> T {
        var v = [value]
        try allReduce(&v, op)
        return v[0]
    }

    /// Starts an in-place all-reduce and returns at once. MPI has no progress thread here: the
    /// operation advances inside MPI calls, so callers `test()` it between pieces of work.
    public func allReduceNonBlocking<T: CollectiveScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int,
                                                          _ op: ReductionOperation) throws -> PendingCollective {
        var request: MPI_Request? = cmpi_request_null()
        try mpiCall("MPI_Iallreduce",
                    MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), T.mpiDatatype, op.mpiOp, handle, &request))
        return PendingCollective(request: request, name: "MPI_Iallreduce")
    }

    /// Every rank contributes `count` elements; `output` receives size·count, in rank order.
    public func allGather<T: CollectiveScalar>(_ input: UnsafePointer<T>, count: Int,
                                               into output: UnsafeMutablePointer<T>) throws {
        try mpiCall("MPI_Allgather", MPI_Allgather(input, Int32(count), T.mpiDatatype,
                                                   output, Int32(count), T.mpiDatatype, handle))
    }

    /// Rank r contributes counts[r] elements; `output` receives them concatenated in rank order.
    public func allGatherV<T: CollectiveScalar>(_ input: UnsafePointer<T>, counts: [Int],
                                                into output: UnsafeMutablePointer<T>) throws {
        precondition(counts.count == size, "allGatherV needs one count per rank")
        let recvCounts = counts.map { Int32($0) }
        var displacements = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) { displacements[r] = displacements[r - 1] + recvCounts[r - 1] }
        try mpiCall("MPI_Allgatherv", MPI_Allgatherv(input, recvCounts[rank], T.mpiDatatype, output, recvCounts,
                                                     displacements, T.mpiDatatype, handle))
    }

    /// Sums `input` (size·blockCount elements) over all ranks; rank r receives block r.
    public func reduceScatter<T: CollectiveScalar>(_ input: UnsafePointer<T>, blockCount: Int,
                                                   into output: UnsafeMutablePointer<T>,
                                                   _ op: ReductionOperation = .sum) throws {
        try mpiCall("MPI_Reduce_scatter_block",
                    MPI_Reduce_scatter_block(input, output, Int32(blockCount), T.mpiDatatype, op.mpiOp, handle))
    }
}
