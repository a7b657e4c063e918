// Subscriptions (PROTOCOL.md "Subscriptions"): every new event matching a subscriber's filter,
// and every anomaly alert, the moment it is durable; optionally from a past sequence number.
//
// No gap, no duplicate: a subscriber catches up by reading blocks from the files, round after
// round, and becomes live under the hub's lock at the moment its next sequence number is the
// hub's head + 1. Every commit publishes under the same lock, so the first live event is exactly
// the one after the last one read. Publishing never blocks the committer: a subscriber whose
// unsent frames pass a limit is dropped with an error naming the sequence number to resume from.
import CThreads
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerProjection
import LedgerStorage

struct SubscribeRequest {
    var fromSeq: UInt64?
    var types: Set<EventType> = []
    var events = true
    var alerts = false

    /// `{"from_seq": N, "types": ["revoked", ...], "events": true, "alerts": true}`, every field optional.
    init(json payload: [UInt8]) throws(FrameRequestError) {
        if payload.isEmpty { return }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any] else {
            throw FrameRequestError("SUBSCRIBE payload is not a JSON object")
        }
        for key in object.keys where !["from_seq", "types", "events", "alerts"].contains(key) {
            throw FrameRequestError("SUBSCRIBE: unknown field \"\(key)\"")
        }
        if let v = object["from_seq"] {
            guard let n = v as? NSNumber, n.doubleValue == Double(n.int64Value), n.int64Value >= 1 else {
                throw FrameRequestError("SUBSCRIBE: from_seq must be an integer of at least 1")
            }
            fromSeq = UInt64(n.int64Value)
        }
        if let v = object["types"] {
            guard let list = v as? [String] else { throw FrameRequestError("SUBSCRIBE: types must be a list of event type names") }
            for name in list {
                guard let t = EventType(name: name) else { throw FrameRequestError("SUBSCRIBE: unknown event type \"\(name)\"") }
                types.insert(t)
            }
        }
        for (key, target) in [("events", \SubscribeRequest.events), ("alerts", \SubscribeRequest.alerts)] {
            if let v = object[key] {
                guard let b = v as? Bool else { throw FrameRequestError("SUBSCRIBE: \(key) must be true or false") }
                self[keyPath: target] = b
            }
        }
    }
}

func parseJSONObject(_ bytes: [UInt8]) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
}

/// `{"gateway": "...", "key": "..."}` (a HELLO payload, or the value of `auth` in line mode).
func parseHello(_ bytes: [UInt8], wrapped: Bool) -> (gateway: String, key: String)? {
    guard var object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else { return nil }
    if wrapped {
        guard object.count == 1, let inner = object["auth"] as? [String: Any] else { return nil }
        object = inner
    }
    guard let g = object["gateway"] as? String, let k = object["key"] as? String else { return nil }
    return (g, k)
}

struct FrameRequestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

final class SubscriptionHub: @unchecked Sendable {
    struct Live {
        let connection: FramedConnection
        let frameID: UInt64
        /// Bit `rawValue` per wanted type; all ones for "every type". A bit test per event, where
        /// a `Set` lookup hashed every event of every commit on the committer thread.
        let typeMask: UInt64

        init(connection: FramedConnection, frameID: UInt64, types: Set<EventType>) {
            self.connection = connection
            self.frameID = frameID
            typeMask = types.isEmpty ? ~0 : types.reduce(0) { $0 | 1 << UInt64($1.rawValue) }
        }
    }

    private let lock = Mutex()
    private var blocks: [BlockLocation]
    private var lastSeq: UInt64
    private var live: [ObjectIdentifier: Live] = [:]
    /// Running totals for /metrics, so a scrape never walks the block list.
    private var storedBytes: UInt64 = 0
    private var segmentCount = 0

    init(log: SegmentLog) {
        blocks = log.blocks
        lastSeq = log.lastSeq
        count(log.blocks[...])
    }

    private func count(_ new: ArraySlice<BlockLocation>) {
        var previous = blocks.count > new.count ? blocks[blocks.count - new.count - 1].segment : nil
        for b in new {
            storedBytes += UInt64(b.header.totalBytes)
            if b.segment != previous { segmentCount += 1; previous = b.segment }
        }
    }

    var head: UInt64 { lock.locked { lastSeq } }

    /// The committed head: its seq, the chain hash of its block, the ledger's size.
    var headState: (seq: UInt64, chainHash: Digest32, storedBytes: UInt64, segments: Int) {
        lock.locked { (lastSeq, blocks.last?.header.chainHash ?? .zero, storedBytes, segmentCount) }
    }

    /// Up to `max` committed blocks, in order, from the one holding `fromSeq`.
    func committedBlocks(fromSeq: UInt64, max: Int) -> [BlockLocation] {
        lock.locked {
            let lo = firstBlock(endingAtOrAfter: fromSeq)
            return Array(blocks[lo..<min(blocks.count, lo + max)])
        }
    }

