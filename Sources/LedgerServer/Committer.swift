// Group commit across all connections: connection threads parse and encode their batches into
// blocks (in parallel), then hand them here; one thread appends everything waiting as one
// `SegmentLog.append(encoded:)` — one write per segment, one fsync — and only then completes
// each submission with its sequence range and the chain hash after it.
//
// The queue is bounded in events: when the disk is slow, `submit` blocks, the connection
// thread stops reading, and TCP pushes back on the client. Memory does not grow.
import Dispatch
import LedgerCrypto
import LedgerModel
import LedgerStorage

/// A submission's events as its connection has them: parsed events (NDJSON input) or a decoded
/// block (client-encoded batches), which the projection and subscribers read without building
/// an `Event` per event.
enum EventBatch {
    case events([Event])
    case block(DecodedBlock)

    var count: Int {
        switch self {
        case let .events(e): e.count
        case let .block(b): b.count
        }
    }

    var types: [EventType] {
        switch self {
        case let .events(e): e.map(\.type)
        case let .block(b): b.types
        }
    }

    func event(at i: Int) -> Event {
        switch self {
        case let .events(e): e[i]
        case let .block(b): b.event(at: i)
        }
    }
}

public struct Committed: Sendable, Equatable {
    public let firstSeq: UInt64
    public let lastSeq: UInt64
    public let chainHash: Digest32
}

final class Committer: @unchecked Sendable {
    struct Submission {
        var blocks: [EncodedBlock]
        var eventCount: Int
        /// The events themselves, in order, for subscribers and the live projection.
        var events: [EventBatch]
        /// When its frame was whole in memory (0: not a framed batch), for `StageTimes`.
        var receivedNs: UInt64 = 0
        var peer = ""
        var frameID: UInt64 = 0
        var completion: @Sendable (Result<Committed, StorageError>) -> Void
        /// Runs on the committer thread with nothing else appending (an admin rollback); it
        /// may append with `appendNow`.
        var exclusive: ((Committer) -> Void)? = nil
        /// When it was queued: the ingest latency histogram measures queued → durable.
        var submittedNs: UInt64 = monotonicNanoseconds()
    }

    let log: SegmentLog
    let queueEventsMax: Int
    private let condition = Condition(priorityInheritance: true)  // readers hold it; the committer may be real-time
    private var queue: [Submission] = []
    private var queuedEvents = 0
    private var stopping = false
    private var stopped = false
    /// Set once an append failed: the log refuses appends until reopened, so does the server.
    private(set) var failure: StorageError?
    /// Called on the committer thread after each commit with (events, commit latency ns).
    var onCommit: (@Sendable (Int, UInt64) -> Void)?
    /// Called on the committer thread after each durable commit, before any completion: the
    /// first seq, the events in order, their blocks. Must not block.
    var onDurable: ((UInt64, [EventBatch], [BlockLocation]) -> Void)?
    /// Called once, on the committer thread, when an append fails and the log stops taking more.
    var onFailure: ((StorageError) -> Void)?

    let stageTimes: StageTimes?
    let schedulerHints: Bool

    init(log: SegmentLog, queueEventsMax: Int, stageTimes: StageTimes? = nil, schedulerHints: Bool = true) {
        self.log = log
        self.queueEventsMax = queueEventsMax
        self.stageTimes = stageTimes
        self.schedulerHints = schedulerHints
    }

    /// - Returns: with `realtime`, nil once the thread runs at real-time priority, or why it
    ///   could not (it then runs as without).
    @discardableResult
    func start(realtime: Bool = false) -> String? {
        nonisolated(unsafe) var refusal: String?
        let started = DispatchSemaphore(value: 0)
        startThread(name: "tl-commit") { [self] in
            // Every acknowledgement waits for this thread: after each wake-up (a submission, an
            // fsync done) it should run at once, not after a connection thread's slice.
            if schedulerHints { requestShortSlices() }
            // Real-time: it preempts everything else at once. Its bursts are short (it blocks
            // in fsync and on its queue), and the kernel's RT throttling caps it at 95% anyway.
            if realtime { refusal = requestRealtimePriority() }
            started.signal()
            run()
        }
        started.wait()
        return refusal
    }

