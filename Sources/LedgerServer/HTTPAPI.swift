// The HTTP read side of `serve --http` (PROTOCOL.md "HTTP API"): health, Prometheus metrics,
// token state and RFC 7662 introspection, forensic event queries, markers, state at a point,
// alerts, signed digests, admin rollback and a canary verdict for deployment tools.
//
// Where answers come from, and why:
// - Token lookups, introspection, markers, alerts, metrics and the head summary read the
//   server's own projection at the head (`LiveProjection`) under its lock, after it has applied
//   everything committed when the request arrived (a gateway that was just acknowledged an
//   `issued` event finds the token). Work under the lock is a hash probe or a copy; JSON is
//   written after the lock is released.
// - Events and the canary window are read from the segment files with handles of this request's
//   own (`BlockFileReader`), through the block list the committer publishes
//   (`SubscriptionHub`): only committed blocks, never the block being written.
// - State at a past point replays from snapshots with a `ProjectionEngine` over a read-only
//   `SegmentLog` of its own, used only once the server has published everything that log shows.
//   Such questions (and digests, which verify the chain) run one at a time: each can hold a
//   whole projection in memory.
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerProjection
import LedgerStorage

/// `serve --http`: where, and what the HTTP side needs beyond the TCP server's options.
public struct HTTPAPIOptions: Sendable {
    public var endpoint: Endpoint
    public var server = HTTPServerOptions()
    /// Signs `/v1/digest` answers (`serve --digest-key`); without it that route answers 404.
    public var digestKey: DigestKey?
    /// Filled by the file system the ledger was opened with (`TimedFileSystem`).
    public var fsyncLatency: LatencyHistogram?
    /// Most events one `/v1/events` page holds, and most bytes (a page ends early past it).
    public var eventsLimitMax = 10_000
    public var eventsPageBytesMax = 4 << 20

    public init(endpoint: Endpoint) { self.endpoint = endpoint }
}

/// An error answer: the status and a message naming the parameter and what was wrong.
struct APIError: Error {
    let status: Int
    let message: String
    var headers: [(String, String)] = []
    init(_ status: Int, _ message: String, headers: [(String, String)] = []) {
        self.status = status; self.message = message; self.headers = headers
    }
}

extension LedgerServer {
    /// Starts the HTTP side on `options.http` (called by `start()`).
    func startHTTP(_ options: HTTPAPIOptions) throws(SocketError) -> HTTPServer {
        let api = HTTPAPI(server: self, options: options)
        let http = HTTPServer(options: options.server) { api.handle($0) }
        do { try http.start(options.endpoint) } catch { throw SocketError(message: error.description) }
        return http
    }
}

final class HTTPAPI: @unchecked Sendable {
    unowned let server: LedgerServer
    let options: HTTPAPIOptions
    /// One state-at-a-point replay or chain verification at a time.
    private let heavy = Mutex()
    private var digestCache: (seq: UInt64, json: String)?
    /// `/v1/events?token=`: one token index for the data directory, told about committed blocks
    /// by the HTTP threads themselves (`feedTokenIndex`), never by the committer.
    private let tokenIndex: TokenIndex
    private let tokenIndexFeed = Mutex()
    private var tokenIndexBlocks = 0

    init(server: LedgerServer, options: HTTPAPIOptions) {
        self.server = server
        self.options = options
        self.tokenIndex = TokenIndex(directory: server.log.directory)
        // Load or build it now, in the background, rather than in the first token query.
        DispatchQueue.global(qos: .utility).async { [weak self] in
            guard let self else { return }
            self.feedTokenIndex()
            try? self.tokenIndex.refresh()
        }
    }

    /// Hands the token index the blocks committed since it was last told (the hub's list only grows).
    private func feedTokenIndex() {
        tokenIndexFeed.locked {
            let new = server.hub.committedBlocks(fromIndex: tokenIndexBlocks)
            guard !new.isEmpty else { return }
            tokenIndex.append(blocks: new)
            tokenIndexBlocks += new.count
        }
    }

    static let getMethods = ["GET", "HEAD"]

    func handle(_ r: HTTPRequest) -> HTTPResponse {
        do throws(APIError) {
            return try route(r)
        } catch {
            return .error(error.status, error.message, headers: error.headers)
        }
    }