    /// The committed blocks from the `index`th on, in order (the list only grows).
    func committedBlocks(fromIndex index: Int) -> [BlockLocation] {
        lock.locked { index < blocks.count ? Array(blocks[index...]) : [] }
    }

    /// Up to `max` committed blocks, in order, that end before `seq`.
    func committedBlocks(before seq: UInt64, max: Int) -> [BlockLocation] {
        lock.locked {
            let hi = firstBlock(endingAtOrAfter: seq)
            return Array(blocks[Swift.max(0, hi - max)..<hi])
        }
    }

    /// Call with `lock` held.
    private func firstBlock(endingAtOrAfter seq: UInt64) -> Int {
        var lo = 0, hi = blocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if blocks[mid].header.lastSeq < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// On the committer thread, after the events are durable.
    func publish(firstSeq: UInt64, batches: [EventBatch], newBlocks: [BlockLocation]) {
        lock.locked {
            let count = batches.reduce(0) { $0 + $1.count }
            blocks.append(contentsOf: newBlocks)
            self.count(newBlocks[...])
            lastSeq = firstSeq + UInt64(count) - 1
            guard !live.isEmpty else { return }
            let wanted = live.values.reduce(UInt64(0)) { $0 | $1.typeMask }
            // Each subscriber's frames of this commit go out as one push, so one send: a send
            // per event was most of the committer's time, and the acknowledgements wait for it.
            // Pending bytes are pushed at 64 KiB, so a large commit does not count against a
            // subscriber that keeps up as if it had fallen behind.
            var pending = [ObjectIdentifier: (bytes: [UInt8], seq: UInt64)]()
            func flush(_ key: ObjectIdentifier) {
                guard let p = pending.removeValue(forKey: key), !p.bytes.isEmpty, let sub = live[key] else { return }
                if !sub.connection.push(p.bytes) {
                    if !sub.connection.isClosed {
                        sub.connection.dropSubscription(reason: "the subscriber fell behind; resubscribe with from_seq \(p.seq)")
                    }
                    live[key] = nil
                }
            }
            var blockIndex = 0
            var seq = firstSeq
            for batch in batches {
                defer { seq += UInt64(batch.count) }
                for (i, type) in batch.types.enumerated() where wanted & (1 << UInt64(type.rawValue)) != 0 {
                    let seq = seq + UInt64(i)
                    while blockIndex < newBlocks.count - 1 && newBlocks[blockIndex].header.lastSeq < seq { blockIndex += 1 }
                    var line: [UInt8]?
                    for (key, sub) in live where sub.typeMask & (1 << UInt64(type.rawValue)) != 0 {
                        if line == nil {
                            var l = [UInt8]()
                            NDJSONEncoder.append(batch.event(at: i), seq: SequenceNumber(seq), receivedAt: newBlocks[blockIndex].header.receivedAt, to: &l)
                            l.removeLast()
                            line = l
                        }
                        // The first seq not yet pushed is where a dropped subscriber resumes.
                        Frame(.event, id: sub.frameID, payload: line!).encode(into: &pending[key, default: ([], seq)].bytes)
                        if pending[key]!.bytes.count >= 64 << 10 { flush(key) }
                    }
                }
            }
            for key in Array(pending.keys) { flush(key) }
        }
    }

    /// Sends events from `fromSeq` on to `connection`, then makes it live. Runs on the
    /// connection's reader thread; returns false when the connection went away meanwhile.
    func catchUpAndJoin(_ connection: FramedConnection, frameID: UInt64, fromSeq: UInt64, types: Set<EventType>, directory: String) -> Bool {
        var next = fromSeq
        let reader = BlockFileReader(directory: directory)
        while true {
            let round: [BlockLocation]? = lock.locked {
                if next > lastSeq {
                    live[ObjectIdentifier(connection)] = Live(connection: connection, frameID: frameID, types: types)
                    return nil
                }
                var lo = 0, hi = blocks.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if blocks[mid].header.lastSeq < next { lo = mid + 1 } else { hi = mid }
                }
                return Array(blocks[lo..<min(blocks.count, lo + 64)])
            }
            guard let round else { return true }
            for location in round {
                guard let block = reader.read(location) else {
                    connection.dropSubscription(reason: "cannot read seq \(location.header.firstSeq)-\(location.header.lastSeq) for catch-up")
                    return false
                }
                for i in 0..<block.count {
                    let seq = location.header.firstSeq + UInt64(i)
                    guard seq >= next else { continue }
                    if types.isEmpty || types.contains(block.types[i]) {
                        var line = [UInt8]()
                        NDJSONEncoder.append(block.event(at: i), seq: SequenceNumber(seq), receivedAt: location.header.receivedAt, to: &line)
                        line.removeLast()
                        connection.waitForReplyRoom()
                        if connection.isClosed { return false }
                        _ = connection.push(Frame(.event, id: frameID, payload: line).encoded, force: true)
                    }
                }
                next = location.header.lastSeq + 1
            }
        }
    }

