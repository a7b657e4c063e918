// `tokenledger serve`: TCP ingest into one segment log. One thread accepts; each connection has
// a reader thread (and, in framed mode, a writer thread for its replies); one committer thread
// owns the log (Committer.swift). Line mode and framed mode share the port and are told apart by
// the first bytes (PROTOCOL.md).
//
// Why threads and blocking sockets rather than an event loop: connections are bounded
// (`connectionsMax`), a blocked reader is exactly the backpressure wanted (a full commit queue
// stops the read, TCP stops the sender), and parsing + encoding then runs on every core without
// a hand-off. The cost is a thread (1 MiB stack, mostly untouched) per connection.
import Glibc
import LedgerCrypto
import LedgerModel
import LedgerProjection
import LedgerStorage

public struct ServerOptions: Sendable {
    public var listen = Endpoint(host: "127.0.0.1", port: 7400)
    public var connectionsMax = 256
    public var limits = EventLimits.default
    /// Largest framed-mode payload accepted.
    public var framePayloadBytesMax = 16 << 20
    /// Most events in one framed batch.
    public var batchEventsMax = 65_536
    /// Replies waiting for a client that does not read them; past this the connection stops
    /// reading new frames until the client catches up.
    public var replyBytesMax = 4 << 20
    /// Events queued for the committer, all connections together.
    public var queueEventsMax = 1 << 20
    /// Events committed and not yet applied by the projector at the head; past this the
    /// committer waits for it (and so, through the commit queue, do the readers).
    public var projectionQueueEventsMax = 1 << 21
    public var blockEventsMax = 16_384
    /// Line mode submits what it has after each read, or after this many events.
    public var lineBatchEvents = 16_384
    /// Unsent frames a subscriber may fall behind by before it is dropped (it can resume).
    public var subscriberBytesMax = 16 << 20
    /// Keep a projection at the head for anomaly alerts to subscribers.
    public var alerts = true
    /// When set, every connection must authenticate as one of these gateways before anything
    /// it sends is taken (PROTOCOL.md "Authentication").
    public var credentials: Credentials?
    /// SHA-256 of the admin key; admin requests (ROLLBACK) are refused when nil.
    public var adminKeyDigest: Digest32?
    /// The HTTP read side (`serve --http`, HTTPAPI.swift); off when nil.
    public var http: HTTPAPIOptions?
    /// Ask the kernel to run the committer promptly after each wake-up (short EEVDF slices,
    /// Linux 6.12+; ignored elsewhere), and let the projector yield the cores while it is caught
    /// up (SCHED_IDLE, where the process may leave it again). `bench server
    /// --no-scheduler-hints` measures without.
    public var schedulerHints = true
    /// How the committer thread is scheduled (`serve --commit-priority`).
    public var commitPriority = CommitPriority.automatic
    /// Records each framed batch's time per stage (`bench server`); nil in `serve`.
    public var stageTimes: StageTimes?
    public init() {}
}

/// Every acknowledgement and every revocation sent to a subscriber waits on the one committer
/// thread after each of its wake-ups (a submission, an fsync done); on a host whose cores the
/// parsers fill, a normal-priority committer waits milliseconds for a core (BENCHMARKS.md).
public enum CommitPriority: String, Sendable, CaseIterable {
    /// Real-time (SCHED_FIFO 1) where the process may (CAP_SYS_NICE, or RLIMIT_RTPRIO >= 1:
    /// systemd `LimitRTPRIO=1`), else normal priority with one log line saying why.
    case automatic = "auto"
    /// Real-time, or the server does not start.
    case realtime
    /// Never real-time.
    case normal
}

public struct ServerStats: Sendable, Equatable {
    public var connectionsAccepted = 0
    public var connectionsRefused = 0
    public var connectionsOpen = 0
    public var linesAccepted = 0
    public var linesRejected = 0
    /// Well-formed lines that are not token events (a Kong log of an unauthenticated 404).
    public var linesSkipped = 0
    public var batchesAcknowledged = 0
    public var batchesRefused = 0
    public var authenticationFailures = 0
    public var eventsCommitted = 0
}

public final class LedgerServer: @unchecked Sendable {
    public let log: SegmentLog
    public let options: ServerOptions
    let logger: @Sendable (String) -> Void
    let committer: Committer
    let hub: SubscriptionHub
    private(set) var live: LiveProjection?
    /// Anomalies the state at the head has raised so far (nil with alerts off).
    public var anomaliesRaised: Int? { live?.anomalyCount }
    /// Events committed and not yet applied to the state at the head (0 with alerts off).
    public var projectionBacklog: Int { live?.backlog ?? 0 }
    private var listener: Socket?
    private var http: HTTPServer?
    private let state = Condition()
    private var stats = ServerStats()
    private var connections: [Int: Socket] = [:]
    private var nextConnectionID = 0
    private var stopping = false
    private var acceptLoopDone = false