    private func route(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        func allow(_ methods: [String]) throws(APIError) {
            guard methods.contains(r.method) else {
                throw APIError(405, "\(r.method) is not allowed on \(r.path); use \(methods.filter { $0 != "HEAD" }.joined(separator: " or "))",
                               headers: [("Allow", methods.joined(separator: ", "))])
            }
        }
        let tokensPrefix = "/v1/tokens/"
        switch r.path {
        case "/healthz": try allow(Self.getMethods); return try healthz(r)
        case "/metrics": try allow(Self.getMethods); return try metrics(r)
        case "/v1/introspect": try allow(["POST"]); return try introspect(r)
        case "/v1/events": try allow(Self.getMethods); return try events(r)
        case "/v1/markers": try allow(Self.getMethods); return try markers(r)
        case "/v1/state": try allow(Self.getMethods); return try state(r)
        case "/v1/alerts": try allow(Self.getMethods); return try alerts(r)
        case "/v1/digest": try allow(Self.getMethods); return try digest(r)
        case "/v1/rollback": try allow(["POST"]); return try rollback(r)
        case "/v1/analysis/canary": try allow(["GET", "HEAD", "POST"]); return try canary(r)
        case "/v1/tokens", "/v1/tokens/":
            try allow(Self.getMethods)
            throw APIError(404, "give the token id in the path: /v1/tokens/{id}")
        default:
            if r.path.hasPrefix(tokensPrefix) {
                try allow(Self.getMethods)
                return try token(String(r.path.dropFirst(tokensPrefix.count)), r)
            }
            throw APIError(404, "no route \(r.path) (see PROTOCOL.md \"HTTP API\" for the endpoints)")
        }
    }

    // MARK: Shared pieces

    private func oneAtATime<T>(_ body: () throws(APIError) -> T) throws(APIError) -> T {
        heavy.lock()
        defer { heavy.unlock() }
        return try body()
    }

    private func live() throws(APIError) -> LiveProjection {
        guard let live = server.live else {
            throw APIError(503, "the server keeps no state at the head (started with --no-alerts, or building it failed)")
        }
        return live
    }

    /// The clock for live answers (PRODUCT.md): the later of the wall clock and the head's.
    static func liveClock(_ p: Projection) -> Int64 { max(SystemClock().nowMs(), p.headClock) }

    /// Runs `body` on the state at the head once it has applied everything committed so far.
    private func atHead<T>(_ body: (Projection) -> T) throws(APIError) -> T {
        let live = try live()
        return live.withProjection(upTo: server.hub.head, body)
    }

