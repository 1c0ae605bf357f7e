// SIGTERM and SIGUSR1 (what Slurm sends before preempting or at the end of a time limit) only set a
// flag; the training loop checks it between steps, and all ranks agree through an all-reduce, so
// every rank writes the same checkpoint and exits cleanly.
import Collectives
import Glibc

nonisolated(unsafe) private var preemptionRequested: sig_atomic_t = 0

struct PreemptionSignals {
    static func install() -> PreemptionSignals {
        let handler: @convention(c) (Int32) -> Void = { _ in preemptionRequested = 1 }
        signal(SIGTERM, handler)
        signal(SIGUSR1, handler)
        return PreemptionSignals()
    }

    var locallyRequested: Bool { preemptionRequested != 0 }

    /// True on every rank once any rank has received a signal.
    func anyRankSignalled(_ world: Communicator) throws -> Bool {
        try world.allReduce(Int64(preemptionRequested), .max) > 0
    }
}