    public init(log: SegmentLog, options: ServerOptions, logger: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.options = options
        self.logger = logger
        self.committer = Committer(log: log, queueEventsMax: options.queueEventsMax, stageTimes: options.stageTimes, schedulerHints: options.schedulerHints)
        self.hub = SubscriptionHub(log: log)
    }

    public var port: UInt16 { listener?.localPort ?? 0 }
    /// Whether `start()` put the committer at real-time priority (`options.commitPriority`).
    public private(set) var committerIsRealtime = false
    /// The HTTP side's port (0 when it is off).
    public var httpPort: UInt16 { http?.port ?? 0 }
    var isStopping: Bool { state.mutex.locked { stopping } }

    /// Reads for a connection; once the server is stopping, only what had already arrived when
    /// it began to (at most the kernel's receive buffer), so a client that keeps sending cannot
    /// hold the shutdown open.
    func read(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer, stopBudget: inout Int?) throws(SocketError) -> Int {
        guard isStopping else { return try socket.read(into: buffer) }
        if stopBudget == nil { stopBudget = socket.receiveBufferBytes }
        guard stopBudget! > 0 else { return 0 }
        let n = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, stopBudget!)]), queuedOnly: true)
        stopBudget! -= n
        return n
    }
    public var statistics: ServerStats { state.mutex.locked { stats } }

    func update(_ body: (inout ServerStats) -> Void) { state.mutex.locked { body(&stats) } }

    /// Binds, then accepts connections on a thread of its own. Throws also when
    /// `commitPriority` is `.realtime` and the kernel refuses it.
    public func start() throws(SocketError) {
        let l = try Socket.listen(options.listen)
        listener = l
        if options.alerts {
            // The state now, from the newest snapshot and the tail, before anything is appended.
            let engine = ProjectionEngine(log: log, store: SnapshotStore(dataDirectory: log.directory))
            do { live = LiveProjection(try engine.state(at: .head).projection, queueEventsMax: options.projectionQueueEventsMax,
                                         yieldsWhileCaughtUp: options.schedulerHints) } catch {
                logger("no alerts this run: cannot build the state at the head: \(error)")
            }
            for n in engine.notes { logger("note: \(n)") }
        }
        let hub = self.hub, live = self.live
        committer.onDurable = { first, batches, blocks in
            hub.publish(firstSeq: first, batches: batches, newBlocks: blocks)
            live?.enqueue(firstSeq: first, batches: batches)
        }
        committer.onCommit = { [weak self] events, _ in self?.update { $0.eventsCommitted += events } }
        // Without its prepared file a roll makes the segment as before, a little slower; the
        // failure itself (most often a disk nearly full) is what an operator needs to see.
        log.preparations.onFailure { [logger] error in
            logger("preparing the next segment: \(error); segments are made as they fill (slower commits after each roll); check the disk's free space")
        }
        committer.onFailure = { [logger] error in
            logger("the ledger failed and takes no more appends: \(error); every batch from now on is answered \"not committed\"; what was acknowledged is on disk; fix the cause and restart")
        }
        let refusal = committer.start(realtime: options.commitPriority != .normal)
        committerIsRealtime = options.commitPriority != .normal && refusal == nil
        if let refusal {
            let why = "real-time priority for the committer: \(refusal) (needs CAP_SYS_NICE, or LimitRTPRIO=1 under systemd)"
            if options.commitPriority == .realtime {
                committer.stop()
                live?.stop()
                l.close()
                listener = nil
                throw SocketError(message: why + "; --commit-priority auto runs without it")
            }
            logger(why + "; the committer runs at normal priority (--commit-priority normal: do not ask)")
        }
        startThread(name: "tl-accept") { [self] in acceptLoop(l) }
        if let h = options.http { http = try startHTTP(h) }
    }

    private func acceptLoop(_ l: Socket) {
        while !state.mutex.locked({ stopping }) {
            let accepted: (Socket, String)?
            do { accepted = try l.accept(timeoutMs: 200) } catch {
                logger("accept failed: \(error)")
                continue
            }
            guard let (socket, peer) = accepted else { continue }
            let id: Int? = state.mutex.locked {
                guard connections.count < options.connectionsMax else {
                    stats.connectionsRefused += 1
                    return nil
                }
                nextConnectionID += 1
                connections[nextConnectionID] = socket
                stats.connectionsAccepted += 1
                stats.connectionsOpen = connections.count
                return nextConnectionID
            }
            guard let id else {
                // Both modes read this: a line-mode client sees a JSON line, a framed one an
                // ERROR frame would need its preface first, so the line is what is sent.
                try? socket.write(Array("{\"error\":\"too many connections (limit \(options.connectionsMax)); try again later\"}\n".utf8))
                socket.close()
                logger("refused \(peer): \(options.connectionsMax) connections open")
                continue
            }
            startThread(name: "tl-conn-read") { [self] in
                serve(socket, peer: peer)
                socket.close()
                state.mutex.locked {
                    connections[id] = nil
                    stats.connectionsOpen = connections.count
                    state.broadcast()
                }
            }
        }
        state.mutex.locked {
            acceptLoopDone = true
            state.broadcast()
        }
    }

    /// Stops accepting, lets every connection finish what it sent (acknowledging it), commits,
    /// and closes the log. Returns when all of that is done.
    public func stop() {
        // HTTP first: its handlers read the state and may queue a rollback on the committer.
        http?.stop()
        let open: [Socket] = state.mutex.locked {
            stopping = true
            return Array(connections.values)
        }
        state.mutex.locked { while !acceptLoopDone { state.wait() } }
        listener?.close()
        // Readers see end of stream after what the clients already sent; writers still send.
        for s in open { s.shutdownRead() }
        state.mutex.locked {
            var waitedMs = 0
            while !connections.isEmpty && waitedMs < 10_000 {
                state.wait(timeoutMs: 100)
                waitedMs += 100
            }
        }
        committer.stop()
        live?.stop()
        do { try log.close() } catch { logger("closing the ledger: \(error)") }
    }

    // MARK: Connections

    private func serve(_ socket: Socket, peer: String) {
        // Framed clients open with the 8-byte preface; anything else is a line of NDJSON.
        var first = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while first.count < Frame.preface.count && first.elementsEqual(Frame.preface.prefix(first.count)) {
            let n: Int
            do { n = try buffer.withUnsafeMutableBytes { try socket.read(into: $0) } } catch { return }
            if n == 0 { break }
            first.append(contentsOf: buffer[0..<n])
        }
        if first.count >= Frame.preface.count && first.prefix(Frame.preface.count).elementsEqual(Frame.preface) {
            FramedConnection(server: self, socket: socket, peer: peer).run(initial: Array(first.dropFirst(Frame.preface.count)))
        } else if !first.isEmpty {
            LineConnection(server: self, socket: socket, peer: peer).run(initial: first)
        }
    }
}