    static func json(_ w: JSONObjectWriter, status: Int = 200, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, json: w.finish() + "\n", headers: headers)
    }

    // MARK: Health and metrics

    private func healthz(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        let head = server.hub.headState
        let failure = server.committer.failed
        var w = JSONObjectWriter()
        w.string("status", failure == nil ? "ok" : "failed")
        w.int("head_seq", Int64(head.seq))
        w.string("chain_hash", head.chainHash.hex)
        if let live = server.live { w.int("projection_seq", Int64(live.lastSeq)) }
        if let failure { w.string("error", "the ledger refuses appends: \(failure)") }
        return Self.json(w, status: failure == nil ? 200 : 503)
    }

    private func metrics(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        let head = server.hub.headState
        let stats = server.statistics
        let extra: [(String, String, String, Double)] = [
            ("tokenledger_ledger_events", "gauge", "Events in the whole ledger (its committed head sequence number).", Double(head.seq)),
            ("tokenledger_ledger_bytes", "gauge", "Bytes of block headers and compressed payloads in the ledger's segments.", Double(head.storedBytes)),
            ("tokenledger_ledger_segments", "gauge", "Segment files in the ledger.", Double(head.segments)),
            ("tokenledger_server_connections", "gauge", "TCP ingest connections open.", Double(stats.connectionsOpen)),
            ("tokenledger_commit_queue_events", "gauge", "Events waiting for the group committer.", Double(server.committer.queueDepth)),
            ("tokenledger_projection_queue_events", "gauge", "Events committed and not yet applied to the state at the head (alerts, token answers).", Double(server.live?.backlog ?? 0)),
            ("tokenledger_ingest_lines_rejected_total", "counter", "Line-mode lines rejected since the server started.", Double(stats.linesRejected)),
            ("tokenledger_ingest_batches_refused_total", "counter", "Framed batches refused (NACK) since the server started.", Double(stats.batchesRefused)),
            ("tokenledger_authentication_failures_total", "counter", "Gateway or admin authentications refused since the server started.", Double(stats.authenticationFailures)),
            ("tokenledger_segments_prepared_total", "counter", "Next segments written ahead with zeros and synced since the server started.", Double(server.log.preparations.prepared)),
            ("tokenledger_segment_preparations_failed_total", "counter", "Next-segment preparations that failed or were not started for want of disk space (the server log says why).", Double(server.log.preparations.failed)),
        ]
        // The token walk goes a page of records at a time, each under the state's lock on its
        // own, so lookups and the projector get in between (TokenMetricsWalk).
        var walk = try atHead { p in p.tokenMetricsWalk(clock: Self.liveClock(p)) }
        let live = try live()
        while live.withProjection(upTo: 0, { p in p.continueWalk(&walk) }) {}
        var text = live.withProjection(upTo: 0) { p in p.prometheusText(clock: walk.clock, extra: extra, walk: walk) }
        text += server.committer.ingestLatency.prometheus(
            name: "tokenledger_ingest_duration_seconds",
            help: "Time from a batch being queued for commit to its being durable and published, per submission.")
        if let fsync = options.fsyncLatency {
            text += fsync.prometheus(name: "tokenledger_fsync_duration_seconds", help: "Duration of each fsync of a segment file or the ledger directory.")
        }
        return HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array(text.utf8))
    }

    // MARK: Tokens

    private func token(_ rawID: String, _ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        guard !rawID.isEmpty else { throw APIError(404, "give the token id in the path: /v1/tokens/{id}") }
        // A raw JWT in the path finds its token as ingest stored it; only the fingerprint is echoed.
        let id = TokenFingerprint.normalize(rawID)
        let (view, clock) = try atHead { p -> (TokenView?, Int64) in
            let c = Self.liveClock(p)
            return (p.token(id, clock: c), c)
        }
        guard let view else { throw APIError(404, "token \"\(id)\" is not on the ledger") }
        var body = Array(view.json.utf8)
        body.removeLast()
        body.append(contentsOf: ",\"clock\":\(clock)}\n".utf8)
        return HTTPResponse(status: 200, body: body)
    }

    /// RFC 7662: `{"active": false}` for anything not active (unknown, expired, revoked,
    /// superseded), so a caller learns nothing more about tokens it should not use.
    private func introspect(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        let type = r.header("Content-Type") ?? ""
        guard type.lowercased().hasPrefix("application/x-www-form-urlencoded") else {
            throw APIError(415, "the body must be application/x-www-form-urlencoded with token=… (RFC 7662), got Content-Type \"\(type.prefix(100))\"")
        }
        var token: String?
        for (name, value) in FormEncoding.decode(r.body) where name == "token" {
            guard token == nil else { throw APIError(400, "parameter token is given more than once") }
            token = value
        }
        // token_type_hint and other parameters are allowed and ignored (RFC 7662 section 2.1).
        guard let raw = token, !raw.isEmpty else { throw APIError(400, "parameter token is missing or empty (body: token=…)") }
        let id = TokenFingerprint.normalize(raw)
        let view = try atHead { p in p.token(id, clock: Self.liveClock(p)) }
        var w = JSONObjectWriter()
        guard let view, view.isActive else {
            w.bool("active", false)
            return Self.json(w)
        }
        w.bool("active", true)
        w.string("sub", view.sub)
        w.string("client_id", view.clientID)
        // NumericDate: seconds.
        w.int("exp", view.exp.map { Self.seconds($0) })
        w.int("iat", view.issuedAt.map { Self.seconds($0) })
        // RFC 7662 `scope`: the creating event's, as given (a space-separated list).
        w.string("scope", view.scope)
        w.string("token_type", view.tokenType)
        return Self.json(w)
    }

    static func seconds(_ ms: Int64) -> Int64 { ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000) }

    // MARK: Events

    private func events(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        let p = try HTTPParameters(r, allowed: ["token", "sub", "type", "release", "gateway", "since", "until", "from_seq", "limit"], repeatable: ["type"])
        var f = EventFilter()
        f.token = try p.string("token").map { TokenFingerprint.normalize($0) }
        f.sub = try p.string("sub")
        f.release = try p.string("release")
        f.gateway = try p.string("gateway")
        for list in p.all("type") {
            for name in list.split(separator: ",", omittingEmptySubsequences: false) {
                guard let t = EventType(name: name) else {
                    throw APIError(400, "parameter type: unknown event type \"\(name.prefix(64))\" (one of \(EventType.allCases.map(\.name).joined(separator: ", ")))")
                }
                f.types.insert(t)
            }
        }
        f.since = try p.time("since")
        f.until = try p.time("until")
        if let s = f.since, let u = f.until, s > u { throw APIError(400, "parameter since (\(s)) is after until (\(u))") }
        let from = try p.uint("from_seq", min: 1) ?? 1
        f.fromSeq = from
        let limit = Int(try p.uint("limit", min: 1, max: UInt64(options.eventsLimitMax)) ?? 1000)

        // The head is fixed now: a page is a consistent read even while events arrive.
        let head = server.hub.head
        var out = [UInt8]()
        var emitted = 0
        var next: UInt64?
        let reader = BlockFileReader(directory: server.log.directory)
        var failure: APIError?
        let visit = { [options] (location: BlockLocation) -> Bool in
            guard let block = reader.read(location) else {
                failure = APIError(500, "cannot read seq \(location.header.firstSeq)-\(location.header.lastSeq) from the segment files")
                return false
            }
            let writer = BlockNDJSONWriter(block)
            for i in f.matchingIndices(block, firstSeq: location.header.firstSeq) {
                let seq = location.header.firstSeq + UInt64(i)
                if emitted == limit || out.count >= options.eventsPageBytesMax {
                    next = seq
                    return false
                }
                writer.append(i, seq: seq, receivedAt: location.header.receivedAt, to: &out)
                emitted += 1
            }
            return true
        }
        if let token = f.token {
            try eventsNaming(token: token, filter: f, from: from, head: head, limit: limit, out: &out, emitted: &emitted, next: &next)
        } else {
            committedBlocks(fromSeq: from, toSeq: head, since: f.since, until: f.until, visit)
        }
        if let failure { throw failure }
        var headers = [("X-Head-Seq", String(head)), ("X-Events", String(emitted))]
        if let next { headers.append(("X-Next-From-Seq", String(next))) }
        return HTTPResponse(status: 200, contentType: "application/x-ndjson", headers: headers, body: out)
    }

    /// Visits committed blocks in sequence order from the one holding `fromSeq` through `toSeq`,
    /// skipping those whose time range misses [since, until], until `visit` returns false.
    private func committedBlocks(fromSeq: UInt64, toSeq: UInt64, since: Int64?, until: Int64?, _ visit: (BlockLocation) -> Bool) {
        var next = fromSeq
        while next <= toSeq {
            let round = server.hub.committedBlocks(fromSeq: next, max: 256)
            if round.isEmpty { return }
            for location in round {
                if location.header.firstSeq > toSeq { return }
                next = location.header.lastSeq + 1
                if let since, location.header.maxTs < since { continue }
                if let until, location.header.minTs > until { continue }
                if !visit(location) { return }
            }
        }
    }

    /// The token lookup of `/v1/events?token=`, from the token index: the events naming `token`
    /// as `token` from `from` through `head`, the other filters applied to them, as the block scan
    /// would give them (same lines, same `next`).
    private func eventsNaming(token: String, filter f: EventFilter, from: UInt64, head: UInt64, limit: Int,
                              out: inout [UInt8], emitted: inout Int, next: inout UInt64?) throws(APIError) {
        feedTokenIndex()
        var cursor = from
        let chunk = max(limit + 1, 256)
        while cursor <= head {
            let page: [IndexedEvent]
            do { page = try tokenIndex.events(token: token, fromSeq: cursor, limit: chunk, asParent: false) } catch {
                throw APIError(500, "cannot read the events of token \"\(token.prefix(100))\": \(error)")
            }
            for found in page {
                guard found.seq <= head else { return }
                let e = found.event
                guard f.matches(e, seq: found.seq) else { continue }
                if emitted == limit || out.count >= options.eventsPageBytesMax {
                    next = found.seq
                    return
                }
                NDJSONEncoder.append(e, seq: SequenceNumber(found.seq), receivedAt: found.receivedAt, to: &out)
                emitted += 1
            }
            guard page.count == chunk, let last = page.last else { return }
            cursor = last.seq + 1
        }
    }

    // MARK: Markers, state, alerts

    private func markers(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        let list = try atHead { $0.markers }
        var out = "{\"markers\":["
        for (n, m) in list.enumerated() {
            let block = server.hub.committedBlocks(fromSeq: m.seq, max: 1).first
            var w = JSONObjectWriter()
            w.int("seq", Int64(m.seq)); w.int("ts", m.ts); w.string("time", Timestamp.formatRFC3339(epochMilliseconds: m.ts))
            w.string("type", m.type.name); w.string("marker", m.marker); w.string("release", m.release); w.string("track", m.track)
            w.int("weight", m.weight.map(Int64.init))
            w.string("chain_hash", block?.header.chainHash.hex); w.int("chain_seq", block.map { Int64($0.header.lastSeq) })
            out += (n > 0 ? "," : "") + w.finish()
        }
        out += "]}\n"
        return HTTPResponse(status: 200, json: out)
    }

    private func state(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        let p = try HTTPParameters(r, allowed: ["at_seq", "at_time", "at_marker"])
        let atSeq = try p.uint("at_seq", min: 0)
        let atTime = try p.time("at_time")
        let atMarker = try p.string("at_marker")
        guard [atSeq != nil, atTime != nil, atMarker != nil].filter({ $0 }).count <= 1 else {
            throw APIError(400, "give at most one of at_seq, at_time, at_marker")
        }
        if atSeq == nil && atTime == nil && atMarker == nil {
            // The head, with the head's clock: the same object as `tokenledger state --summary`.
            let summary = try atHead { $0.summary(clock: $0.headClock) }
            return HTTPResponse(status: 200, json: summary.json + "\n")
        }
        var point = StatePoint.head
        var clock: Int64?
        if let atSeq {
            let head = server.hub.head
            guard atSeq <= head else { throw APIError(400, "parameter at_seq: \(atSeq) is past the ledger's head (seq \(head))") }
            point = .seq(atSeq)
        } else if let atTime {
            point = .time(atTime)
        } else if let atMarker {
            // The first marker with the id (ARCHITECTURE.md rule 10), as committed; its state is
            // the state at its seq with its ts as the clock.
            guard let m = try atHead({ $0.marker(named: atMarker) }) else {
                throw APIError(404, "parameter at_marker: no marker \"\(atMarker.prefix(200))\" on the ledger")
            }
            point = .seq(m.seq)
            clock = m.ts
        }
        let summary = try oneAtATime { () throws(APIError) -> StateSummary in
            let result = try stateAt(point)
            return result.projection.summary(clock: clock ?? result.clock)
        }
        return HTTPResponse(status: 200, json: summary.json + "\n")
    }

    /// The state at `point` from the snapshots and the segment files; call under `heavy`.
    private func stateAt(_ point: StatePoint) throws(APIError) -> StateResult {
        let directory = server.log.directory
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true)) } catch {
            throw APIError(500, "cannot open the ledger for reading: \(error)")
        }
        defer { try? log.close() }
        // The files may already hold a block the committer wrote but has not yet made durable
        // and published; answer only once everything this view holds is committed.
        let deadline = monotonicNanoseconds() + 2_000_000_000
        while server.hub.head < log.lastSeq {
            guard monotonicNanoseconds() < deadline else {
                throw APIError(503, "the ledger's last block (through seq \(log.lastSeq)) is not committed yet; try again")
            }
            usleep(1000)
        }
        let engine = ProjectionEngine(log: log, store: SnapshotStore(dataDirectory: directory))
        do {
            let result = try engine.state(at: point)
            for n in result.notes { server.logger("http: state at \(point): note: \(n)") }
            return result
        } catch {
            throw APIError(400, "\(error)")
        }
    }

    private func alerts(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        let p = try HTTPParameters(r, allowed: ["from_seq", "limit"])
        let from = try p.uint("from_seq", min: 1) ?? 1
        let limit = Int(try p.uint("limit", min: 1, max: UInt64(options.eventsLimitMax)) ?? 1000)
        let (list, head) = try atHead { p -> ([Anomaly], UInt64) in
            // Windows that widen, so a long quiet stretch costs a few binary searches and a
            // page never copies every anomaly on the ledger.
            var out = [Anomaly]()
            var lo = from
            var width: UInt64 = 1 << 16
            while lo <= p.lastSeq && out.count <= limit {
                let hi = p.lastSeq - lo < width ? p.lastSeq : lo + width - 1
                out += p.anomalies(seq: lo...hi)
                if hi == p.lastSeq { break }
                lo = hi + 1
                width = width < (1 << 40) ? width * 2 : width
            }
            return (out, p.lastSeq)
        }
        var page = list[...]
        var next: UInt64?
        if list.count > limit {
            // Pages end between sequence numbers: one event can raise two anomalies.
            let cut = list[limit].seq
            page = list.prefix(while: { $0.seq < cut })
            if page.isEmpty { page = list.prefix(limit) }
            next = page.last!.seq == cut ? cut + 1 : cut
        }
        var out = [UInt8]()
        for a in page {
            out.append(contentsOf: a.json.utf8)
            out.append(0x0A)
        }
        var headers = [("X-Head-Seq", String(head)), ("X-Events", String(page.count))]
        if let next { headers.append(("X-Next-From-Seq", String(next))) }
        return HTTPResponse(status: 200, contentType: "application/x-ndjson", headers: headers, body: out)
    }

    // MARK: Digest

    private func digest(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        guard let key = options.digestKey else {
            throw APIError(404, "digests are off: start serve with --digest-key FILE (the key of `tokenledger digest`)")
        }
        let head = server.hub.headState
        let json = try oneAtATime { () throws(APIError) -> String in
            if let c = digestCache, c.seq == head.seq { return c.json }
            // As `tokenledger digest`: the chain is verified before it is signed, up to the
            // committed head (the files may hold a block being written past it).
            var verifier = Verifier(directory: server.log.directory)
            verifier.stopAtSeq = head.seq
            let report: VerifyReport
            do { report = try verifier.run() } catch { throw APIError(500, "cannot verify the ledger: \(error)") }
            if let problem = report.problem { throw APIError(500, "refusing to sign a ledger that does not verify: \(problem)") }
            guard report.lastSeq == head.seq, report.chainHash == head.chainHash else {
                throw APIError(500, "the verified chain ends at seq \(report.lastSeq) (\(report.chainHash.hex.prefix(16))…), the committed head is seq \(head.seq) (\(head.chainHash.hex.prefix(16))…)")
            }
            let d: ChainDigest
            do { d = try ChainDigest.sign(seq: report.lastSeq, chainHash: report.chainHash, key: key) } catch {
                throw APIError(500, "cannot sign: \(error)")
            }
            let json = "{\"format\":\"\(ChainDigest.format)\",\"seq\":\(d.seq),\"chain\":\"\(d.chainHash.hex)\",\"algorithm\":\"\(d.algorithm.rawValue)\",\"key_id\":\"\(d.keyID)\",\"signature\":\"\(Hex.encode(d.signature))\"}"
            digestCache = (head.seq, json)
            return json
        }
        return HTTPResponse(status: 200, json: json + "\n")
    }

    // MARK: Rollback

    private func rollback(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        _ = try HTTPParameters(r, allowed: [])
        guard let digest = server.options.adminKeyDigest else {
            throw APIError(403, "admin requests are off: start serve with --admin-key-file")
        }
        // The key is hashed and compared in constant time, never logged or kept.
        let authorization = r.header("Authorization") ?? ""
        let scheme = "bearer "
        let presented = authorization.lowercased().hasPrefix(scheme) ? String(authorization.dropFirst(scheme.count)) : nil
        guard let presented, constantTimeEqual(SHA256.hash(Array(presented.utf8)), digest) else {
            server.update { $0.authenticationFailures += 1 }
            server.logger("http: rollback refused: \(authorization.isEmpty ? "no" : "wrong") admin key")
            throw APIError(401, "admin key required (Authorization: Bearer KEY); nothing changed",
                           headers: [("WWW-Authenticate", "Bearer realm=\"tokenledger admin\"")])
        }
        guard let object = parseJSONObject(r.body) else {
            throw APIError(400, "the body must be a JSON object {\"to\":MARKER,\"policy\":\"revoke\"|\"keep\",\"dry_run\":BOOL[,\"id\":ID]}")
        }
        for key in object.keys where !["to", "policy", "dry_run", "id"].contains(key) {
            throw APIError(400, "field \"\(key.prefix(64))\" is not one of to, policy, dry_run, id")
        }
        guard let to = object["to"] as? String, !to.isEmpty else { throw APIError(400, "field \"to\" (the marker to roll back to) is missing or not a string") }
        var policy = RollbackPolicy.revoke
        if let v = object["policy"] {
            guard let s = v as? String, let p = RollbackPolicy(rawValue: s) else { throw APIError(400, "field \"policy\" must be \"revoke\" or \"keep\"") }
            policy = p
        }
        var dryRun = true
        if let v = object["dry_run"] {
            guard let b = v as? Bool else { throw APIError(400, "field \"dry_run\" must be true or false") }
            dryRun = b
        }
        var id: String?
        if let v = object["id"] {
            guard let s = v as? String, !s.isEmpty else { throw APIError(400, "field \"id\" must be a non-empty string") }
            id = s
        }
        guard try atHead({ $0.marker(named: to) }) != nil else { throw APIError(404, "field \"to\": no marker \"\(to.prefix(200))\" on the ledger; nothing changed") }

        let done = Condition()
        nonisolated(unsafe) var outcome: Result<String, RollbackError>?
        let accepted = server.rollback(to: to, policy: policy, dryRun: dryRun, markerID: id) { result in
            done.mutex.locked {
                outcome = result
                done.broadcast()
            }
        }
        guard accepted else { throw APIError(503, "the server is stopping; nothing changed") }
        let result = done.mutex.locked { () -> Result<String, RollbackError> in
            while outcome == nil { done.wait() }
            return outcome!
        }
        switch result {
        case let .success(json): return HTTPResponse(status: 200, json: json + "\n")
        case let .failure(e): throw APIError(409, e.message)
        }
    }

    // MARK: Canary analysis

    struct ReleaseWindow {
        var validated: UInt64 = 0
        var rejected: UInt64 = 0
        var anomalies: UInt64 = 0
        var samples: UInt64 { validated + rejected }
        var rejectionRate: Double { samples == 0 ? 0 : Double(rejected) / Double(samples) }
        var anomalyRate: Double { samples == 0 ? 0 : Double(anomalies) / Double(samples) }

        func json(_ release: String) -> String {
            var w = JSONObjectWriter()
            w.string("release", release)
            w.int("validated", Int64(validated)); w.int("rejected", Int64(rejected)); w.int("samples", Int64(samples))
            w.double("rejection_rate", rejectionRate)
            w.int("anomalies", Int64(anomalies)); w.double("anomaly_rate", anomalyRate)
            return w.finish()
        }
    }

    /// How far (event time) before the window a block's newest event may be and still be
    /// read: events reach the ledger a little out of `ts` order.
    static let canaryDisorderMs: Int64 = 60_000

    private func canary(_ r: HTTPRequest) throws(APIError) -> HTTPResponse {
        let names: Set<String> = ["canary", "stable", "window_ms", "factor", "min_samples", "min_delta"]
        var p = try HTTPParameters(r, allowed: names)
        if r.method == "POST" {
            // A Flagger webhook: parameters may come as its `metadata` (strings).
            if !r.body.isEmpty {
                guard let object = parseJSONObject(r.body) else { throw APIError(400, "the POST body must be a JSON object (a Flagger webhook payload)") }
                if let meta = object["metadata"] {
                    guard let m = meta as? [String: Any] else { throw APIError(400, "field \"metadata\" must be an object of strings") }
                    for (k, v) in m.sorted(by: { $0.key < $1.key }) {
                        guard names.contains(k) else { throw APIError(400, "metadata \"\(k.prefix(64))\" is not one of \(names.sorted().joined(separator: ", "))") }
                        guard let s = v as? String else { throw APIError(400, "metadata \"\(k)\" must be a string") }
                        guard p.all(k).isEmpty else { throw APIError(400, "parameter \(k) is given both in the query and in metadata") }
                        p.items.append((k, s))
                    }
                }
            }
        }
        guard let canary = try p.string("canary") else { throw APIError(400, "parameter canary (the canary's release) is missing") }
        guard let stable = try p.string("stable") else { throw APIError(400, "parameter stable (the stable release) is missing") }
        let window = Int64(try p.uint("window_ms", min: 1000, max: 86_400_000) ?? 300_000)
        let factor = try p.double("factor", min: 1, max: 1000) ?? 3
        let minSamples = try p.uint("min_samples", min: 1, max: 1 << 40) ?? 100
        let minDelta = try p.double("min_delta", min: 0, max: 1) ?? 0.01

        // The window ends at the head's clock (event time), like the metrics' rate window.
        let (clock, head) = try atHead { ($0.headClock, $0.lastSeq) }
        let start = clock - window
        var c = ReleaseWindow(), s = ReleaseWindow()
        var lowestSeq = head + 1
        let reader = BlockFileReader(directory: server.log.directory)
        // Newest blocks first, back until one ends well before the window.
        var before = head + 1
        scan: while before > 1 {
            let round = server.hub.committedBlocks(before: before, max: 64)
            if round.isEmpty { break }
            for location in round.reversed() {
                before = location.header.firstSeq
                if location.header.maxTs < start - Self.canaryDisorderMs { break scan }
                if location.header.maxTs < start || location.header.minTs > clock { continue }
                guard let block = reader.read(location) else {
                    throw APIError(500, "cannot read seq \(location.header.firstSeq)-\(location.header.lastSeq) from the segment files")
                }
                lowestSeq = location.header.firstSeq
                let cn = block.stringNumber(of: canary), sn = block.stringNumber(of: stable)
                if cn == nil && sn == nil { continue }
                for i in 0..<block.count where block.ts[i] >= start && block.ts[i] <= clock {
                    let t = block.types[i]
                    guard t == .validated || t == .rejected else { continue }
                    let rel = block.refs[i * StringField.count + StringField.release.rawValue]
                    // Both sides may name one release (a check of the check).
                    if rel == cn { if t == .validated { c.validated += 1 } else { c.rejected += 1 } }
                    if rel == sn { if t == .validated { s.validated += 1 } else { s.rejected += 1 } }
                }
            }
        }
        if lowestSeq <= head {
            let anomalies = try atHead { $0.anomalies(seq: lowestSeq...head) }
            for a in anomalies where a.ts >= start && a.ts <= clock {
                if a.release == canary { c.anomalies += 1 }
                if a.release == stable { s.anomalies += 1 }
            }
        }
        let verdict: String
        var reasons = [String]()
        if c.samples < minSamples || s.samples < minSamples {
            verdict = "inconclusive"
            reasons.append("too few samples: canary \(c.samples), stable \(s.samples), need \(minSamples) each")
        } else {
            if c.rejectionRate > s.rejectionRate * factor && c.rejectionRate - s.rejectionRate >= minDelta {
                reasons.append("canary rejection rate \(c.rejectionRate) is over \(factor) × stable's \(s.rejectionRate)")
            }
            if c.anomalyRate > s.anomalyRate * factor && c.anomalyRate - s.anomalyRate >= minDelta {
                reasons.append("canary anomaly rate \(c.anomalyRate) is over \(factor) × stable's \(s.anomalyRate)")
            }
            verdict = reasons.isEmpty ? "pass" : "fail"
        }
        var w = JSONObjectWriter()
        w.bool("ok", verdict == "pass")
        w.string("verdict", verdict)
        w.strings("reasons", reasons)
        w.raw("canary", c.json(canary))
        w.raw("stable", s.json(stable))
        w.int("window_ms", window); w.int("window_start", start); w.int("window_end", clock)
        w.double("factor", factor); w.int("min_samples", Int64(minSamples)); w.double("min_delta", minDelta)
        w.int("head_seq", Int64(head))
        // A Flagger webhook passes on 2xx only; Argo Rollouts reads the JSON of a 200.
        return Self.json(w, status: r.method == "POST" && verdict != "pass" ? 412 : 200)
    }
}