    func leave(_ connection: FramedConnection) {
        lock.locked { live[ObjectIdentifier(connection)] = nil }
    }
}

/// The server's own projection at the head, fed every durable commit, raising alerts. The queue
/// and the state have separate locks: the committer only ever waits for the queue's, never for
/// events being applied.
final class LiveProjection: @unchecked Sendable {
    // Priority inheritance: the real-time committer takes queueLock, HTTP handlers take
    // stateLock, and this thread may hold either while in SCHED_IDLE.
    private let queueLock = Condition(priorityInheritance: true)
    private let stateLock = Condition(priorityInheritance: true)
    private let projection: Projection
    private var queue: [(UInt64, [EventBatch])] = []
    /// Events enqueued and not yet applied (taken ones count until applied).
    private var queuedEvents = 0
    private(set) var queuedEventsHighWater = 0
    let queueEventsMax: Int
    private var subscribers: [ObjectIdentifier: (FramedConnection, UInt64)] = [:]
    private var stopping = false
    /// Whether the thread yields the cores while it is caught up (`yieldsWhileCaughtUp`).
    private let yields: Bool
    private var idle = false
    /// The projector thread's kernel id, and the seq a reader waits for: until it has applied
    /// that far it runs at normal priority (`withProjection`).
    private var threadID: Int32 = 0
    private var boostUntilSeq: UInt64 = 0
    /// Past this many events behind, it runs at normal priority again; below the second it
    /// goes back to idle. 128k events are about 150 ms at 850k events/s: how late an alert can
    /// be while the parsers fill the cores.
    static let idleBacklogMax = 131_072
    static let idleResumeBelow = 32_768

    /// - Parameter yieldsWhileCaughtUp: run the thread in SCHED_IDLE while it is less than
    ///   `idleBacklogMax` events behind, where the process may leave SCHED_IDLE again
    ///   (CAP_SYS_NICE). Every acknowledgement waits on the connection threads' parsing and
    ///   none on this thread, so in a surge of load it takes only the CPU they leave
    ///   (BENCHMARKS.md run K: ack p99 at 800k events/s 44 → 16 ms, 10 of 10 pairs).
    init(_ projection: Projection, queueEventsMax: Int = 1 << 21, yieldsWhileCaughtUp: Bool = false) {
        self.projection = projection
        self.queueEventsMax = queueEventsMax
        self.yields = yieldsWhileCaughtUp && tl_can_leave_idle() == 1
        startThread(name: "tl-project") { [self] in
            if yields {
                let id = tl_thread_id()
                queueLock.mutex.locked { threadID = id; idle = tl_thread_set_idle(0, 1) == 0 }
            }
            run()
        }
    }

    /// Whether the projector thread is in SCHED_IDLE now (tests).
    var isIdle: Bool { queueLock.mutex.locked { idle } }

    /// Idle while caught up, normal once `idleBacklogMax` behind, idle again below
    /// `idleResumeBelow` (the gap keeps it from switching on every batch near the bound).
    static func staysIdle(idle: Bool, backlog: Int) -> Bool {
        idle ? backlog <= idleBacklogMax : backlog < idleResumeBelow
    }

    /// On the projector thread, after it took work: idle while caught up, normal when behind
    /// or while a reader waits. The decision and the switch share queueLock with `boost`, so a
    /// reader's boost is never undone by a decision taken just before it.
    private func adjustPriority() {
        guard yields else { return }
        queueLock.mutex.locked {
            let wanted = Self.staysIdle(idle: idle, backlog: queuedEvents) && projection.lastSeq >= boostUntilSeq
            if wanted != idle, tl_thread_set_idle(0, wanted ? 1 : 0) == 0 { idle = wanted }
        }
    }

    /// From the committer thread. Waits while `queueEventsMax` events are waiting to be
    /// applied: a projector that falls behind (a slow core, a burst of client-encoded batches)
    /// then holds the committer, the commit queue fills, readers stop reading and TCP pushes
    /// back, instead of decoded blocks piling up in memory without limit.
    func enqueue(firstSeq: UInt64, batches: [EventBatch]) {
        let count = batches.reduce(0) { $0 + $1.count }
        queueLock.mutex.locked {
            while !stopping && queuedEvents > 0 && queuedEvents + count > queueEventsMax { queueLock.wait() }
            queue.append((firstSeq, batches))
            queuedEvents += count
            queuedEventsHighWater = max(queuedEventsHighWater, queuedEvents)
            queueLock.broadcast()
        }
    }