/// Line mode: NDJSON in, nothing out (fire and forget). Bad lines are counted and logged.
final class LineConnection {
    let server: LedgerServer
    let socket: Socket
    let peer: String
    var framer: LineFramer
    let decoder: NDJSONDecoder
    /// Lines accepted since the last flush, already encoded into blocks.
    var pending: BlockBuilder
    let kongOptions: KongLog.Options
    var lastSkipLogNs: UInt64 = 0

    init(server: LedgerServer, socket: Socket, peer: String) {
        self.server = server; self.socket = socket; self.peer = peer
        framer = LineFramer(limits: server.options.limits)
        var k = KongLog.Options()
        k.limits = server.options.limits
        kongOptions = k
        decoder = NDJSONDecoder(limits: server.options.limits)
        pending = BlockBuilder(blockEventsMax: server.options.blockEventsMax)
    }

    /// The authenticated gateway (line mode: the first line `{"auth":{"gateway":…,"key":…}}`).
    var gateway: String?
    var refused = false

    func run(initial: [UInt8]) {
        framer.append(initial)
        var stopBudget: Int?
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            drain()
            if refused { return }
            if !flush() { return }
            let n: Int
            do { n = try buffer.withUnsafeMutableBytes { try server.read(socket, into: $0, stopBudget: &stopBudget) } } catch {
                server.logger("line \(peer): \(error)")
                break
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        framer.finish()
        drain()
        if refused { return }
        _ = flush()
    }

    /// With credentials configured, the first line must authenticate; anything else ends the
    /// connection with one JSON error line, and nothing it sent is kept.
    private func authenticate(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard let credentials = server.options.credentials else { return true }
        if let (g, k) = parseHello(Array(bytes), wrapped: true), credentials.check(gateway: g, key: k) {
            gateway = g
            return false
        }
        refused = true
        pending = BlockBuilder(blockEventsMax: server.options.blockEventsMax)
        server.update { $0.authenticationFailures += 1 }
        server.logger("line \(peer): refused: the first line must be {\"auth\":{\"gateway\":…,\"key\":…}} with a configured gateway's key")
        try? socket.write(Array("{\"error\":\"authentication required: the first line must be {\\\"auth\\\":{\\\"gateway\\\":\\\"ID\\\",\\\"key\\\":\\\"KEY\\\"}}; nothing from this connection was taken\"}\n".utf8))
        return false
    }

    private func drain() {
        var accepted = 0, rejected = 0, skipped = 0
        while let result = framer.nextLine() {
            switch result {
            case let .line(lineNumber, bytes):
                if server.options.credentials != nil && gateway == nil {
                    _ = authenticate(bytes)
                    if refused { return }
                    continue
                }
                do {
                    try bytes.withUnsafeBytes { b in
                        // Kong's tcp-log objects are recognised by shape (they have no "type").
                        guard KongLog.looksLikeKong(b) else {
                            return try pending.append(line: b, lineNumber: lineNumber, decoder: decoder, gateway: gateway)
                        }
                        var event = try KongLog.event(from: b, lineNumber: lineNumber, options: kongOptions)
                        if let gateway, event.gateway != nil, event.gateway != gateway {
                            throw EventDecodeError(line: lineNumber, field: "gateway", reason: "is not the authenticated gateway \"\(gateway)\"")
                        }
                        if let gateway, event.gateway == nil { event.gateway = gateway }
                        if let problem = BlockPayloadEncoder.unencodable(event) { throw EventDecodeError(line: lineNumber, reason: problem) }
                        try pending.append(event)
                    }
                    accepted += 1
                } catch let error as EventDecodeError where error.reason.hasPrefix(KongLog.notATokenEvent) {
                    skipped += 1
                    let now = monotonicNanoseconds()
                    if now - lastSkipLogNs > 60_000_000_000 {
                        lastSkipLogNs = now
                        server.logger("line \(peer): skipped (counted, logged once a minute) \(error)")
                    }
                } catch {
                    rejected += 1
                    server.logger("line \(peer): rejected \(error)")
                }
            case let .oversized(lineNumber, byteCount):
                if server.options.credentials != nil && gateway == nil {
                    _ = authenticate([])
                    return
                }
                rejected += 1
                server.logger("line \(peer): rejected line \(lineNumber): \(byteCount) bytes, over the \(framer.lineBytesMax)-byte limit")
            }
            if pending.eventCount >= server.options.lineBatchEvents { _ = flush() }
        }
        if accepted + rejected + skipped > 0 {
            server.update { $0.linesAccepted += accepted; $0.linesRejected += rejected; $0.linesSkipped += skipped }
        }
    }

    /// - Returns: false when the committer no longer takes events (stopping or failed).
    private func flush() -> Bool {
        guard pending.eventCount > 0 else { return true }
        let count = pending.eventCount
        let blocks: [EncodedBlock], decoded: [DecodedBlock]
        do { (blocks, decoded) = try pending.finish() } catch {
            // Only a block over the payload size limit gets here (each event was checked).
            server.logger("line \(peer): \(count) events not committed: \(error)")
            server.update { $0.linesRejected += count; $0.linesAccepted -= count }
            return true
        }
        let peer = self.peer, logger = server.logger
        return server.committer.submit(.init(blocks: blocks, eventCount: count, events: decoded.map { .block($0) }, completion: { result in
            if case let .failure(e) = result { logger("line \(peer): \(count) events not committed: \(e)") }
        }))
    }
}

/// Framed mode: batches in, one reply per frame out, in the order the frames came.
final class FramedConnection: @unchecked Sendable {
    let server: LedgerServer
    let socket: Socket
    let peer: String
    let decoder: NDJSONDecoder
    private let replies = Condition()
    private var slots: [Int: [UInt8]] = [:]
    private var assigned = 0
    private var sent = 0
    private var queuedBytes = 0
    private var readerDone = false
    private var writerDone = false
    private var broken = false
    /// A thread is writing to the socket (the writer, or one sending a reply the moment it is
    /// ready); replies go out in order because only the owner sends.
    private var writing = false
    /// Readers waiting in `waitForReplyRoom`.
    private var roomWaiters = 0
    private var subscribed = false
    private var dropped = false
    /// The authenticated gateway, when the server requires authentication.
    private var gateway: String?

