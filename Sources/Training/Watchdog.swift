// A rank that makes no progress for `training.timeout_seconds` ends its process. Open MPI's
// collectives wait forever for a rank that died or hangs; ending this process makes mpirun tear the
// whole job down, so a lost rank costs a restart from the last checkpoint instead of a hung job.
import Foundation
import Tensors

final class Watchdog {
    private let timeout: Double
    private let rank: Int
    private let lock = NSLock()
    private var lastProgress = MonotonicClock.now()
    private var activity = "starting"
    private var running = true

    init(timeout: Double, rank: Int) {
        self.timeout = timeout
        self.rank = rank
        guard timeout > 0 else { running = false; return }
        let thread = Thread { [self] in watch() }
        thread.name = "adaface-watchdog"
        thread.start()
    }

    /// Progress: the clock starts again, with what the rank does next (for the message).
    func touch(_ what: String) {
        lock.lock(); lastProgress = MonotonicClock.now(); activity = what; lock.unlock()
    }

    func stop() { lock.lock(); running = false; lock.unlock() }

    private func watch() {
        while true {
            Thread.sleep(forTimeInterval: min(1, timeout / 4))
            lock.lock()
            let stalled = MonotonicClock.now() - lastProgress, what = activity, active = running
            lock.unlock()
            if !active { return }
            if stalled > timeout {
                let message = String(format: "Error (rank %d): no progress for %.0f s while %@ (training.timeout_seconds = %.0f): "
                                     + "another rank probably died or hangs; stopping this rank so that the job ends "
                                     + "(resume with --resume auto)\n", rank, stalled, what, timeout)
                FileHandle.standardError.write(Data(message.utf8))
                _exit(3)
            }
        }
    }
}