    /// Events committed and not yet applied to the head's state (/metrics).
    var backlog: Int { queueLock.mutex.locked { queuedEvents } }
    /// Anomalies raised so far by the events applied (the head's state).
    var anomalyCount: Int { stateLock.mutex.locked { projection.anomalyCount } }

    func stop() {
        queueLock.mutex.locked { stopping = true; queueLock.broadcast() }
        stateLock.mutex.locked { stateLock.broadcast() }
    }

    private func run() {
        while true {
            let work: [(UInt64, [EventBatch])]? = queueLock.mutex.locked {
                while queue.isEmpty && !stopping { queueLock.wait() }
                if queue.isEmpty { return nil }
                defer { queue.removeAll() }
                return queue
            }
            guard let work else { return }
            adjustPriority()
            stateLock.mutex.locked {
                for (start, batches) in work {
                    let before = projection.anomalyCount
                    var first = start
                    for batch in batches {
                        switch batch {
                        case let .events(events): for (i, e) in events.enumerated() { projection.apply(e, seq: first + UInt64(i)) }
                        case let .block(block): projection.apply(block, firstSeq: first)
                        }
                        first += UInt64(batch.count)
                    }
                    let applied = Int(first - start)
                    queueLock.mutex.locked {
                        queuedEvents -= applied
                        queueLock.broadcast()
                    }
                    if projection.anomalyCount > before && !subscribers.isEmpty && first > start {
                        for a in projection.anomalies(seq: start...(first - 1)) {
                            let bytes = Array(a.json.utf8)
                            for (key, (connection, id)) in subscribers where !connection.push(Frame(.alert, id: id, payload: bytes).encoded) {
                                if !connection.isClosed {
                                    connection.dropSubscription(reason: "the subscriber fell behind on alerts; resubscribe with from_seq \(a.seq)")
                                }
                                subscribers[key] = nil
                            }
                        }
                    }
                }
                stateLock.broadcast()
            }
        }
    }

    /// Sends the alerts raised at or after `fromSeq` so far, then every new one.
    func subscribe(_ connection: FramedConnection, frameID: UInt64, fromSeq: UInt64) {
        stateLock.mutex.locked {
            if fromSeq <= projection.lastSeq {
                for a in projection.anomalies(seq: fromSeq...projection.lastSeq) {
                    _ = connection.push(Frame(.alert, id: frameID, payload: Array(a.json.utf8)).encoded, force: true)
                }
            }
            subscribers[ObjectIdentifier(connection)] = (connection, frameID)
        }
    }

    func leave(_ connection: FramedConnection) {
        stateLock.mutex.locked { subscribers[ObjectIdentifier(connection)] = nil }
    }

    var lastSeq: UInt64 { stateLock.mutex.locked { projection.lastSeq } }

    /// Runs `body` on the state once it has applied everything up to `seq`.
    func withProjection<T>(upTo seq: UInt64, _ body: (Projection) -> T) -> T {
        stateLock.mutex.locked {
            if projection.lastSeq < seq { boost(until: seq) }
            while projection.lastSeq < seq && !queueLock.mutex.locked({ stopping }) { stateLock.wait(timeoutMs: 100) }
            return body(projection)
        }
    }

    /// A reader waits for the projector (an HTTP token answer reads its acknowledged writes):
    /// out of SCHED_IDLE until it has applied `seq`, so the answer does not wait for the
    /// parsers to leave a core.
    private func boost(until seq: UInt64) {
        queueLock.mutex.locked {
            boostUntilSeq = max(boostUntilSeq, seq)
            if idle, threadID != 0, tl_thread_set_idle(threadID, 0) == 0 { idle = false }
        }
    }
}

/// Reads blocks straight from the segment files with handles of its own, so a subscriber's
/// catch-up never touches the committer's `SegmentLog`.
final class BlockFileReader {
    let directory: String
    let fs = PosixFileSystem()
    var handles: [String: any LedgerStorage.FileHandle] = [:]

    init(directory: String) { self.directory = directory }
    deinit { for h in handles.values { h.close() } }

    func read(_ location: BlockLocation) -> DecodedBlock? {
        let handle: any LedgerStorage.FileHandle
        if let h = handles[location.segment] { handle = h } else {
            guard let h = try? fs.open(joinPath(directory, location.segment), create: false, writable: false) else { return nil }
            handles[location.segment] = h
            handle = h
        }
        guard let stored = try? handle.read(at: location.offset + UInt64(BlockHeader.size), count: Int(location.header.storedBytes)),
              stored.count == Int(location.header.storedBytes) else { return nil }
        guard case let .success(raw) = stored.withUnsafeBytes({ BlockReader.rawPayload(header: location.header, stored: $0) }),
              case let .success(block) = BlockReader.decode(header: location.header, raw: raw) else { return nil }
        return block
    }
}