    /// Queues blocks for the next commit, waiting while the queue is full.
    /// - Returns: false when the committer stopped or failed (the completion is not called).
    func submit(_ s: Submission) -> Bool {
        condition.mutex.lock()
        while !stopping && failure == nil && queuedEvents > 0 && queuedEvents + s.eventCount > queueEventsMax {
            condition.wait()
        }
        guard !stopping, failure == nil else {
            condition.mutex.unlock()
            return false
        }
        // Only the committer waits for the queue to fill, and only once it is empty.
        let wakes = queue.isEmpty
        queue.append(s)
        queuedEvents += s.eventCount
        condition.mutex.unlock()
        // After the unlock: a real-time committer woken while this thread still held the mutex
        // preempted it on its core, blocked on the mutex at once, lent it its priority and had
        // it pushed to the other core to let go (perf sched: a reader preempted by the
        // committer about once per batch, half of those moved to the other core at priority 98).
        if wakes { condition.broadcast() }
        return true
    }

    var queueDepth: Int { condition.mutex.locked { queuedEvents } }

    /// Why appends stopped, if they did (for /healthz).
    var failed: StorageError? { condition.mutex.locked { failure } }

    /// Queued → durable and completed, per submission (/metrics); one lock per commit.
    let ingestLatency = LatencyHistogram()

    /// Commits what is queued, then stops the thread. Returns when it has.
    func stop() {
        condition.mutex.lock()
        stopping = true
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.mutex.unlock()
    }

    private func run() {
        while true {
            condition.mutex.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if queue.isEmpty {
                stopped = true
                condition.broadcast()
                condition.mutex.unlock()
                return
            }
            let taken = queue
            queue.removeAll(keepingCapacity: true)
            queuedEvents = 0
            condition.mutex.unlock()
            // Readers waiting for room (and `stop`), woken with the mutex free (see `submit`).
            condition.broadcast()
            var group = [Submission]()
            for s in taken {
                if let body = s.exclusive {
                    if !group.isEmpty { commit(group); group.removeAll() }
                    body(self)
                } else {
                    group.append(s)
                }
            }
            if !group.isEmpty { commit(group) }
        }
    }

    /// Queues `body` to run on the committer thread between commits.
    func exclusive(_ body: @escaping (Committer) -> Void) -> Bool {
        submit(Submission(blocks: [], eventCount: 0, events: [], completion: { _ in }, exclusive: body))
    }

    /// Appends `events` as one commit, now; only from an exclusive body.
    func appendNow(_ events: [Event], blocks: [EncodedBlock]) -> Result<Committed, StorageError> {
        nonisolated(unsafe) var outcome: Result<Committed, StorageError> = .failure(.failed("not committed"))
        commit([Submission(blocks: blocks, eventCount: events.count, events: [.events(events)], completion: { outcome = $0 })])
        return outcome
    }

    private func commit(_ taken: [Submission]) {
        let start = monotonicNanoseconds()
        if let failure {
            for s in taken { s.completion(.failure(failure)) }
            return
        }
        var blocks = [EncodedBlock]()
        for s in taken { blocks.append(contentsOf: s.blocks) }
        do {
            let result = try log.append(encoded: blocks)
            let durableNs = monotonicNanoseconds()
            if let onDurable {
                onDurable(result.firstSeq, taken.flatMap(\.events), Array(log.blocks.suffix(blocks.count)))
            }
            let publishedNs = monotonicNanoseconds()
            // Each submission is whole blocks, so the chain hash after it is a block's.
            var seq = result.firstSeq
            var blockIndex = log.blocks.count - blocks.count
            for s in taken {
                let first = seq
                seq += UInt64(s.eventCount)
                blockIndex += s.blocks.count
                let hash = log.blocks[blockIndex - 1].header.chainHash
                s.completion(.success(Committed(firstSeq: first, lastSeq: seq - 1, chainHash: hash)))
                if let stageTimes, s.receivedNs != 0 {
                    stageTimes.record(.init(events: s.eventCount, parse: s.submittedNs &- s.receivedNs, queued: start &- s.submittedNs,
                                            commit: durableNs - start, publish: publishedNs - durableNs, reply: monotonicNanoseconds() - publishedNs,
                                            peer: s.peer, frameID: s.frameID, receivedAt: s.receivedNs))
                }
            }
            onCommit?(blocks.reduce(0) { $0 + $1.eventCount }, monotonicNanoseconds() - start)
            let now = monotonicNanoseconds()
            ingestLatency.record(taken.lazy.map { now &- $0.submittedNs })
        } catch {
            condition.mutex.locked {
                failure = error
                condition.broadcast()
            }
            onFailure?(error)
            for s in taken { s.completion(.failure(error)) }
        }
    }
}