/// Query parameters checked against what a route takes: unknown or repeated names, empty
/// values and malformed numbers are 400s naming the parameter.
struct HTTPParameters {
    var items: [(name: String, value: String?)]
    let repeatable: Set<String>

    init(_ r: HTTPRequest, allowed: Set<String>, repeatable: Set<String> = []) throws(APIError) {
        items = r.query
        self.repeatable = repeatable
        var seen = Set<String>()
        for (name, _) in items {
            guard allowed.contains(name) else {
                let list = allowed.isEmpty ? "it takes no parameters" : "it takes " + allowed.sorted().joined(separator: ", ")
                throw APIError(400, "unknown parameter \"\(name.prefix(64))\" for \(r.path); \(list)")
            }
            guard seen.insert(name).inserted || repeatable.contains(name) else { throw APIError(400, "parameter \(name) is given more than once") }
        }
    }

    func all(_ name: String) -> [String] { items.filter { $0.name == name }.map { $0.value ?? "" } }

    func string(_ name: String) throws(APIError) -> String? {
        guard let item = items.first(where: { $0.name == name }) else { return nil }
        guard let v = item.value, !v.isEmpty else { throw APIError(400, "parameter \(name) is empty") }
        return v
    }

    func uint(_ name: String, min: UInt64, max: UInt64 = UInt64(Int64.max)) throws(APIError) -> UInt64? {
        guard let text = try string(name) else { return nil }
        guard let n = UInt64(text), n >= min, n <= max else {
            throw APIError(400, "parameter \(name) must be an integer from \(min) to \(max), got \"\(text.prefix(64))\"")
        }
        return n
    }