    var isClosed: Bool { replies.mutex.locked { broken || dropped || readerDone } }

    init(server: LedgerServer, socket: Socket, peer: String) {
        self.server = server; self.socket = socket; self.peer = peer
        decoder = NDJSONDecoder(limits: server.options.limits)
    }

    func run(initial: [UInt8]) {
        do { try socket.write(Frame.preface) } catch { return }
        startThread(name: "tl-conn-write") { [self] in writeLoop() }
        var parser = FrameParser(payloadBytesMax: server.options.framePayloadBytesMax)
        parser.feed(initial)
        var stopBudget: Int?
        reading: while true {
            do {
                while let frame = try parser.next() {
                    adaptSlices(to: frame)
                    waitForReplyRoom()
                    if !handle(frame) { break reading }
                }
            } catch {
                let slot = reserve()
                fill(slot, Frame(.error, id: 0, text: json(["error": "\(error)"])).encoded)
                server.logger("framed \(peer): \(error); closing")
                break
            }
            let n: Int
            do { n = try parser.receive { buffer throws(SocketError) in try server.read(socket, into: buffer, stopBudget: &stopBudget) } } catch { break }
            if n == 0 {
                if parser.bufferedBytes > 0 {
                    server.logger("framed \(peer): connection ended inside a frame; \(parser.bufferedBytes) bytes of it dropped")
                }
                break
            }
        }
        if subscribed {
            server.hub.leave(self)
            server.live?.leave(self)
        }
        replies.mutex.locked {
            readerDone = true
            replies.broadcast()
            // Replies to batches in flight are still sent before the connection closes.
            while !writerDone { replies.wait() }
        }
    }

