// A monotonic clock in seconds, for timings that must not jump with the wall clock.
import Glibc

public enum MonotonicClock {
    @inline(__always)
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}
