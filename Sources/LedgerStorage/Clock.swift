import Glibc

/// Wall-clock source. Core logic takes one so tests can fix time.
public protocol Clock: Sendable {
    func nowMs() -> Int64
}

public struct SystemClock: Clock {
    public init() {}
    public func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

public struct FixedClock: Clock {
    public let ms: Int64
    public init(ms: Int64) { self.ms = ms }
    public func nowMs() -> Int64 { ms }
}

/// Monotonic nanoseconds, for measuring durations (never stored).
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