    /// The slice this reader asked for (see `adaptSlices`); nil until its first frame.
    private var slice: ReaderSlice?

    /// A connection sending small frames (a revocation feed, a gateway flushing on a linger) is
    /// waiting on each one: its reader asks for short slices, so it runs as soon as a frame
    /// arrives instead of after another connection's parse. A reader of large batches asks for
    /// long ones: parsers sharing a core by turns of a millisecond or so finish all their batches
    /// late, where turns longer than a batch's parse let each finish in arrival order (the
    /// short-sliced threads on the acknowledgement path still preempt it). One syscall per change
    /// of kind, none per frame.
    private func adaptSlices(to frame: Frame) {
        guard server.options.schedulerHints else { return }
        let wanted = ReaderSlice(payloadBytes: frame.payload.count)
        if wanted != slice {
            slice = wanted
            requestSlice(microseconds: wanted.microseconds)
        }
    }

    /// Queues a frame for a subscriber without blocking.
    /// - Returns: false when over the subscriber limit (unless `force`) or the connection is gone.
    func push(_ bytes: [UInt8], force: Bool = false) -> Bool {
        replies.mutex.locked {
            if broken || dropped || readerDone { return false }
            if !force && queuedBytes + bytes.count > server.options.subscriberBytesMax { return false }
            slots[assigned] = bytes
            assigned += 1
            queuedBytes += bytes.count
            sendReadyLocked()
            return true
        }
    }

    /// With `replies` locked, after a reply was queued: when it is the next to go and no one is
    /// writing, this thread (usually the committer) sends what the socket takes at once, so an
    /// acknowledgement or a subscribed event does not wait for the writer thread to be scheduled
    /// on a busy machine. It never blocks: what the socket does not take is left to the writer.
    ///
    /// Waiters are woken only when they have something to do: the writer when a reply is left
    /// for it, a reader when room was made. (Waking the writer for every reply sent here cost a
    /// context switch per acknowledgement, on a machine whose cores the parsers already fill.)
    private func sendReadyLocked() {
        while !writing, !broken, let bytes = slots[sent] {
            writing = true
            slots[sent] = nil
            sent += 1
            replies.mutex.unlock()
            let n = socket.sendAvailable(bytes)
            replies.mutex.lock()
            writing = false
            if n < 0 {
                broken = true
                queuedBytes -= bytes.count
            } else if n < bytes.count {
                sent -= 1
                slots[sent] = Array(bytes[n...])
                queuedBytes -= n
                break
            } else {
                queuedBytes -= bytes.count
            }
        }
        if broken || readerDone || roomWaiters > 0 || (!writing && slots[sent] != nil) { replies.broadcast() }
    }

    /// Ends a subscription that cannot continue: an ERROR frame saying where to resume, then
    /// the connection closes.
    func dropSubscription(reason: String) {
        let already: Bool = replies.mutex.locked {
            if dropped { return true }
            let bytes = Frame(.error, id: 0, text: json(["error": reason])).encoded
            slots[assigned] = bytes
            assigned += 1
            queuedBytes += bytes.count
            dropped = true
            replies.broadcast()
            return false
        }
        if !already {
            server.logger("framed \(peer): \(reason)")
            socket.shutdownRead()
        }
    }

