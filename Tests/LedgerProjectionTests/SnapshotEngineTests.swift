// Snapshots and the projection engine against real ledgers (SegmentLog in a temporary directory,
// small blocks, seeded random events with markers, some of them in the middle of a block).
//
// What must hold: a snapshot is a cache. Decoding one gives back the projection that was encoded,
// and it keeps reducing exactly like the original; state at any point is the same whether it
// starts from a snapshot or from the first event; a damaged, truncated, foreign or stale
// snapshot is named, skipped and never changes an answer; failing to write one never fails a
// question. `timeline(of:)` is checked against one full projection walked event by event.
//
// Every randomized test names its seed in each failure message; `SNAPSHOT_ENGINE_SEED=n` runs
// only seed n.
import Foundation
import XCTest
@testable import LedgerProjection
import LedgerCrypto
import LedgerModel
import LedgerStorage

// MARK: - Seeded randomness (own names: the module's other test files have their own)

/// SplitMix64.
fileprivate struct EngineRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed ^ 0x51A7_5EED_0000_0000 }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0..<n
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func between(_ lo: Int64, _ hi: Int64) -> Int64 { lo + Int64(next() % UInt64(hi - lo + 1)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

fileprivate enum EngineSeeds {
    static func seeds(_ defaults: [UInt64]) -> [UInt64] {
        if let text = ProcessInfo.processInfo.environment["SNAPSHOT_ENGINE_SEED"], let seed = UInt64(text) { return [seed] }
        return defaults
    }
}

// MARK: - Events

/// A seeded stream of token events and markers: refresh chains, duplicate issues, revocations of
/// tokens never issued, validations of unknown and revoked tokens, tokens issued already expired,
/// gateways whose clocks lag (ts going backwards), events without release, a rogue release no
/// marker names, and token ids of every shape the block string table packs or keeps raw.
fileprivate struct EngineEventSource {
    static let releases = ["v1.0", "v1.1", "v2.0-canary"]
    static let rogueRelease = "v9-rogue"
    static let tracks = ["stable", "canary", "blue", "green"]
    static let gateways = ["gw-a", "gw-b", "gw-c", "gw-canary"]
    static let clients = ["web", "mobile", "ci", "partner"]
    static let tokenTypes = ["access", "refresh", "api_key", "id"]
    static let scopes = ["openid profile orders:read", "orders:read", "admin:read admin:write", "partner:shipments"]
    static let reasons = ["expired", "revoked", "invalid_signature", "malformed", "logout", "compromised"]
    static let hexDigits = Array("0123456789abcdef")
    static let base64URL = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    let seed: UInt64
    var rng: EngineRandom
    var clock: Int64 = 1_780_000_000_000
    private(set) var tokens: [String] = []
    private var serial = 0
    private(set) var markerNumber = 0
    /// Marker ids are unique unless a test asks otherwise.
    var markerIDPrefix: String
    /// Markers per thousand events. Every marker gets a snapshot, which also restarts the count
    /// towards the next interval snapshot: few markers leave room for interval snapshots.
    let markerPerMille: Int

    init(seed: UInt64, markerPerMille: Int = 15) {
        self.seed = seed
        self.markerPerMille = markerPerMille
        rng = EngineRandom(seed: seed)
        markerIDPrefix = "m\(seed)-"
    }

    mutating func hex(_ n: Int) -> String { String((0..<n).map { _ in EngineEventSource.hexDigits[rng.below(16)] }) }
    mutating func b64(_ n: Int) -> String { String((0..<n).map { _ in EngineEventSource.base64URL[rng.below(64)] }) }

    mutating func newTokenID() -> String {
        serial += 1
        let id: String
        switch rng.below(8) {
        case 0, 1:
            let h = hex(32)
            let uuid = [h.prefix(8), h.dropFirst(8).prefix(4), h.dropFirst(12).prefix(4), h.dropFirst(16).prefix(4), h.dropFirst(20)].joined(separator: "-")
            id = rng.chance(70) ? uuid : uuid.uppercased()
        case 2: id = b64(21) + String(rng.pick(["A", "Q", "g", "w"]))          // canonical 16 bytes
        case 3: id = b64(21) + String(rng.pick(["B", "R", "h", "x", "_"]))     // same length, not canonical
        case 4: id = "sha256:" + hex(64)
        case 5: id = "tok-\(seed)-\(serial)"
        case 6: id = "jti-é-中-\(serial)"
        default: id = "k\(serial)"
        }
        tokens.append(id)
        return id
    }

    /// A token already named, mostly a recent one.
    mutating func knownTokenID() -> String {
        guard !tokens.isEmpty else { return newTokenID() }
        if rng.chance(80) { return tokens[tokens.count - 1 - rng.below(min(tokens.count, 300))] }
        return rng.pick(tokens)
    }

    mutating func next() -> Event {
        clock += rng.between(0, 250)
        var ts = clock
        if rng.chance(8) { ts -= rng.between(1, 4000) }
        let release: String? = rng.chance(7) ? nil : rng.chance(6) ? EngineEventSource.rogueRelease : rng.pick(EngineEventSource.releases)
        let track: String? = release == nil ? (rng.chance(50) ? rng.pick(EngineEventSource.tracks) : nil) : rng.pick(EngineEventSource.tracks)
        let gateway: String? = rng.chance(90) ? rng.pick(EngineEventSource.gateways) : nil
        func exp(_ at: Int64) -> Int64? { rng.chance(85) ? at + rng.between(-3000, 900_000) : nil }
        let roll = rng.below(1000)
        if roll < markerPerMille {
            markerNumber += 1
            let type: EventType = rng.pick([.deploy, .deploy, .promote, .rollback])
            return Event(type: type, ts: ts, gateway: rng.chance(30) ? gateway : nil, release: rng.pick(EngineEventSource.releases),
                         track: rng.pick(["stable", "canary"]), marker: markerIDPrefix + String(markerNumber),
                         weight: rng.chance(80) ? rng.below(101) : nil)
        }
        switch rng.below(1000) {
        case 0..<125:
            let id = rng.chance(88) ? newTokenID() : knownTokenID()
            return Event(type: .issued, ts: ts, token: id, tokenType: rng.pick(EngineEventSource.tokenTypes),
                         sub: rng.chance(90) ? "user-\(rng.below(400))" : nil, clientID: rng.chance(90) ? rng.pick(EngineEventSource.clients) : nil,
                         scope: rng.chance(85) ? rng.pick(EngineEventSource.scopes) : nil,
                         exp: exp(ts), gateway: gateway, release: release, track: track)
        case 125..<200:
            let parent = rng.chance(92) ? knownTokenID() : newTokenID()
            let id = rng.chance(95) ? newTokenID() : knownTokenID()
            return Event(type: .refreshed, ts: ts, token: rng.chance(97) ? id : nil, tokenType: "access",
                         sub: rng.chance(80) ? "user-\(rng.below(400))" : nil, scope: rng.chance(70) ? rng.pick(EngineEventSource.scopes) : nil,
                         exp: exp(ts), parent: parent, gateway: gateway,
                         release: release, track: track)
        case 200..<250:
            return Event(type: .revoked, ts: ts, token: rng.chance(90) ? knownTokenID() : newTokenID(), gateway: gateway,
                         release: release, track: track, reason: rng.chance(90) ? rng.pick(EngineEventSource.reasons) : nil)
        case 250..<285:
            return Event(type: .expired, ts: ts, token: knownTokenID(), gateway: gateway, release: release, track: track)
        case 285..<375:
            let token: String? = rng.chance(10) ? nil : rng.chance(90) ? knownTokenID() : newTokenID()
            // Rejections lean to the canary track, so rejection-rate alerts happen.
            return Event(type: .rejected, ts: ts, token: token, gateway: gateway, release: release ?? "v2.0-canary",
                         track: rng.chance(60) ? "canary" : track, status: 401, reason: rng.pick(EngineEventSource.reasons))
        default:
            let token = rng.chance(93) ? knownTokenID() : newTokenID()
            // A validation's scope (the route's, say) is not the token's.
            return Event(type: .validated, ts: ts, token: token, scope: rng.chance(10) ? "route:only" : nil,
                         gateway: gateway, release: release, track: track,
                         route: rng.chance(30) ? "/api/v1/items" : nil, status: 200)
        }
    }
}

// MARK: - Ledgers

fileprivate struct BuiltLedger {
    let directory: String
    let log: SegmentLog
    /// Read back from the log; `events[i]` has seq i + 1.
    let events: [Event]
    /// The log's block size; hand-made blocks (with markers inside) hold up to 250 events.
    let blockEventsMax: Int
    var lastSeq: UInt64 { UInt64(events.count) }
}

/// What a state looks like from outside, names resolved, for comparing two projections built
/// different ways.
fileprivate struct StateDump: Equatable {
    var summary: StateSummary
    var lastSeq: UInt64
    var maxTs: Int64?
    var eventCount: UInt64
    var duplicateCreations: UInt64
    var tokens: [TokenView]
    var anomalies: [Anomaly]
    var markers: [MarkerRecord]
    var counters: [String: UInt64]
    var rejection: [String: RejectionStats]
    var stable: RejectionStats
}

final class SnapshotEngineTests: XCTestCase {
    var directories: [String] = []

    override func tearDown() {
        for d in directories { try? FileManager.default.removeItem(atPath: d) }
        directories = []
    }

    func temporaryDirectory(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "snapshot-engine-\(name)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        directories.append(path)
        return path
    }

    /// Rejection alerts at small sample counts, so anomalies of every kind occur.
    let options = ProjectionOptions(rejectionFactor: 1.5, rejectionSamplesMin: 40)

    // MARK: Helpers

    /// Appends `count` seeded events in random batches (some as one hand-made block, which may
    /// hold markers in the middle), then reads every event back.
    fileprivate func buildLedger(_ name: String, seed: UInt64, count: Int, blockEventsMax: Int? = nil, midBlockMarkers: Bool = true,
                                 markerPerMille: Int = 15, customize: ((inout [Event], Int) -> Void)? = nil) throws -> BuiltLedger {
        var rng = EngineRandom(seed: seed &* 31 &+ 7)
        let directory = temporaryDirectory(name)
        let blockMax = blockEventsMax ?? (50 + rng.below(251))
        let log = try SegmentLog.open(directory: directory, options: LogOptions(segmentBytesMax: 64 << 10, blockEventsMax: blockMax, fsync: .never))
        var source = EngineEventSource(seed: seed, markerPerMille: markerPerMille)
        var appended = [Event]()
        while appended.count < count {
            let n = min(count - appended.count, 1 + rng.below(400))
            var batch = (0..<n).map { _ in source.next() }
            customize?(&batch, appended.count)
            if midBlockMarkers && n <= 250 && rng.chance(30) {
                try log.append(encoded: [EncodedBlock(events: batch)])
            } else {
                try log.append(batch)
            }
            appended += batch
        }
        var events = [Event]()
        for location in log.locateBlocks() {
            XCTAssertEqual(location.header.firstSeq, UInt64(events.count + 1), "seed \(seed): blocks are dense")
            events += try log.readBlock(location).events
        }
        XCTAssertEqual(events.count, appended.count, "seed \(seed)")
        XCTAssertTrue(events == appended, "seed \(seed): the ledger gives back the events appended")
        XCTAssertEqual(log.lastSeq, UInt64(count), "seed \(seed)")
        return BuiltLedger(directory: directory, log: log, events: events, blockEventsMax: blockMax)
    }

    /// A plain projection fed events 1...n (those with ts <= tsMax when given), one by one.
    func reference(_ events: [Event], through n: Int, tsMax: Int64? = nil) -> Projection {
        let p = Projection(options: options)
        for i in 0..<n where tsMax == nil || events[i].ts <= tsMax! { p.apply(events[i], seq: UInt64(i + 1)) }
        return p
    }

    fileprivate func dump(_ p: Projection, clock: Int64) -> StateDump {
        var tokens = [TokenView]()
        p.forEachToken(clock: clock) { tokens.append($0) }
        var counters = [String: UInt64]()
        for (k, v) in p.counters.entries {
            let key = [String(k.type), p.names.name(k.release) ?? "-", p.names.name(k.track) ?? "-", p.names.name(k.gateway) ?? "-",
                       p.names.name(k.reason) ?? "-"].joined(separator: "|")
            counters[key, default: 0] += v
        }
        var rejection = [String: RejectionStats]()
        for (key, s) in p.rejection {
            rejection[p.names.names[Int(key >> 32)] + "|" + p.names.names[Int(key & 0xFFFF_FFFF)]] = s
        }
        return StateDump(summary: p.summary(clock: clock), lastSeq: p.lastSeq, maxTs: p.maxTs, eventCount: p.eventCount,
                         duplicateCreations: p.duplicateCreations, tokens: tokens, anomalies: p.anomalies, markers: p.markers,
                         counters: counters, rejection: rejection, stable: p.stable)
    }

    /// Field by field, so a failure says what differs instead of printing two whole states.
    fileprivate func assertSame(_ a: StateDump, _ b: StateDump, _ context: @autoclosure () -> String,
                                file: StaticString = #filePath, line: UInt = #line) {
        guard a != b else { return }
        let c = context()
        if a.summary != b.summary { XCTFail("\(c): summary \(a.summary.json) != \(b.summary.json)", file: file, line: line) }
        if a.lastSeq != b.lastSeq || a.maxTs != b.maxTs || a.eventCount != b.eventCount || a.duplicateCreations != b.duplicateCreations {
            XCTFail("\(c): lastSeq/maxTs/events/duplicates \((a.lastSeq, a.maxTs, a.eventCount, a.duplicateCreations)) != \((b.lastSeq, b.maxTs, b.eventCount, b.duplicateCreations))",
                    file: file, line: line)
        }
        if a.tokens != b.tokens {
            if a.tokens.count != b.tokens.count {
                XCTFail("\(c): \(a.tokens.count) tokens != \(b.tokens.count)", file: file, line: line)
            }
            if let i = (0..<min(a.tokens.count, b.tokens.count)).first(where: { a.tokens[$0] != b.tokens[$0] }) {
                XCTFail("\(c): token #\(i) differs:\n  \(a.tokens[i].json)\n  \(b.tokens[i].json)", file: file, line: line)
            }
        }
        if a.anomalies != b.anomalies {
            let i = (0..<min(a.anomalies.count, b.anomalies.count)).first(where: { a.anomalies[$0] != b.anomalies[$0] })
            XCTFail("\(c): \(a.anomalies.count) anomalies vs \(b.anomalies.count); first difference at #\(i.map(String.init) ?? "end"): "
                    + "\(i.map { "\(a.anomalies[$0]) vs \(b.anomalies[$0])" } ?? "")", file: file, line: line)
        }
        if a.markers != b.markers { XCTFail("\(c): markers \(a.markers.map(\.seq)) != \(b.markers.map(\.seq))", file: file, line: line) }
        if a.counters != b.counters {
            let keys = Set(a.counters.keys).union(b.counters.keys).filter { a.counters[$0] != b.counters[$0] }.sorted()
            XCTFail("\(c): counters differ at \(keys.prefix(5).map { "\($0): \(a.counters[$0] ?? 0) vs \(b.counters[$0] ?? 0)" })", file: file, line: line)
        }
        if a.rejection != b.rejection || a.stable != b.stable { XCTFail("\(c): rejection statistics differ", file: file, line: line) }
    }

    func snapshotsDirectory(_ ledger: String) -> String { ledger + "/" + SnapshotStore.directoryName }

    func decode(_ raw: [UInt8], seed: UInt64) -> Projection? {
        let result = raw.withUnsafeBytes { b in Result { () throws(SnapshotError) in try SnapshotBody.decode(b, options: options) } }
        switch result {
        case let .success(p): return p
        case let .failure(e):
            XCTFail("seed \(seed): a snapshot body just encoded does not decode: \(e)")
            return nil
        }
    }

    // MARK: 1. Snapshot body round trip

    func testSnapshotBodyRoundTripGivesTheSameProjectionAndItKeepsReducingTheSame() throws {
        for seed in EngineSeeds.seeds(Array(1...6)) {
            var source = EngineEventSource(seed: seed)
            var rng = EngineRandom(seed: seed ^ 0xABCD)
            let before = 1500 + rng.below(2500), after = 500 + rng.below(1500)
            let events = (0..<(before + after)).map { _ in source.next() }
            let original = Projection(options: options)
            for i in 0..<before { original.apply(events[i], seq: UInt64(i + 1)) }
            XCTAssertGreaterThan(original.anomalyCount, 0, "seed \(seed): the stream should raise anomalies")
            XCTAssertFalse(original.markers.isEmpty, "seed \(seed): the stream should hold markers")

            let raw = SnapshotBody.encode(original)
            guard let decoded = decode(raw, seed: seed) else { continue }
            XCTAssertFalse(decoded.ids.indexed, "seed \(seed): a decoded snapshot's id table starts unindexed (the path under test)")

            // Lookups go through the lazily built index: every id, and ids that are not there.
            let maxTs = original.maxTs!
            let clocks: [Int64] = [0, maxTs - 600_000, maxTs - 1, maxTs, maxTs + 3_600_000, .max]
            var sampleIDs = (0..<40).map { _ in rng.pick(source.tokens) }
            sampleIDs += ["no-such-token", "", "sha256:" + String(repeating: "0", count: 64)]
            for id in sampleIDs {
                XCTAssertEqual(decoded.token(id, clock: maxTs), original.token(id, clock: maxTs), "seed \(seed): token \(id)")
                XCTAssertEqual(decoded.status(of: id, clock: maxTs), original.status(of: id, clock: maxTs), "seed \(seed): status of \(id)")
            }
            XCTAssertTrue(decoded.ids.indexed, "seed \(seed)")
            for clock in clocks {
                XCTAssertEqual(decoded.summary(clock: clock), original.summary(clock: clock), "seed \(seed): summary at clock \(clock)")
                assertSame(dump(decoded, clock: clock), dump(original, clock: clock), "seed \(seed): decoded vs original at clock \(clock)")
            }
            XCTAssertTrue(decoded.counters == original.counters, "seed \(seed): counters")
            XCTAssertEqual(decoded.names.names, original.names.names, "seed \(seed): name table")
            XCTAssertEqual(decoded.anomalies, original.anomalies, "seed \(seed): anomalies")
            XCTAssertEqual(decoded.markers, original.markers, "seed \(seed): markers")
            XCTAssertEqual(decoded.rejection, original.rejection, "seed \(seed): rejection stats")
            XCTAssertEqual(decoded.stable, original.stable, "seed \(seed): stable stats")
            XCTAssertEqual(decoded.stableName, original.stableName, "seed \(seed): stable track name number")
            XCTAssertEqual(decoded.duplicateCreations, original.duplicateCreations, "seed \(seed)")
            XCTAssertEqual(SnapshotBody.encode(decoded), raw, "seed \(seed): re-encoding the decoded projection gives the same bytes")
            for id in source.tokens.prefix(300) {
                XCTAssertEqual(decoded.refreshChain(of: id), original.refreshChain(of: id), "seed \(seed): refresh chain of \(id)")
            }

            // The same further events to both: still the same, including ids new to the decoded
            // table (inserted after its lazy index was built) and ids it already had.
            for i in before..<(before + after) {
                original.apply(events[i], seq: UInt64(i + 1))
                decoded.apply(events[i], seq: UInt64(i + 1))
            }
            for clock in clocks {
                assertSame(dump(decoded, clock: clock), dump(original, clock: clock), "seed \(seed): after \(after) more events, clock \(clock)")
            }
            XCTAssertEqual(SnapshotBody.encode(decoded), SnapshotBody.encode(original), "seed \(seed): same bytes after further events")

            // A decoded table that was never looked up takes new ids through the same lazy path.
            guard let fresh = decode(raw, seed: seed) else { continue }
            let block = try EncodedBlock(events: events[before..<(before + after)])
            let decodedBlock = try BlockPayloadDecoder.decode(block.raw)
            fresh.apply(decodedBlock, firstSeq: UInt64(before + 1))
            assertSame(dump(fresh, clock: maxTs), dump(original, clock: maxTs), "seed \(seed): decoded, then a whole block applied")
        }
    }

    /// Times at the edges of Int64 (a gateway's clock gone wrong, a hostile `exp`) must survive a
    /// snapshot like any other: the snapshot stores some of them as differences.
    func testSnapshotBodyRoundTripKeepsExtremeTimes() {
        let seed: UInt64 = 77
        let extremes: [Int64] = [.min, .min + 1, -1, 0, 1, .max - 1, .max, 1_780_000_000_000]
        var events = [Event]()
        var n = 0
        for ts in extremes {
            for exp in extremes + [nil] as [Int64?] {
                n += 1
                events.append(Event(type: .issued, ts: ts, token: "x\(n)", exp: exp, release: "v1.0", track: "stable"))
                events.append(Event(type: .validated, ts: ts &+ 1, token: "x\(n)"))
                if n % 3 == 0 { events.append(Event(type: .revoked, ts: extremes[n % extremes.count], token: "x\(n)", reason: "logout")) }
            }
        }
        events.append(Event(type: .deploy, ts: .min, release: "v1.0", track: "stable", marker: "edge", weight: 0))
        let original = Projection(options: options)
        for (i, e) in events.enumerated() { original.apply(e, seq: UInt64(i + 1)) }
        guard let decoded = decode(SnapshotBody.encode(original), seed: seed) else { return }
        for clock in extremes {
            assertSame(dump(decoded, clock: clock), dump(original, clock: clock), "extreme times: clock \(clock)")
        }
        // The case spelled out: issued at ts 0 with exp Int64.min is expired at every clock.
        let id = "x\(extremes.firstIndex(of: 0)! * (extremes.count + 1) + extremes.firstIndex(of: .min)! + 1)"
        XCTAssertEqual(original.token(id, clock: 0)?.exp, .min, "test setup: \(id)")
        XCTAssertEqual(decoded.token(id, clock: 0)?.exp, .min, "exp Int64.min issued at ts 0 lost in the snapshot")
        XCTAssertEqual(decoded.status(of: id, clock: 0), .expired, "a token expired before the snapshot is \(String(describing: decoded.status(of: id, clock: 0))) after it")
    }

    // MARK: 2. Snapshot + tail == full replay

    func testSnapshotPlusTailReplayEqualsFullReplayAtEverySampledPoint() throws {
        for seed in EngineSeeds.seeds([21, 22]) {
            var rng = EngineRandom(seed: seed ^ 0x7777)
            let count = 5000 + rng.below(3000)
            let ledger = try buildLedger("tail", seed: seed, count: count, markerPerMille: 1)
            let events = ledger.events
            let store = SnapshotStore(dataDirectory: ledger.directory)
            let engine = ProjectionEngine(log: ledger.log, store: store, options: options)
            engine.snapshotIntervalEvents = 700
            engine.keepIntervalSnapshots = 1000
            let full = ProjectionEngine(log: ledger.log, store: nil, options: options)

            // The first question replays everything and leaves snapshots behind.
            let head = try engine.state(at: .head)
            XCTAssertNil(head.snapshot, "seed \(seed): no snapshot existed yet")
            XCTAssertEqual(head.replayedEvents, UInt64(count), "seed \(seed)")
            assertSame(dump(head.projection, clock: head.clock), dump(reference(events, through: count), clock: events.map(\.ts).max()!),
                       "seed \(seed): head")
            let written = store.list()
            XCTAssertTrue(written.allSatisfy { $0.problem == nil }, "seed \(seed): \(written.compactMap(\.problem))")
            let intervalSnapshots = written.filter { $0.header?.marker == nil }
            XCTAssertGreaterThanOrEqual(intervalSnapshots.count, 3, "seed \(seed): interval snapshots every ~700 events")
            // A snapshot (interval or marker) at the end of the first block 700 events after the
            // previous one, and one at the head when it is that far from the last.
            let seqs = [0] + written.map { $0.header!.seq }
            let longestBlock = UInt64(max(ledger.blockEventsMax, 250))
            for (a, b) in zip(seqs, seqs.dropFirst()) {
                XCTAssertLessThan(b - a, 700 + longestBlock, "seed \(seed): no snapshot between seq \(a) and \(b)")
            }
            XCTAssertTrue(seqs.last! == UInt64(count) || UInt64(count) - seqs.last! < 700, "seed \(seed): last snapshot at \(seqs.last!) of \(count)")
            let markerSeqs = Set(head.projection.markers.map(\.seq))
            XCTAssertEqual(Set(written.filter { $0.header?.marker != nil }.map { $0.header!.seq }), markerSeqs,
                           "seed \(seed): one snapshot at every marker")

            // Points: sequence numbers (random, at and around snapshots, the ends), times (event
            // times, random times, snapshot clocks, before everything, after everything), markers.
            let minTs = events.map(\.ts).min()!, maxTs = events.map(\.ts).max()!
            var points: [StatePoint] = [.head, .seq(0), .seq(1), .seq(UInt64(count)), .seq(UInt64(count - 1)),
                                        .time(minTs - 1), .time(minTs), .time(maxTs), .time(maxTs + 10_000_000)]
            for _ in 0..<22 { points.append(.seq(UInt64(1 + rng.below(count)))) }
            for _ in 0..<5 {
                let s = rng.pick(written).header!.seq
                points += [.seq(s), .seq(s + 1), .seq(s - 1)]
            }
            for _ in 0..<8 { points.append(.time(events[rng.below(count)].ts)) }
            for _ in 0..<6 { points.append(.time(rng.between(minTs, maxTs))) }
            for _ in 0..<3 { points.append(.time(rng.pick(written).header!.maxTs)) }
            let markers = head.projection.markers
            for _ in 0..<6 { points.append(.marker(rng.pick(markers).marker)) }
            // Shuffled, so later questions also start from snapshots written by earlier ones.
            for i in stride(from: points.count - 1, to: 0, by: -1) { points.swapAt(i, rng.below(i + 1)) }

            var fromSnapshot = 0, timeFromSnapshot = 0
            for point in points {
                let context = "seed \(seed), \(point)"
                let before = store.list().filter { $0.problem == nil }.compactMap(\.header)
                let r = try engine.state(at: point)
                let f = try full.state(at: point)
                let expected: Projection, clock: Int64
                switch point {
                case .head:
                    expected = reference(events, through: count); clock = maxTs
                case let .seq(n):
                    expected = reference(events, through: Int(n)); clock = expected.maxTs ?? 0
                    let start = before.filter { $0.seq <= n }.map(\.seq).max()
                    XCTAssertEqual(r.snapshot?.seq, start, "\(context): starts from the nearest snapshot at or before it")
                    XCTAssertEqual(r.replayedEvents, n - (r.snapshot?.seq ?? 0), context)
                    XCTAssertEqual(f.replayedEvents, n, context)
                case let .time(t):
                    expected = reference(events, through: count, tsMax: t); clock = t
                    let start = before.filter { $0.maxTs <= t }.map(\.seq).max()
                    XCTAssertEqual(r.snapshot?.seq, start, "\(context): starts from the newest snapshot whose events are all at or before it")
                    if r.snapshot != nil { timeFromSnapshot += 1 }
                case let .marker(id):
                    let m = markers.last { $0.marker == id }!
                    expected = reference(events, through: Int(m.seq)); clock = m.ts
                    XCTAssertEqual(r.marker, m, context)
                    XCTAssertEqual(f.marker, m, context)
                    XCTAssertEqual(r.snapshot?.seq, m.seq, "\(context): answered from the marker's snapshot")
                    XCTAssertEqual(r.replayedEvents, 0, context)
                }
                if r.snapshot != nil { fromSnapshot += 1 }
                XCTAssertNil(f.snapshot, context)
                XCTAssertEqual(r.clock, clock, context)
                XCTAssertEqual(f.clock, clock, context)
                XCTAssertTrue(r.notes.isEmpty, "\(context): \(r.notes)")
                let want = dump(expected, clock: clock)
                assertSame(dump(r.projection, clock: r.clock), want, "\(context): snapshot + tail vs plain projection")
                assertSame(dump(f.projection, clock: f.clock), want, "\(context): full replay vs plain projection")
            }
            XCTAssertGreaterThan(fromSnapshot, points.count / 2, "seed \(seed): most answers should start from a snapshot")
            XCTAssertGreaterThan(timeFromSnapshot, 0, "seed \(seed): some time points should start from a snapshot")
        }
    }

    /// The smallest case of the comparison above: snapshots at two markers, then a state asked
    /// between them, several blocks past the older one (so the replay from it spans full blocks).
    func testStateBetweenTwoSnapshotsStartsFromTheOlderOne() throws {
        let seed: UInt64 = 25
        let ledger = try buildLedger("between", seed: seed, count: 2000, blockEventsMax: 50, midBlockMarkers: false, markerPerMille: 0) { batch, at in
            for i in batch.indices where at + i == 499 || at + i == 1499 {
                batch[i] = Event(type: .deploy, ts: batch[i].ts, release: "v1.0", track: "stable", marker: "at-\(at + i + 1)")
            }
        }
        let engine = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
        _ = try engine.state(at: .head) // snapshots at seq 500 and 1500
        let r = try engine.state(at: .seq(900))
        XCTAssertEqual(r.snapshot?.seq, 500, "seed \(seed)")
        XCTAssertEqual(r.replayedEvents, 400, "seed \(seed)")
        assertSame(dump(r.projection, clock: r.clock), dump(reference(ledger.events, through: 900), clock: r.projection.maxTs ?? 0), "seed \(seed): seq 900")
    }

    // MARK: 3. Damaged, foreign and stale snapshots

    func testDamagedSnapshotsAreNamedSkippedAndNeverChangeAnAnswer() throws {
        for seed in EngineSeeds.seeds([31, 32]) {
            var rng = EngineRandom(seed: seed ^ 0x3131)
            let count = 4000 + rng.below(1500)
            let ledger = try buildLedger("damaged", seed: seed, count: count)
            let store = SnapshotStore(dataDirectory: ledger.directory)
            let writer = ProjectionEngine(log: ledger.log, store: store, options: options)
            writer.snapshotIntervalEvents = 400
            writer.keepIntervalSnapshots = 1000
            _ = try writer.state(at: .head)
            let good = store.list()
            XCTAssertGreaterThanOrEqual(good.count, 8, "seed \(seed): snapshots to damage")
            let dir = snapshotsDirectory(ledger.directory)
            func path(_ info: SnapshotInfo) -> String { dir + "/" + info.name }

            // Newest first: the body of the newest, the length of the next, the header of the
            // third; garbage under a sequence number no snapshot has.
            let newest = Array(good.reversed())
            let bodyFlipped = newest[0], truncated = newest[1], headerFlipped = newest[2]
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path(bodyFlipped))))
            let h = bodyFlipped.header!
            bytes[h.size + rng.below(Int(h.storedBytes))] ^= UInt8(1 << rng.below(8))
            try Data(bytes).write(to: URL(fileURLWithPath: path(bodyFlipped)))

            bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path(truncated))))
            try Data(bytes.prefix(truncated.header!.size + rng.below(Int(truncated.header!.storedBytes)))).write(to: URL(fileURLWithPath: path(truncated)))

            bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path(headerFlipped))))
            bytes[8 + rng.below(SnapshotHeader.fixedSize - 16)] ^= UInt8(1 << rng.below(8)) // seq ... bodyChecksum
            try Data(bytes).write(to: URL(fileURLWithPath: path(headerFlipped)))

            // Any sequence number no snapshot has: a file that is not a snapshot is named wherever it sits.
            let taken = Set(good.map { $0.header!.seq })
            let free = (1...UInt64(count)).filter { !taken.contains($0) }
            let garbageSeq = free[rng.below(free.count)]
            let garbageName = SnapshotStore.fileName(seq: garbageSeq)
            XCTAssertFalse(good.contains { $0.name == garbageName }, "seed \(seed): test setup")
            try Data((0..<(200 + rng.below(4000))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }).write(to: URL(fileURLWithPath: dir + "/" + garbageName))
            let damaged = [bodyFlipped.name, truncated.name, headerFlipped.name, garbageName]

            // The header of a flipped header no longer decodes; listing says why.
            let listed = store.list()
            XCTAssertEqual(listed.first { $0.name == headerFlipped.name }?.problem?.contains("header checksum mismatch"), true,
                           "seed \(seed): \(listed.first { $0.name == headerFlipped.name }?.problem ?? "no problem found")")
            XCTAssertNotNil(listed.first { $0.name == truncated.name }?.problem, "seed \(seed): truncation found on listing")
            XCTAssertNotNil(listed.first { $0.name == garbageName }?.problem, "seed \(seed): garbage found on listing")

            let expectedHead = dump(reference(ledger.events, through: count), clock: ledger.events.map(\.ts).max()!)
            // Read-only engine first (nothing rewritten), then one that writes snapshots as the CLI's does.
            for writes in [false, true] {
                let engine = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
                engine.snapshotIntervalEvents = 400
                engine.keepIntervalSnapshots = 1000
                engine.writeSnapshots = writes
                let context = "seed \(seed), writes \(writes)"
                let r = try engine.state(at: .head)
                assertSame(dump(r.projection, clock: r.clock), expectedHead, "\(context): head with damaged snapshots")
                XCTAssertEqual(r.snapshot?.seq, newest[3].header!.seq, "\(context): starts from the newest good snapshot")
                for name in damaged {
                    XCTAssertTrue(r.notes.contains { $0.contains(name) && $0.contains("damaged") }, "\(context): \(name) named as damaged in \(r.notes)")
                }
                XCTAssertTrue(r.notes.contains { $0.contains(bodyFlipped.name) && $0.contains("body checksum mismatch") }, "\(context): \(r.notes)")
                XCTAssertTrue(r.notes.contains { $0.contains(headerFlipped.name) && $0.contains("header checksum mismatch") }, "\(context): \(r.notes)")
                XCTAssertEqual(r.notes.count, damaged.count, "\(context): one note per damaged file: \(r.notes)")

                // Points inside the damaged range too.
                for n in [truncated.header!.seq, bodyFlipped.header!.seq, headerFlipped.header!.seq + 1, garbageSeq] {
                    let s = try engine.state(at: .seq(n))
                    assertSame(dump(s.projection, clock: s.clock), dump(reference(ledger.events, through: Int(n)), clock: s.projection.maxTs ?? 0),
                               "\(context): seq \(n) with damaged snapshots")
                    if let used = s.snapshot { XCTAssertFalse(damaged.contains(SnapshotStore.fileName(seq: used.seq)) && !writes, "\(context): used a damaged snapshot at \(used.seq)") }
                }
            }
        }
    }

    func testEverySingleByteChangeOfASnapshotHeaderIsDetected() {
        var rng = EngineRandom(seed: 41)
        for marker in [nil, "m-0003", "deploy-é-中"] as [String?] {
            var h = SnapshotHeader(seq: 12345, blockLastSeq: 12400, chainHash: Digest32((0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) })!,
                                   maxTs: 1_780_000_123_456, optionsHash: options.hash, marker: marker)
            h.rawBytes = 999_999; h.storedBytes = 123_456; h.bodyChecksum = rng.next()
            let bytes = h.encode()
            XCTAssertEqual(bytes.count, h.size, "marker \(marker ?? "none")")
            XCTAssertEqual(try? SnapshotHeader.decode(bytes).get(), h, "marker \(marker ?? "none"): round trip")
            for i in 0..<bytes.count {
                var changed = bytes
                changed[i] ^= UInt8(1 << rng.below(8))
                switch SnapshotHeader.decode(changed) {
                case .success: XCTFail("marker \(marker ?? "none"): a change at byte \(i) of \(bytes.count) went unnoticed")
                case let .failure(e):
                    if i >= 8 && i < SnapshotHeader.fixedSize || i >= SnapshotHeader.fixedSize {
                        XCTAssertEqual(e.reason, "header checksum mismatch", "marker \(marker ?? "none"), byte \(i)")
                    }
                }
            }
        }
    }

    func testSnapshotFromAnotherLedgerIsStaleAndNotUsed() throws {
        for seed in EngineSeeds.seeds([51]) {
            // Same sizes, same block layout, different events.
            let a = try buildLedger("stale-a", seed: seed, count: 3000, blockEventsMax: 100, midBlockMarkers: false)
            let b = try buildLedger("stale-b", seed: seed + 1000, count: 3000, blockEventsMax: 100, midBlockMarkers: false)
            for ledger in [a, b] {
                let engine = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
                engine.snapshotIntervalEvents = 500
                engine.keepIntervalSnapshots = 1000
                _ = try engine.state(at: .head)
            }
            let aStore = SnapshotStore(dataDirectory: a.directory), bStore = SnapshotStore(dataDirectory: b.directory)
            let aNewest = aStore.list().last!.header!.seq
            // B's newest snapshot at or below A's head, copied into A's snapshots as its newest.
            guard let foreign = bStore.list().last(where: { $0.header!.seq <= a.lastSeq }) else { return XCTFail("seed \(seed): B has no snapshot") }
            for info in aStore.list() where info.header!.seq >= foreign.header!.seq {
                try FileManager.default.removeItem(atPath: snapshotsDirectory(a.directory) + "/" + info.name)
            }
            try FileManager.default.copyItem(atPath: snapshotsDirectory(b.directory) + "/" + foreign.name,
                                             toPath: snapshotsDirectory(a.directory) + "/" + foreign.name)
            XCTAssertEqual(aStore.list().last?.name, foreign.name, "seed \(seed): the foreign snapshot is A's newest (was \(aNewest))")
            XCTAssertNil(aStore.list().last?.problem, "seed \(seed): it is a whole, valid file")

            let engine = ProjectionEngine(log: a.log, store: aStore, options: options)
            engine.snapshotIntervalEvents = 500
            let r = try engine.state(at: .head)
            XCTAssertNotEqual(r.snapshot?.seq, foreign.header!.seq, "seed \(seed): the foreign snapshot was used")
            XCTAssertNotNil(r.snapshot, "seed \(seed): A's own older snapshots are still used")
            XCTAssertTrue(r.notes.contains { $0.contains(foreign.name) && $0.contains("stale") }, "seed \(seed): \(r.notes)")
            assertSame(dump(r.projection, clock: r.clock), dump(reference(a.events, through: 3000), clock: a.events.map(\.ts).max()!),
                       "seed \(seed): head of A with B's snapshot in its directory")
            let s = try engine.state(at: .seq(foreign.header!.seq))
            XCTAssertNotEqual(s.snapshot?.seq, foreign.header!.seq, "seed \(seed)")
            assertSame(dump(s.projection, clock: s.clock), dump(reference(a.events, through: Int(foreign.header!.seq)), clock: s.projection.maxTs ?? 0),
                       "seed \(seed): A at the foreign snapshot's seq")

            // A snapshot past the head (the ledger was replaced by a shorter one) is stale too.
            let pastHead = SnapshotStore.fileName(seq: 5000)
            try FileManager.default.copyItem(atPath: snapshotsDirectory(a.directory) + "/" + aStore.list().first!.name,
                                             toPath: snapshotsDirectory(a.directory) + "/" + pastHead)
            let e2 = ProjectionEngine(log: a.log, store: aStore, options: options)
            let r2 = try e2.state(at: .head)
            XCTAssertTrue(r2.notes.contains { $0.contains(pastHead) && ($0.contains("stale") || $0.contains("damaged")) }, "seed \(seed): \(r2.notes)")
            assertSame(dump(r2.projection, clock: r2.clock), dump(reference(a.events, through: 3000), clock: a.events.map(\.ts).max()!),
                       "seed \(seed): head of A with a snapshot named past its head")

            // Built with other projection options: silently not used, and the answer is still right.
            let other = ProjectionOptions(rejectionFactor: 4, rejectionSamplesMin: 10)
            let e3 = ProjectionEngine(log: a.log, store: aStore, options: other)
            e3.writeSnapshots = false
            let r3 = try e3.state(at: .head)
            XCTAssertNil(r3.snapshot, "seed \(seed): a snapshot built with other options was used")
            let plain = Projection(options: other)
            for (i, e) in a.events.enumerated() { plain.apply(e, seq: UInt64(i + 1)) }
            XCTAssertEqual(r3.projection.anomalies, plain.anomalies, "seed \(seed): other options, other anomalies")
        }
    }

    /// Snapshots of an older projection format (version 1 had no `scope` in its records) are
    /// reported stale, never decoded with today's layout, and replaced by a rebuild.
    func testSnapshotsOfAnOlderFormatVersionAreStaleAndRebuilt() throws {
        let seed: UInt64 = 61
        let ledger = try buildLedger("old-version", seed: seed, count: 2500, blockEventsMax: 100, midBlockMarkers: false)
        let store = SnapshotStore(dataDirectory: ledger.directory)
        let first = ProjectionEngine(log: ledger.log, store: store, options: options)
        first.snapshotIntervalEvents = 500
        first.keepIntervalSnapshots = 1000
        _ = try first.state(at: .head)
        let written = store.list()
        XCTAssertFalse(written.isEmpty, "seed \(seed): snapshots written")
        XCTAssertGreaterThan(SnapshotHeader.formatVersion, 1)
        // Each file's header rewritten as version 1 (a valid header checksum: only the version is old).
        for info in written {
            let path = snapshotsDirectory(ledger.directory) + "/" + info.name
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            var h = info.header!
            h.formatVersion = 1
            let header = h.encode()
            bytes.replaceSubrange(0..<header.count, with: header)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        XCTAssertTrue(store.list().allSatisfy { $0.header?.formatVersion == 1 && $0.problem == nil }, "seed \(seed): whole version-1 files")
        let engine = ProjectionEngine(log: ledger.log, store: store, options: options)
        engine.snapshotIntervalEvents = 500
        engine.keepIntervalSnapshots = 1000
        let r = try engine.state(at: .head)
        XCTAssertNil(r.snapshot, "seed \(seed): a version-1 snapshot was used")
        XCTAssertEqual(r.replayedEvents, 2500, "seed \(seed): rebuilt from the ledger")
        for info in written {
            XCTAssertTrue(r.notes.contains { $0.contains(info.name) && $0.contains("projection format version 1") && $0.contains("stale") },
                          "seed \(seed): \(info.name) not reported stale in \(r.notes)")
        }
        assertSame(dump(r.projection, clock: r.clock), dump(reference(ledger.events, through: 2500), clock: ledger.events.map(\.ts).max()!),
                   "seed \(seed): head rebuilt past old snapshots")
        // The rebuild wrote current ones, which the next question starts from.
        XCTAssertTrue(store.list().contains { $0.header?.formatVersion == SnapshotHeader.formatVersion }, "seed \(seed): no current snapshot rewritten")
        let again = try ProjectionEngine(log: ledger.log, store: store, options: options).state(at: .head)
        XCTAssertNotNil(again.snapshot, "seed \(seed): the rewritten snapshots are used")
        assertSame(dump(again.projection, clock: again.clock), dump(r.projection, clock: r.clock), "seed \(seed): from the rewritten snapshot")
    }

    // MARK: 4. Markers

    func testMarkersGetSnapshotsAtTheirExactSeqAndAnswerWithoutReplay() throws {
        for seed in EngineSeeds.seeds([61, 62]) {
            let ledger = try buildLedger("markers", seed: seed, count: 5000)
            let store = SnapshotStore(dataDirectory: ledger.directory)
            let engine = ProjectionEngine(log: ledger.log, store: store, options: options)
            engine.snapshotIntervalEvents = 600
            // Few interval snapshots kept: marker snapshots are never pruned.
            engine.keepIntervalSnapshots = 2
            let head = try engine.state(at: .head)
            let markers = head.projection.markers
            XCTAssertGreaterThanOrEqual(markers.count, 30, "seed \(seed): the stream should hold markers")
            let infos = store.list()
            XCTAssertLessThanOrEqual(infos.filter { $0.header?.marker == nil }.count, 2, "seed \(seed): interval snapshots pruned to 2")
            var midBlock = 0
            for m in markers {
                guard let info = infos.first(where: { $0.header?.seq == m.seq }), let h = info.header else {
                    XCTFail("seed \(seed): no snapshot at marker \(m.marker) (seq \(m.seq))"); continue
                }
                XCTAssertEqual(h.marker, m.marker, "seed \(seed): marker snapshot header")
                XCTAssertEqual(h.maxTs, ledger.events[..<Int(m.seq)].map(\.ts).max()!, "seed \(seed): \(m.marker)")
                let block = ledger.log.locateBlocks(fromSeq: m.seq, toSeq: m.seq).first!
                XCTAssertEqual(h.blockLastSeq, block.header.lastSeq, "seed \(seed): \(m.marker) stamped with its block")
                XCTAssertEqual(h.chainHash, block.header.chainHash, "seed \(seed): \(m.marker)")
                if block.header.lastSeq != m.seq { midBlock += 1 }
            }
            XCTAssertGreaterThan(midBlock, 0, "seed \(seed): some markers should sit inside a block (the harder case)")

            let fresh = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
            for m in markers {
                let r = try fresh.state(at: .marker(m.marker))
                let context = "seed \(seed), marker \(m.marker) at seq \(m.seq)"
                XCTAssertEqual(r.replayedEvents, 0, context)
                XCTAssertEqual(r.snapshot?.seq, m.seq, context)
                XCTAssertEqual(r.snapshot?.marker, m.marker, context)
                XCTAssertEqual(r.marker, m, context)
                XCTAssertEqual(r.clock, m.ts, context)
                assertSame(dump(r.projection, clock: r.clock), dump(reference(ledger.events, through: Int(m.seq)), clock: m.ts), context)
            }
            for e in [fresh, ProjectionEngine(log: ledger.log, store: nil, options: options)] {
                XCTAssertThrowsError(try e.state(at: .marker("no-such-marker")), "seed \(seed)") { error in
                    let message = (error as? ProjectionError)?.message ?? "not a ProjectionError: \(error)"
                    XCTAssertTrue(message.contains("unknown marker") && message.contains("no-such-marker"), "seed \(seed): \(message)")
                }
                XCTAssertThrowsError(try e.state(at: .seq(ledger.lastSeq + 1)), "seed \(seed): past the head")
            }
        }
    }

    /// PRODUCT.md calls marker ids unique, but nothing on the append path refuses a repeated one.
    /// The first marker with an id is the one meant (ARCHITECTURE.md "Projection rules"), and a
    /// snapshot is a cache: it must not change the answer.
    func testRepeatedMarkerIDGivesTheSameStateWithAndWithoutSnapshots() throws {
        let seed: UInt64 = 71
        let ledger = try buildLedger("dup", seed: seed, count: 1500, blockEventsMax: 100, midBlockMarkers: false) { batch, at in
            for i in batch.indices where (at + i == 299 || at + i == 999) {
                batch[i] = Event(type: .deploy, ts: batch[i].ts, release: "v1.1", track: "canary", marker: "dup", weight: 10)
            }
        }
        let full = try ProjectionEngine(log: ledger.log, store: nil, options: options).state(at: .marker("dup"))
        XCTAssertEqual(full.marker?.seq, 300, "full replay: the first marker of that id")
        let engine = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
        _ = try engine.state(at: .seq(1200)) // leaves snapshots at both "dup" markers
        let r = try engine.state(at: .marker("dup"))
        XCTAssertEqual(r.marker?.seq, full.marker?.seq, "with a snapshot at the first \"dup\", --at-marker dup answers at seq \(r.marker?.seq ?? 0)")
        assertSame(dump(r.projection, clock: r.clock), dump(full.projection, clock: full.clock), "repeated marker id with and without snapshots")
    }

    // MARK: 5. Snapshot writes that fail

    func testFailingSnapshotWritesNeverFailOrChangeAnAnswer() throws {
        for seed in EngineSeeds.seeds([81, 82, 83, 84]) {
            var rng = EngineRandom(seed: seed ^ 0x8888)
            let fs = SimulatedFileSystem()
            let log = try SegmentLog.open(directory: "/ledger", options: LogOptions(blockEventsMax: 120, fsync: .never), fileSystem: fs)
            var source = EngineEventSource(seed: seed)
            let events = (0..<3000).map { _ in source.next() }
            var at = 0
            while at < events.count {
                let n = min(events.count - at, 1 + rng.below(300))
                try log.append(Array(events[at..<(at + n)]))
                at += n
            }
            // No space at all, no space after a few snapshots, or an fsync that fails.
            let fault = seed % 4
            switch fault {
            case 0: fs.noSpaceAfterBytes = 0
            case 1, 2: fs.noSpaceAfterBytes = 500 + rng.below(60_000)
            default: fs.syncsBeforeFailure = rng.below(4)
            }
            let context = "seed \(seed), fault \(fault) (space \(fs.noSpaceAfterBytes.map(String.init) ?? "-"), syncs \(fs.syncsBeforeFailure.map(String.init) ?? "-"))"
            let store = SnapshotStore(dataDirectory: "/ledger", fileSystem: fs)
            let engine = ProjectionEngine(log: log, store: store, options: options)
            engine.snapshotIntervalEvents = 300
            engine.keepIntervalSnapshots = 1000
            let r = try engine.state(at: .head)
            let expected = dump(reference(events, through: events.count), clock: events.map(\.ts).max()!)
            assertSame(dump(r.projection, clock: r.clock), expected, "\(context): head while snapshot writes fail")
            XCTAssertTrue(r.notes.contains { $0.contains("could not write a snapshot") }, "\(context): \(r.notes)")
            XCTAssertFalse(engine.writeSnapshots, "\(context): stops trying after a failure")
            XCTAssertFalse(fs.allFiles.contains { $0.hasSuffix(".tmp") }, "\(context): temporary file left: \(fs.allFiles)")
            // Whatever did get written is whole: listed without problems, loads, and is right.
            fs.noSpaceAfterBytes = nil
            fs.syncsBeforeFailure = nil
            for info in store.list() {
                XCTAssertNil(info.problem, "\(context): \(info.name)")
                let p = try store.load(info, options: options)
                assertSame(dump(p, clock: p.maxTs!), dump(reference(events, through: Int(p.lastSeq)), clock: p.maxTs!), "\(context): \(info.name)")
            }
            if fault == 0 { XCTAssertTrue(store.list().isEmpty, "\(context): no snapshot can have been written") }
            // With space again, answers are the same and no snapshot is called damaged.
            let later = ProjectionEngine(log: log, store: SnapshotStore(dataDirectory: "/ledger", fileSystem: fs), options: options)
            later.snapshotIntervalEvents = 300
            for n in [UInt64(1500), 2999, 3000] {
                let s = try later.state(at: .seq(n))
                assertSame(dump(s.projection, clock: s.clock), dump(reference(events, through: Int(n)), clock: s.projection.maxTs ?? 0), "\(context): seq \(n) later")
                XCTAssertFalse(s.notes.contains { $0.contains("damaged") }, "\(context): \(s.notes)")
            }
        }
    }

    // MARK: 6. Token timelines

    func testTimelineStepsAreExactlyTheEventsNamingTheTokenWithTheFullProjectionsStatus() throws {
        for seed in EngineSeeds.seeds([91, 92]) {
            var rng = EngineRandom(seed: seed ^ 0x9191)
            let ledger = try buildLedger("timeline", seed: seed, count: 4000 + rng.below(2000))
            let events = ledger.events
            // Tokens issued, refreshed away, only ever a parent, only validated, revoked, and one never seen.
            var ids = Set<String>()
            func some(_ filter: (Event) -> String?) {
                let found = events.compactMap(filter)
                for _ in 0..<3 where !found.isEmpty { ids.insert(rng.pick(found)) }
            }
            some { $0.type == .issued ? $0.token : nil }
            some { $0.type == .refreshed ? $0.parent : nil }
            some { $0.type == .refreshed ? $0.token : nil }
            some { $0.type == .revoked ? $0.token : nil }
            some { $0.type == .validated ? $0.token : nil }
            some { e in
                guard e.type == .refreshed, let p = e.parent, !events.contains(where: { $0.token == p }) else { return nil }
                return p
            }
            // The busiest token: many steps, several blocks.
            var uses = [String: Int]()
            for e in events { if let t = e.token { uses[t, default: 0] += 1 } }
            ids.insert(uses.max { $0.value < $1.value }!.key)
            let targets = ids.sorted()

            // One full projection walked event by event gives every step's expected status.
            struct Expected { var seq: UInt64; var clock: Int64; var status: TokenStatus; var asParent: Bool; var anomaly: AnomalyKind? }
            var expected = [String: [Expected]]()
            let full = Projection(options: options)
            var clock = Int64.min
            let targetSet = Set(targets)
            for (i, e) in events.enumerated() {
                let seq = UInt64(i + 1)
                full.apply(e, seq: seq)
                clock = max(clock, e.ts)
                var named = Set<String>()
                if let t = e.token, targetSet.contains(t) { named.insert(t) }
                if e.type == .refreshed, let p = e.parent, targetSet.contains(p) { named.insert(p) }
                for id in named {
                    let asToken = e.token == id
                    let anomaly = asToken ? full.anomalies(seq: seq...seq).first { $0.token == id && $0.kind != .rejectionRate }?.kind : nil
                    expected[id, default: []].append(Expected(seq: seq, clock: clock, status: full.status(of: id, clock: clock)!,
                                                              asParent: !asToken, anomaly: anomaly))
                }
            }

            let engine = ProjectionEngine(log: ledger.log, store: SnapshotStore(dataDirectory: ledger.directory), options: options)
            for id in targets {
                let context = "seed \(seed), token \(id)"
                let t = try engine.timeline(of: id)
                let want = expected[id] ?? []
                XCTAssertFalse(want.isEmpty, "\(context): test setup")
                XCTAssertEqual(t.steps.map(\.seq), want.map(\.seq), "\(context): step sequence numbers")
                for (step, w) in zip(t.steps, want) where step.seq == w.seq {
                    let c = "\(context), seq \(step.seq)"
                    XCTAssertEqual(step.event, events[Int(step.seq) - 1], c)
                    XCTAssertEqual(step.clock, w.clock, c)
                    XCTAssertEqual(step.statusAfter, w.status, c)
                    XCTAssertEqual(step.asParent, w.asParent, c)
                    XCTAssertEqual(step.anomaly, w.anomaly, c)
                    let block = ledger.log.locateBlocks(fromSeq: step.seq, toSeq: step.seq).first!
                    XCTAssertEqual(step.receivedAt, block.header.receivedAt, c)
                }
                XCTAssertEqual(t.headClock, full.maxTs, context)
                XCTAssertEqual(t.view, full.token(id, clock: full.maxTs!), "\(context): the token now")
                XCTAssertEqual(t.chain, full.refreshChain(of: id), "\(context): refresh chain")
            }
            let none = try engine.timeline(of: "never-on-this-ledger")
            XCTAssertTrue(none.steps.isEmpty, "seed \(seed)")
            XCTAssertNil(none.view, "seed \(seed)")
        }
    }

    /// A validation that raises the token's own anomaly and, at the same event, a release's
    /// rejection-rate alert: the step still names the token's anomaly.
    func testTimelineKeepsTheTokensAnomalyWhenARejectionAlertFiresAtTheSameEvent() throws {
        let opts = ProjectionOptions(rejectionFactor: 3, rejectionSamplesMin: 30)
        let directory = temporaryDirectory("timeline-alert")
        let log = try SegmentLog.open(directory: directory, options: LogOptions(blockEventsMax: 50, fsync: .never))
        var events = [Event]()
        var ts: Int64 = 1_780_000_000_000
        func add(_ e: Event) { events.append(e); ts += 10 }
        add(Event(type: .issued, ts: ts, token: "key-1", exp: ts + 10_000_000, release: "v1", track: "stable"))
        for _ in 0..<30 { add(Event(type: .validated, ts: ts, token: "key-1", release: "v1", track: "stable")) }
        for _ in 0..<29 { add(Event(type: .rejected, ts: ts, token: "key-1", release: "v2", track: "canary", reason: "invalid_signature")) }
        add(Event(type: .revoked, ts: ts, token: "key-1", reason: "compromised"))
        add(Event(type: .validated, ts: ts, token: "key-1", release: "v2", track: "canary"))
        try log.append(events)
        let full = Projection(options: opts)
        for (i, e) in events.enumerated() { full.apply(e, seq: UInt64(i + 1)) }
        let last = UInt64(events.count)
        XCTAssertEqual(Set(full.anomalies(seq: last...last).map(\.kind)), [.revokedValidated, .rejectionRate], "test setup")
        let t = try ProjectionEngine(log: log, store: nil, options: opts).timeline(of: "key-1")
        XCTAssertEqual(t.steps.last?.seq, last)
        XCTAssertEqual(t.steps.last?.anomaly, .revokedValidated, "the revoked key validated again is not reported on its timeline")
    }
}