    func double(_ name: String, min: Double, max: Double) throws(APIError) -> Double? {
        guard let text = try string(name) else { return nil }
        guard let d = Double(text), d.isFinite, d >= min, d <= max else {
            throw APIError(400, "parameter \(name) must be a number from \(min) to \(max), got \"\(text.prefix(64))\"")
        }
        return d
    }

    /// Epoch milliseconds or RFC 3339 (as the CLI's --since/--until).
    func time(_ name: String) throws(APIError) -> Int64? {
        guard let text = try string(name) else { return nil }
        if let ms = Int64(text) { return ms }
        do { return try Timestamp.parse(text) } catch {
            throw APIError(400, "parameter \(name) must be epoch milliseconds or an RFC 3339 time: \(error)")
        }
    }
}

/// application/x-www-form-urlencoded (WHATWG URL "application/x-www-form-urlencoded parser"):
/// `&`-separated `name=value`, `+` is a space, `%HH` a byte; a bad escape stays as written.
enum FormEncoding {
    static func decode(_ body: [UInt8]) -> [(String, String)] {
        var out = [(String, String)]()
        for part in body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let eq = part.firstIndex(of: UInt8(ascii: "="))
            let name = unescape(part[..<(eq ?? part.endIndex)])
            let value = eq.map { unescape(part[part.index(after: $0)...]) } ?? ""
            out.append((name, value))
        }
        return out
    }

    static func unescape(_ bytes: ArraySlice<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x41...0x46: c - 0x41 + 10
            case 0x61...0x66: c - 0x61 + 10
            default: nil
            }
        }
        while i < bytes.endIndex {
            let c = bytes[i]
            if c == UInt8(ascii: "+") {
                out.append(0x20)
            } else if c == UInt8(ascii: "%"), i + 2 < bytes.endIndex, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 2
            } else {
                out.append(c)
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