    /// - Returns: false to stop reading.
    private func handle(_ frame: Frame) -> Bool {
        let slot = reserve()
        if let credentials = server.options.credentials, gateway == nil, frame.type != .hello, frame.type != .ping {
            fill(slot, Frame(.error, id: frame.id, text: json(["error": "authentication required: send HELLO with this gateway's id and key first (\(credentials.gateways.count) gateways are configured)"])).encoded)
            server.logger("framed \(peer): refused: \(frame.type) before authenticating")
            server.update { $0.authenticationFailures += 1 }
            return false
        }
        switch frame.type {
        case .ping:
            fill(slot, Frame(.pong, id: frame.id, payload: frame.payload).encoded)
        case .hello:
            if let credentials = server.options.credentials {
                guard let (g, k) = parseHello(frame.payload, wrapped: false), credentials.check(gateway: g, key: k) else {
                    fill(slot, Frame(.error, id: frame.id, text: json(["error": "authentication failed"])).encoded)
                    server.logger("framed \(peer): authentication failed")
                    server.update { $0.authenticationFailures += 1 }
                    return false
                }
                gateway = g
            }
            var fields = ["server": "tokenledger", "protocol": "1", "head_seq": String(server.hub.head)]
            if let gateway { fields["gateway"] = gateway }
            fill(slot, Frame(.welcome, id: frame.id, text: json(fields)).encoded)
        case .batch:
            handleBatch(frame, slot: slot)
        case .binaryBatch:
            handleBinaryBatch(frame, slot: slot)
        case .rollback:
            handleRollback(frame, slot: slot)
        case .subscribe:
            let request: SubscribeRequest
            do { request = try SubscribeRequest(json: frame.payload) } catch {
                fill(slot, Frame(.error, id: frame.id, text: json(["error": "\(error)"])).encoded)
                return true
            }
            let head = server.hub.head
            let from = request.fromSeq ?? head + 1
            fill(slot, Frame(.subscribed, id: frame.id, text: "{\"from_seq\":\(from),\"head_seq\":\(head)}").encoded)
            subscribed = true
            if request.alerts {
                if let live = server.live { live.subscribe(self, frameID: frame.id, fromSeq: from) } else {
                    _ = push(Frame(.error, id: frame.id, text: json(["error": "alerts are off on this server"])).encoded, force: true)
                }
            }
            if request.events {
                return server.hub.catchUpAndJoin(self, frameID: frame.id, fromSeq: from, types: request.types, directory: server.log.directory)
            }
        default:
            fill(slot, Frame(.error, id: frame.id, text: json(["error": "frame type \(frame.type) is not a request"])).encoded)
            return false
        }
        return true
    }

    /// A batch the client encoded itself (the canonical block payload of FORMAT.md): decoded in
    /// full and held to the same rules as NDJSON input before it is stored as given.
    private func handleBinaryBatch(_ frame: Frame, slot: Int) {
        let receivedNs = monotonicNanoseconds()
        var decoded: DecodedBlock?
        var block: EncodedBlock?
        var failure: String?
        do { block = try EncodedBlock(validatedPayload: frame.payload, decoded: &decoded) } catch { failure = "\(error)" }
        if let d = decoded, failure == nil { failure = BinaryBatchRules.check(d, limits: server.options.limits, batchEventsMax: server.options.batchEventsMax, gateway: gateway) }
        guard failure == nil, let block, let d = decoded else {
            server.update { $0.batchesRefused += 1 }
            fill(slot, Frame(.nack, id: frame.id, text: json(["batch": String(frame.id), "error": failure ?? "not a batch"])).encoded)
            return
        }
        submit([block], events: [.block(d)], frameID: frame.id, slot: slot, receivedNs: receivedNs)
    }

    private func submit(_ blocks: [EncodedBlock], events: [EventBatch], frameID id: UInt64, slot: Int, receivedNs: UInt64 = 0) {
        let count = events.reduce(0) { $0 + $1.count }
        let accepted = server.committer.submit(.init(blocks: blocks, eventCount: count, events: events, receivedNs: receivedNs, peer: peer, frameID: id, completion: { [self] result in
            switch result {
            case let .success(c):
                server.update { $0.batchesAcknowledged += 1 }
                fill(slot, Frame(.ack, id: id, payload: Frame.ackPayload(firstSeq: c.firstSeq, lastSeq: c.lastSeq, count: c.lastSeq - c.firstSeq + 1,
                                                                          chainHash: c.chainHash.array)).encoded)
            case let .failure(e):
                fill(slot, Frame(.error, id: id, text: json(["error": "not committed: \(e)"])).encoded)
            }
        }))
        if !accepted {
            fill(slot, Frame(.error, id: id, text: json(["error": "the server is stopping or the ledger failed; batch not committed"])).encoded)
        }
    }

    private func handleBatch(_ frame: Frame, slot: Int) {
        let receivedNs = monotonicNanoseconds()
        // Each event goes into its block as soon as it is parsed: no array of events is held.
        var builder = BlockBuilder(blockEventsMax: server.options.blockEventsMax)
        var failure: String?
        frame.payload.withUnsafeBytes { raw in
            var lineNumber = 0
            var start = 0
            while start < raw.count {
                // memchr: a generic search over a raw-buffer slice was most of a batch's cost.
                let end = memchr(raw.baseAddress! + start, 0x0A, raw.count - start).map { UnsafeRawPointer($0) - raw.baseAddress! } ?? raw.count
                lineNumber += 1
                var line = UnsafeRawBufferPointer(rebasing: raw[start..<end])
                if line.last == 0x0D { line = UnsafeRawBufferPointer(rebasing: line.dropLast()) }
                start = end + 1
                if line.isEmpty || (line.first! <= 0x20 && line.allSatisfy({ $0 == 0x20 || $0 == 0x09 })) { continue }
                if line.count > server.options.limits.lineBytesMax {
                    failure = "line \(lineNumber): \(line.count) bytes, over the \(server.options.limits.lineBytesMax)-byte limit"
                    return
                }
                do { try builder.append(line: line, lineNumber: lineNumber, decoder: decoder, gateway: gateway) } catch {
                    failure = "\(error)"
                    return
                }
                if builder.eventCount > server.options.batchEventsMax {
                    failure = "more than \(server.options.batchEventsMax) events in one batch"
                    return
                }
            }
        }
        if failure == nil && builder.eventCount == 0 { failure = "the batch holds no events" }
        var blocks = [EncodedBlock](), decoded = [DecodedBlock]()
        if failure == nil {
            do { (blocks, decoded) = try builder.finish() } catch { failure = "\(error)" }
        }
        if let failure {
            server.update { $0.batchesRefused += 1 }
            fill(slot, Frame(.nack, id: frame.id, text: json(["batch": String(frame.id), "error": failure])).encoded)
            return
        }
        submit(blocks, events: decoded.map { .block($0) }, frameID: frame.id, slot: slot, receivedNs: receivedNs)
    }

