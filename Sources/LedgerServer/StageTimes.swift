// Where an acknowledgement's time goes inside the server, per framed batch: for `bench server`,
// which reports it beside the end-to-end latency its clients measure. Off (nil) in `serve`.
import LedgerStorage

public final class StageTimes: @unchecked Sendable {
    /// Nanoseconds in each stage of one framed batch, in order.
    public struct Row: Sendable {
        public let events: Int
        /// Frame whole in memory → its blocks encoded (NDJSON parsed, LZ4).
        public let parse: UInt64
        /// Waiting for the committer (finishing the group before).
        public let queued: UInt64
        /// The group's write and fsync.
        public let commit: UInt64
        /// Handing the group to subscribers and the live projection.
        public let publish: UInt64
        /// Acknowledging the group's batches up to and including this one.
        public let reply: UInt64
        public var total: UInt64 { parse + queued + commit + publish + reply }
        /// The connection's peer ("HOST:PORT"), the frame's id, and the monotonic clock when the
        /// frame was whole in memory: a client in the same process matches its own timestamps.
        public let peer: String
        public let frameID: UInt64
        public let receivedAt: UInt64
    }

    private let lock = Mutex()
    private var rows: [Row] = []

    public init() {}

    func record(_ row: Row) { lock.locked { rows.append(row) } }

    /// The rows recorded since the last call.
    public func take() -> [Row] {
        lock.locked {
            defer { rows.removeAll() }
            return rows
        }
    }
}
