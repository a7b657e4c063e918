/// Parameters of a generated workload. Two generators with equal configurations produce the
/// same events, byte for byte, on any machine.
public struct WorkloadConfiguration: Sendable, Equatable {
    /// 2026-11-24T00:00:00Z in epoch milliseconds.
    public static let defaultStartMs: Int64 = 1_795_478_400_000

    public var seed: UInt64
    /// Exact number of events `WorkloadGenerator.next()` returns before nil.
    public var events: Int
    /// Concurrent client sessions (each holding one live token) that traffic is drawn from.
    /// Recently active sessions are drawn far more often than idle ones, so a larger value
    /// mostly lengthens the tail of returning, idle sessions.
    public var tokens: Int
    /// Simulated time of the first event; time then advances 0-6 ms per event (mean 3).
    public var startMs: Int64
    /// Size of the end-user population (`user-00000` ...), each with a fixed client IP.
    public var subjects: Int

    public init(seed: UInt64 = 1, events: Int = 1_000, tokens: Int = 2_000,
                startMs: Int64 = WorkloadConfiguration.defaultStartMs, subjects: Int = 50_000) {
        precondition(events >= 0, "events must be >= 0")
        precondition(tokens >= 1, "tokens must be >= 1")
        precondition(subjects >= 1, "subjects must be >= 1")
        self.seed = seed; self.events = events; self.tokens = tokens; self.startMs = startMs; self.subjects = subjects
    }
}