    /// An admin rollback (PROTOCOL.md "Admin: rollback"), run between commits so the plan and
    /// its revocations see exactly the ledger they are appended to.
    private func handleRollback(_ frame: Frame, slot: Int) {
        func refuse(_ message: String) { fill(slot, Frame(.error, id: frame.id, text: json(["error": message])).encoded) }
        guard let digest = server.options.adminKeyDigest else { return refuse("admin requests are off: start serve with --admin-key-file") }
        guard let request = RollbackRequest(frame.payload) else {
            return refuse("ROLLBACK payload must be {\"to\":MARKER,\"policy\":\"revoke\"|\"keep\",\"dry_run\":BOOL,\"admin_key\":KEY[,\"id\":ID]}")
        }
        guard constantTimeEqual(SHA256.hash(Array(request.adminKey.utf8)), digest) else {
            server.logger("framed \(peer): rollback refused: wrong admin key")
            server.update { $0.authenticationFailures += 1 }
            return refuse("admin key required: unauthorized; nothing changed")
        }
        let accepted = server.rollback(to: request.to, policy: request.policy, dryRun: request.dryRun, markerID: request.id) { [self] result in
            switch result {
            case let .success(text): fill(slot, Frame(.rollbackResult, id: frame.id, text: text).encoded)
            case let .failure(e): fill(slot, Frame(.error, id: frame.id, text: json(["error": e.message])).encoded)
            }
        }
        if !accepted { refuse("the server is stopping; nothing changed") }
    }

    // MARK: Ordered replies

    private func reserve() -> Int {
        replies.mutex.locked {
            defer { assigned += 1 }
            return assigned
        }
    }

    private func fill(_ slot: Int, _ bytes: [UInt8]) {
        replies.mutex.locked {
            slots[slot] = bytes
            queuedBytes += bytes.count
            sendReadyLocked()
        }
    }

    func waitForReplyRoom() {
        replies.mutex.locked {
            roomWaiters += 1
            defer { roomWaiters -= 1 }
            while queuedBytes > server.options.replyBytesMax && !broken && !dropped { replies.wait() }
        }
    }

    private func writeLoop() {
        replies.mutex.lock()
        while true {
            if !writing, let bytes = slots[sent] {
                slots[sent] = nil
                sent += 1
                writing = true
                let failed = broken
                replies.mutex.unlock()
                var ok = true
                if !failed {
                    do { try socket.write(bytes) } catch { ok = false }
                }
                replies.mutex.lock()
                writing = false
                if !ok { broken = true }
                queuedBytes -= bytes.count
                replies.broadcast()
                continue
            }
            if readerDone && sent == assigned && !writing { break }
            replies.wait()
        }
        writerDone = true
        replies.broadcast()
        replies.mutex.unlock()
    }
}

/// The EEVDF slice a framed reader asks for, by the size of the frames its connection sends.
enum ReaderSlice: Equatable {
    /// Frames of at most 64 KiB: revocations, small gateway batches. 0.1 ms.
    case short
    /// Larger batches: 8 ms, longer than a 1000-event batch's parse under contention.
    case bulk

    init(payloadBytes: Int) { self = payloadBytes <= 64 << 10 ? .short : .bulk }

