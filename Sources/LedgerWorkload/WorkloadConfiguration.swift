/// Parameters of a generated workload. Two generators with equal configurations produce the
/// same events, byte for byte, on any machine. Out-of-range values are clamped by the generator
/// (`effective`), never trapped on: they may come straight from a command line.
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
    /// Simulated time of the first event (epoch ms, clamped to 0...9999-12-31); time then
    /// advances 0-6 ms per event (mean 3).
    public var startMs: Int64
    /// Size of the end-user population (`user-00000` ...), each with a fixed client IP.
    public var subjects: Int

    public init(seed: UInt64 = 1, events: Int = 1_000, tokens: Int = 2_000,
                startMs: Int64 = WorkloadConfiguration.defaultStartMs, subjects: Int = 50_000) {
        self.seed = seed; self.events = events; self.tokens = tokens; self.startMs = startMs; self.subjects = subjects
    }

    /// The configuration the generator actually runs: `events` at least 0, `tokens` 1...1,000,000
    /// (each session slot takes memory), `subjects` 1...1,000,000,000, `startMs` within
    /// 0...253,402,300,799,999 (year 9999).
    public var effective: WorkloadConfiguration {
        var out = self
        out.events = max(0, events)
        out.tokens = min(max(1, tokens), 1_000_000)
        out.subjects = min(max(1, subjects), 1_000_000_000)
        out.startMs = min(max(0, startMs), 253_402_300_799_999)
        return out
    }
}