    var microseconds: UInt64 { self == .short ? 100 : 8_000 }
}

extension LedgerServer {
    /// An admin rollback (PROTOCOL.md "Admin: rollback"), run between commits so the plan and
    /// its revocations see exactly the ledger they are appended to. The framed ROLLBACK and
    /// HTTP `POST /v1/rollback` both come here, after checking the admin key. `reply` gets the
    /// ROLLBACK_RESULT JSON or the error, on the committer thread.
    /// - Returns: false when the server is stopping (`reply` is not called; nothing changed).
    func rollback(to: String, policy: RollbackPolicy, dryRun: Bool, markerID: String?,
                  reply: @escaping (Result<String, RollbackError>) -> Void) -> Bool {
        guard let live else {
            reply(.failure(RollbackError(message: "rollback needs the state at the head; the server runs with --no-alerts")))
            return true
        }
        return committer.exclusive { [self] committer in
            let head = log.lastSeq
            let outcome: Result<(RollbackPlan, [Event]), RollbackError> = live.withProjection(upTo: head) { p in
                Result { () throws(RollbackError) in
                    let r = try p.prepareRollback(to: to, policy: policy, dryRun: dryRun, markerID: markerID,
                                                  nowMs: SystemClock().nowMs(), ledgerDirectory: log.directory)
                    return (r.plan, r.events)
                }
            }
            switch outcome {
            case let .failure(e):
                reply(.failure(e))
            case let .success((plan, events)) where events.isEmpty:
                reply(.success("{\"dry_run\":true,\"plan\":\(plan.json)}"))
            case let .success((plan, events)):
                let appended: Result<Committed, StorageError>
                do { appended = committer.appendNow(events, blocks: try EncodedBlock.blocks(events, blockEventsMax: options.blockEventsMax)) } catch { appended = .failure((error as? StorageError) ?? .failed("\(error)")) }
                switch appended {
                case let .success(c):
                    logger("rollback to \(to) applied: seq \(c.firstSeq)-\(c.lastSeq), \(plan.revoke.count) tokens revoked")
                    reply(.success("{\"dry_run\":false,\"rollback_marker\":\"\(events[0].marker ?? "")\",\"first_seq\":\(c.firstSeq),\"last_seq\":\(c.lastSeq),\"chain_hash\":\"\(c.chainHash.hex)\",\"revoked\":\(plan.revoke.count),\"plan\":\(plan.json)}"))
                case let .failure(e):
                    reply(.failure(RollbackError(message: "appending the rollback failed: \(e)")))
                }
            }
        }
    }
}

func json(_ fields: [String: String]) -> String {
    var w = JSONObjectWriter()
    for (k, v) in fields.sorted(by: { $0.key < $1.key }) { w.string(k, v) }
    return w.finish()
}

struct RollbackRequest {
    var to: String
    var policy: RollbackPolicy
    var dryRun: Bool
    var adminKey: String
    var id: String?

    init?(_ payload: [UInt8]) {
        guard let o = parseJSONObject(payload), let to = o["to"] as? String, let key = o["admin_key"] as? String else { return nil }
        guard let policy = RollbackPolicy(rawValue: (o["policy"] as? String) ?? "revoke") else { return nil }
        self.to = to; self.policy = policy; self.adminKey = key
        self.dryRun = (o["dry_run"] as? Bool) ?? true
        self.id = o["id"] as? String
    }
}

func constantTimeEqual(_ a: Digest32, _ b: Digest32) -> Bool {
    var d: UInt8 = 0
    for (x, y) in zip(a.array, b.array) { d |= x ^ y }
    return d == 0
}

/// What a client-encoded batch must satisfy beyond decoding: the same promises NDJSON input
/// gets from the decoder (no raw bearer token, valid UTF-8, field limits) and from the server
/// (markers end blocks, an authenticated gateway speaks for itself).
enum BinaryBatchRules {
    static func check(_ b: DecodedBlock, limits: EventLimits, batchEventsMax: Int, gateway: String?) -> String? {
        guard b.count <= batchEventsMax else { return "more than \(batchEventsMax) events in one batch" }
        for i in 0..<b.count {
            for t in [StringField.token, .parent] {
                if let s = b.string(i, t) {
                    var copy = s
                    let raw = copy.withUTF8 { TokenFingerprint.needsFingerprint(UnsafeRawBufferPointer($0), tokenBytesMax: limits.tokenBytesMax) }
                    if raw { return "event \(i + 1): field \"\(t == .token ? "token" : "parent")\" holds a raw bearer token or over \(limits.tokenBytesMax) bytes; send its sha256 fingerprint" }
                }
            }
            if b.types[i].isMarker && i != b.count - 1 { return "event \(i + 1): a marker must be the last event of a binary batch" }
            let pairs = Int(b.attrStart[i + 1] - b.attrStart[i]) / 2
            if pairs > limits.attrsCountMax { return "event \(i + 1): \(pairs) attrs, over the limit of \(limits.attrsCountMax)" }
            if let gateway, b.string(i, .gateway) != gateway {
                return "event \(i + 1): field \"gateway\" must be the authenticated gateway \"\(gateway)\" in a binary batch"
            }
        }
        for (n, s) in b.strings.enumerated() {
            if s.utf8.count > limits.fieldBytesMax { return "string \(n) of the batch is \(s.utf8.count) bytes, over the \(limits.fieldBytesMax)-byte limit" }
            if s.unicodeScalars.contains("\u{FFFD}") { return "string \(n) of the batch is not valid UTF-8 (or holds U+FFFD)" }
        }
        return nil
    }
}
