// The projection commands end to end, through the real `tokenledger` binary: state (summary,
// points in history, one token, every token), markers, metrics, token timelines and rollback.
// Every answer is checked against a Projection computed here from the same NDJSON the ledger was
// fed (decoded with NDJSONDecoder), never against the binary's own output.
//
// Ledgers come from `tokenledger gen` (its scripted story: markers m-0001..m-0005, a bad canary
// v1.5.0 introduced at m-0004 and never rolled back, a compromised key revalidated by the
// canary, a raw JWT) imported with `append`. Each test names its gen seed and sampling seed in
// its failure messages; `PROJECTION_CLI_SEED=n` picks another gen seed.
import Foundation
import LedgerModel
import LedgerProjection
import LedgerStorage
import LedgerWorkload
import XCTest

/// SplitMix64 under this file's own name.
fileprivate struct CLIRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed ^ 0xC11_0000_5EED }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func between(_ lo: Int64, _ hi: Int64) -> Int64 { lo + Int64(next() % UInt64(hi - lo + 1)) }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

/// One sample of the Prometheus text format.
fileprivate struct PromSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

final class ProjectionCLITests: XCTestCase {
    var dir = ""

    override func setUp() { dir = CLI.temporaryDirectory("projection") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// The default gen seed; `PROJECTION_CLI_SEED` replaces it.
    var genSeed: UInt64 {
        if let s = ProcessInfo.processInfo.environment["PROJECTION_CLI_SEED"], let n = UInt64(s) { return n }
        return 5
    }

    /// Well in the past, so a rollback's wall clock is after every marker.
    static let start = "2025-06-01T00:00:00Z"

    struct Ledger {
        let path: String
        let seed: UInt64
        let ndjson: String
        /// Decoded from the NDJSON gen wrote; `events[i]` has seq i + 1 once appended whole.
        let events: [Event]
        let scenario: [String: Any]
    }

    // MARK: Helpers

    func run(_ arguments: [String], stdin: Data? = nil) throws -> CLI.Result {
        try CLI.run(arguments, stdin: stdin)
    }

    /// `gen` then `append`; the events are decoded from the same NDJSON.
    func makeLedger(_ name: String, events count: Int, seed: UInt64, blockEvents: Int = 300, segmentBytes: Int? = nil) throws -> Ledger {
        let scenarioPath = dir + "/\(name)-scenario.json"
        let gen = try run(["gen", "--events", String(count), "--seed", String(seed), "--start", ProjectionCLITests.start, "--scenario", scenarioPath])
        XCTAssertEqual(gen.status, 0, "seed \(seed): gen: \(gen.stderr)")
        let path = dir + "/" + name
        var append = ["append", "--data", path, "--quiet", "--block-events", String(blockEvents)]
        if let segmentBytes { append += ["--segment-bytes", String(segmentBytes)] }
        let r = try run(append, stdin: Data(gen.stdout.utf8))
        XCTAssertEqual(r.status, 0, "seed \(seed): append: \(r.stderr)")
        let decoder = NDJSONDecoder()
        var events = [Event]()
        for (i, line) in gen.stdout.split(separator: "\n").enumerated() {
            events.append(try decoder.decode(line: String(line), lineNumber: i + 1))
        }
        XCTAssertEqual(events.count, count, "seed \(seed)")
        let scenario = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scenarioPath))) as! [String: Any]
        return Ledger(path: path, seed: seed, ndjson: gen.stdout, events: events, scenario: scenario)
    }

    func project(_ events: [Event], through n: Int? = nil, tsMax: Int64? = nil) -> Projection {
        let p = Projection()
        for i in 0..<(n ?? events.count) where tsMax == nil || events[i].ts <= tsMax! { p.apply(events[i], seq: UInt64(i + 1)) }
        return p
    }

    func object(_ text: some StringProtocol, _ context: String, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        guard let o = try? JSONSerialization.jsonObject(with: Data(String(text).utf8)) as? [String: Any] else {
            XCTFail("\(context): not a JSON object: \(text.prefix(300))", file: file, line: line)
            return [:]
        }
        return o
    }

    func lines(_ text: String) -> [Substring] { text.split(separator: "\n", omittingEmptySubsequences: true) }

    /// The summary fields PRODUCT.md requires, compared one by one with the reference.
    func assertSummary(_ stdout: String, _ expected: StateSummary, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        let outLines = lines(stdout)
        XCTAssertEqual(outLines.count, 1, "\(context): --summary is one line", file: file, line: line)
        let o = object(outLines.first ?? "", context, file: file, line: line)
        let want: [String: Int64] = ["seq": Int64(expected.seq), "clock": expected.clock, "events": Int64(expected.events),
                                     "tokens": Int64(expected.tokens), "active": Int64(expected.active), "expired": Int64(expected.expired),
                                     "revoked": Int64(expected.revoked), "superseded": Int64(expected.superseded), "unknown": Int64(expected.unknown)]
        for (key, value) in want.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual((o[key] as? NSNumber)?.int64Value, value, "\(context): \"\(key)\" in \(stdout)", file: file, line: line)
        }
        let anomalies = o["anomalies"] as? [String: Any] ?? [:]
        for kind in AnomalyKind.allCases {
            XCTAssertEqual((anomalies[kind.name] as? NSNumber)?.uint64Value, expected.anomalies[kind] ?? 0, "\(context): anomalies.\(kind.name)", file: file, line: line)
        }
    }

    func segmentFiles(_ ledger: String) throws -> [String: Data] {
        var out = [String: Data]()
        for name in try FileManager.default.contentsOfDirectory(atPath: ledger) where name.hasSuffix(".seg") || name.hasSuffix(".idx") {
            out[name] = try Data(contentsOf: URL(fileURLWithPath: ledger + "/" + name))
        }
        return out
    }

    func head(_ ledger: String) throws -> (UInt64, String) {
        let log = try SegmentLog.open(directory: ledger, options: LogOptions(readOnly: true))
        return (log.lastSeq, log.chainHash.hex)
    }

    func markerSeq(_ ledger: Ledger, _ id: String) -> Int {
        ledger.events.lastIndex { $0.marker == id }! + 1
    }

    // MARK: state

    func testStateSummaryAtHeadSeqTimeAndMarkerMatchesAProjectionOfTheSameNDJSON() throws {
        let seed = genSeed
        var rng = CLIRandom(seed: seed)
        let ledger = try makeLedger("l", events: 8000, seed: seed)
        let events = ledger.events
        let context = "gen seed \(seed)"

        // Head, first with no snapshots (this leaves one at every marker), then from them.
        let full = project(events)
        for pass in ["first", "second"] {
            let r = try run(["state", "--data", ledger.path, "--summary", "--quiet"])
            XCTAssertEqual(r.status, 0, "\(context): \(pass) head: \(r.stderr)")
            assertSummary(r.stdout, full.summary(clock: full.headClock), "\(context): \(pass) head")
        }
        let snapshotNames = (try? FileManager.default.contentsOfDirectory(atPath: ledger.path + "/snapshots")) ?? []
        XCTAssertGreaterThanOrEqual(snapshotNames.filter { $0.hasSuffix(".snap") }.count, 5, "\(context): marker snapshots: \(snapshotNames)")

        // Sequence numbers, most of them below the newest snapshot; 0 and the head too.
        var seqs: [Int] = [0, 1, events.count]
        for _ in 0..<8 { seqs.append(1 + rng.below(events.count)) }
        for n in seqs {
            let r = try run(["state", "--data", ledger.path, "--summary", "--quiet", "--at-seq", String(n)])
            XCTAssertEqual(r.status, 0, "\(context): --at-seq \(n): exit \(r.status) (a signal number if it crashed): \(r.stderr.prefix(400))")
            guard r.status == 0 else { continue }
            let p = project(events, through: n)
            assertSummary(r.stdout, p.summary(clock: p.maxTs ?? 0), "\(context): --at-seq \(n)")
            let plain = try run(["state", "--data", ledger.path, "--summary", "--quiet", "--at-seq", String(n), "--no-snapshots"])
            XCTAssertEqual(plain.stdout, r.stdout, "\(context): --at-seq \(n) with and without snapshots")
        }

        // Times: event times, times between them, before the first event; epoch ms, RFC 3339 in
        // UTC and with an offset all name the same instant.
        let tss = events.map(\.ts)
        var times: [Int64] = [tss.min()! - 1, tss.max()!]
        for _ in 0..<4 { times.append(rng.pick(tss)) }
        for _ in 0..<3 { times.append(rng.between(tss.min()!, tss.max()!)) }
        for t in times {
            let r = try run(["state", "--data", ledger.path, "--summary", "--quiet", "--at-time", String(t)])
            XCTAssertEqual(r.status, 0, "\(context): --at-time \(t): exit \(r.status): \(r.stderr.prefix(400))")
            guard r.status == 0 else { continue }
            assertSummary(r.stdout, project(events, tsMax: t).summary(clock: t), "\(context): --at-time \(t)")
            let utc = Timestamp.formatRFC3339(epochMilliseconds: t)!
            var offset = Timestamp.formatRFC3339(epochMilliseconds: t + 2 * 3_600_000)!
            offset.removeLast()
            offset += "+02:00"
            for text in [utc, offset] {
                let rr = try run(["state", "--data", ledger.path, "--summary", "--quiet", "--at-time", text])
                XCTAssertEqual(rr.status, 0, "\(context): --at-time \(text): \(rr.stderr)")
                XCTAssertEqual(rr.stdout, r.stdout, "\(context): --at-time \(text) is the same instant as \(t)")
            }
        }

        // Every marker: events up to it, clock = its ts.
        let markers = (ledger.scenario["markers"] as! [[String: Any]]).map { $0["marker"] as! String }
        XCTAssertEqual(markers, ["m-0001", "m-0002", "m-0003", "m-0004", "m-0005"], "\(context): the gen story")
        for m in markers {
            let n = markerSeq(ledger, m)
            let r = try run(["state", "--data", ledger.path, "--summary", "--quiet", "--at-marker", m])
            XCTAssertEqual(r.status, 0, "\(context): --at-marker \(m): exit \(r.status): \(r.stderr.prefix(400))")
            guard r.status == 0 else { continue }
            assertSummary(r.stdout, project(events, through: n).summary(clock: events[n - 1].ts), "\(context): --at-marker \(m)")
        }
    }

    func testStatePointOptionsConflictsAndBadValuesAreRefused() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 1500, seed: seed)
        let context = "gen seed \(seed)"
        let usage: [([String], String)] = [
            (["--at-seq", "5", "--at-time", "1000"], "at most one"),
            (["--at-seq", "5", "--at-marker", "m-0001"], "at most one"),
            (["--at-time", "1000", "--at-marker", "m-0001"], "at most one"),
            (["--at-seq", "abc"], "--at-seq"),
            (["--at-seq", "-3"], "--at-seq"),
            (["--at-seq", "1.5"], "--at-seq"),
            (["--at-time", "yesterday"], "--at-time"),
            (["--at-time", "2026-13-45T00:00:00Z"], "--at-time"),
            (["--at-time", ""], "--at-time"),
            (["--format", "xml"], "--format"),
            (["--summary", "--token", "x"], "one of"),
            (["--summary", "--format", "ndjson"], "one of"),
            (["--snapshot-interval", "0"], "--snapshot-interval"),
            (["--rejection-factor", "0.5"], "--rejection-factor"),
            (["--at-seq"], "--at-seq"),
        ]
        for (extra, words) in usage {
            let r = try run(["state", "--data", ledger.path, "--quiet"] + extra)
            XCTAssertEqual(r.status, 2, "\(context): state \(extra.joined(separator: " ")): exit \(r.status), stdout \(r.stdout.prefix(200))")
            XCTAssertTrue(r.stderr.contains(words), "\(context): state \(extra.joined(separator: " ")): message \(r.stderr)")
            XCTAssertTrue(r.stdout.isEmpty, "\(context): state \(extra.joined(separator: " ")) printed \(r.stdout.prefix(200))")
        }
        // Well-formed but not on this ledger: a failure (1), not a usage error.
        let past = try run(["state", "--data", ledger.path, "--quiet", "--summary", "--at-seq", "1501"])
        XCTAssertEqual(past.status, 1, "\(context): --at-seq past the head")
        XCTAssertTrue(past.stderr.contains("past the ledger's head"), "\(context): \(past.stderr)")
        let unknown = try run(["state", "--data", ledger.path, "--quiet", "--summary", "--at-marker", "m-9999"])
        XCTAssertEqual(unknown.status, 1, "\(context): unknown marker")
        XCTAssertTrue(unknown.stderr.contains("unknown marker") && unknown.stderr.contains("m-9999"), "\(context): \(unknown.stderr)")
        XCTAssertTrue(unknown.stderr.contains("m-0001"), "\(context): the message lists known markers: \(unknown.stderr)")
        let none = try run(["state", "--data", dir + "/nothing-here", "--summary"])
        XCTAssertEqual(none.status, 1, "\(context): no ledger")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/nothing-here"), "\(context): state must not create a ledger")
    }

    func testStateTokenFindsARawJWTAndNDJSONListsEveryToken() throws {
        let seed = genSeed
        var rng = CLIRandom(seed: seed ^ 0x70CE)
        let count = 6000
        let ledger = try makeLedger("l", events: count, seed: seed)
        let context = "gen seed \(seed)"
        let p = project(ledger.events)
        let clock = p.headClock

        // The raw JWT gen planted: ingest stored its fingerprint, and the raw value finds it.
        let configuration = WorkloadConfiguration(seed: seed, events: count, startMs: try Timestamp.parse(ProjectionCLITests.start))
        guard let jwt = WorkloadScenario(configuration).rawJWT?.token else { return XCTFail("\(context): gen planted no raw JWT") }
        let fingerprint = TokenFingerprint.normalize(jwt)
        XCTAssertTrue(fingerprint.hasPrefix("sha256:"), "\(context)")
        XCTAssertNotNil(p.token(fingerprint, clock: clock), "\(context): test setup: the JWT's token is on the ledger")
        let byJWT = try run(["state", "--data", ledger.path, "--quiet", "--token", jwt])
        XCTAssertEqual(byJWT.status, 0, "\(context): \(byJWT.stderr)")
        XCTAssertFalse(byJWT.stdout.contains(jwt), "\(context): the raw JWT is echoed back")
        XCTAssertEqual(byJWT.stdout, p.token(fingerprint, clock: clock)!.json + "\n", "\(context): state --token <raw JWT>")

        // Random tokens by id, at the head and at a past sequence number.
        var ids = [String]()
        p.forEachToken(clock: clock) { ids.append($0.id) }
        for _ in 0..<5 {
            let id = rng.pick(ids)
            let r = try run(["state", "--data", ledger.path, "--quiet", "--token", id])
            XCTAssertEqual(r.stdout, p.token(id, clock: clock)!.json + "\n", "\(context): state --token \(id)")
            let n = 1 + rng.below(count)
            let q = project(ledger.events, through: n)
            let at = try run(["state", "--data", ledger.path, "--quiet", "--token", id, "--at-seq", String(n)])
            if let view = q.token(id, clock: q.maxTs ?? 0) {
                XCTAssertEqual(at.status, 0, "\(context): --token \(id) --at-seq \(n): \(at.stderr.prefix(300))")
                XCTAssertEqual(at.stdout, view.json + "\n", "\(context): --token \(id) --at-seq \(n)")
            } else {
                XCTAssertEqual(at.status, 1, "\(context): \(id) is not on the ledger at seq \(n)")
            }
        }
        let missing = try run(["state", "--data", ledger.path, "--quiet", "--token", "no-such-token"])
        XCTAssertEqual(missing.status, 1, "\(context): unknown token")
        XCTAssertTrue(missing.stderr.contains("no-such-token"), "\(context): \(missing.stderr)")

        // Every token, one line each: tokens with a status plus the unknown ones, in ledger order.
        let all = try run(["state", "--data", ledger.path, "--quiet", "--format", "ndjson"])
        XCTAssertEqual(all.status, 0, "\(context): \(all.stderr)")
        let summary = p.summary(clock: clock)
        let outLines = lines(all.stdout)
        XCTAssertEqual(UInt64(outLines.count), summary.tokens + summary.unknown, "\(context): ndjson lines")
        var expected = [String]()
        p.forEachToken(clock: clock) { expected.append($0.json) }
        if let i = (0..<min(outLines.count, expected.count)).first(where: { outLines[$0] != expected[$0] }) {
            XCTFail("\(context): ndjson line \(i + 1): \(outLines[i]) != \(expected[i])")
        }
        var statuses = [String: UInt64]()
        for l in outLines { statuses[object(l, context)["status"] as? String ?? "?", default: 0] += 1 }
        XCTAssertEqual(statuses["active"] ?? 0, summary.active, "\(context)")
        XCTAssertEqual(statuses["unknown"] ?? 0, summary.unknown, "\(context)")
        let table = try run(["state", "--data", ledger.path, "--quiet", "--format", "table"])
        XCTAssertEqual(lines(table.stdout).count, outLines.count + 1, "\(context): table rows + header")
    }

    // MARK: markers

    func testMarkersListEveryMarkerWithItsSeqAndTheHashOfTheBlockEndingThere() throws {
        let seed = genSeed
        var rng = CLIRandom(seed: seed ^ 0x3A4)
        let ledger = try makeLedger("l", events: 4000, seed: seed, blockEvents: 700)
        let context = "gen seed \(seed)"
        // More markers, in the middle of an import batch and of what would be a block.
        var extra = ""
        var ts = ledger.events.map(\.ts).max()! + 1
        var extraMarkers = 0
        for i in 0..<600 {
            ts += Int64(rng.below(20))
            if rng.below(40) == 0 {
                extraMarkers += 1
                extra += "{\"type\":\"\(rng.pick(["deploy", "promote"]))\",\"ts\":\(ts),\"marker\":\"x-\(i)\",\"release\":\"v1.5.\(i)\",\"track\":\"canary\",\"weight\":\(rng.below(101))}\n"
            } else {
                extra += "{\"type\":\"validated\",\"ts\":\(ts),\"token\":\"tok-\(rng.below(50))\",\"release\":\"v1.4.3\",\"track\":\"stable\"}\n"
            }
        }
        XCTAssertGreaterThan(extraMarkers, 3, "\(context): test setup")
        let appended = try run(["append", "--data", ledger.path, "--quiet", "--block-events", String(100 + rng.below(300))], stdin: Data(extra.utf8))
        XCTAssertEqual(appended.status, 0, "\(context): \(appended.stderr)")
        var events = ledger.events
        let decoder = NDJSONDecoder()
        for (i, l) in lines(extra).enumerated() { events.append(try decoder.decode(line: String(l), lineNumber: i + 1)) }
        let expected = project(events).markers
        XCTAssertEqual(expected.count, 5 + extraMarkers, "\(context)")

        let r = try run(["markers", "--data", ledger.path, "--quiet", "--format", "ndjson"])
        XCTAssertEqual(r.status, 0, "\(context): \(r.stderr)")
        let outLines = lines(r.stdout)
        XCTAssertEqual(outLines.count, expected.count, "\(context): one line per marker")
        let log = try SegmentLog.open(directory: ledger.path, options: LogOptions(readOnly: true))
        for (l, m) in zip(outLines, expected) {
            let o = object(l, context)
            let c = "\(context): marker \(m.marker)"
            XCTAssertEqual(o["marker"] as? String, m.marker, c)
            XCTAssertEqual((o["seq"] as? NSNumber)?.uint64Value, m.seq, c)
            XCTAssertEqual((o["ts"] as? NSNumber)?.int64Value, m.ts, c)
            XCTAssertEqual(o["type"] as? String, m.type.name, c)
            XCTAssertEqual(o["release"] as? String, m.release, c)
            XCTAssertEqual(o["track"] as? String, m.track, c)
            XCTAssertEqual((o["weight"] as? NSNumber)?.intValue, m.weight, c)
            XCTAssertEqual(o["time"] as? String, Timestamp.formatRFC3339(epochMilliseconds: m.ts), c)
            // append ends a block at every marker, so the hash "at the marker" is exact.
            XCTAssertEqual((o["chain_seq"] as? NSNumber)?.uint64Value, m.seq, "\(c): chain_seq")
            let block = log.blocks.first { $0.header.lastSeq == m.seq }
            XCTAssertNotNil(block, "\(c): no block ends at the marker")
            XCTAssertEqual(o["chain_hash"] as? String, block?.header.chainHash.hex, "\(c): chain_hash")
        }
        let table = try run(["markers", "--data", ledger.path, "--quiet"])
        XCTAssertEqual(lines(table.stdout).count, expected.count + 1, "\(context): table")
        XCTAssertEqual(try run(["markers", "--data", ledger.path, "--format", "json"]).status, 2, "\(context): bad format")
    }

    // MARK: metrics

    /// Parses the Prometheus text format (0.0.4) strictly enough to catch what `promtool` and
    /// scrapers reject: every family with HELP and TYPE before its samples, samples of a family
    /// together, `name{label="value",...} value` lines, counters named `_total`, no duplicate series.
    fileprivate func parsePrometheus(_ text: String, _ context: String) -> [PromSample] {
        var samples = [PromSample]()
        var help = Set<String>(), types = [String: String](), finished = Set<String>(), series = Set<String>()
        var current: String?
        XCTAssertTrue(text.hasSuffix("\n"), "\(context): exposition ends with a newline")
        func isName(_ s: Substring) -> Bool {
            guard let f = s.first, f.isLetter || f == "_" || f == ":" else { return false }
            return s.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "_" || $0 == ":" }
        }
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let c = "\(context): line \(number + 1) \"\(line.prefix(160))\""
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard parts.count >= 3, parts[0] == "#" else { continue }
                let name = String(parts[2])
                XCTAssertTrue(isName(parts[2]), "\(c): metric name")
                XCTAssertFalse(finished.contains(name) || current == name, "\(c): HELP/TYPE after the family's samples")
                if parts[1] == "HELP" {
                    XCTAssertTrue(help.insert(name).inserted, "\(c): second HELP")
                    XCTAssertTrue(parts.count == 4 && !parts[3].isEmpty, "\(c): empty HELP")
                } else if parts[1] == "TYPE" {
                    XCTAssertNil(types[name], "\(c): second TYPE")
                    let type = parts.count == 4 ? String(parts[3]) : ""
                    XCTAssertTrue(["counter", "gauge", "histogram", "summary", "untyped"].contains(type), "\(c): type \(type)")
                    types[name] = type
                    if type == "counter" { XCTAssertTrue(name.hasSuffix("_total"), "\(c): a counter's name ends in _total") }
                }
                continue
            }
            // name{labels} value
            guard let space = line.lastIndex(of: " ") else { XCTFail("\(c): no value"); continue }
            let valueText = line[line.index(after: space)...]
            var head = line[..<space]
            let value: Double? = switch valueText { case "NaN": .nan; case "+Inf": .infinity; case "-Inf": -.infinity; default: Double(valueText) }
            XCTAssertNotNil(value, "\(c): value")
            var labels = [String: String]()
            if let brace = head.firstIndex(of: "{") {
                XCTAssertTrue(head.hasSuffix("}"), "\(c): labels end with }")
                var rest = Array(head[head.index(after: brace)..<head.index(before: head.endIndex)])
                head = head[..<brace]
                // label="value" separated by commas; values escape \\ \" \n.
                while !rest.isEmpty {
                    guard let eq = rest.firstIndex(of: "=") else { XCTFail("\(c): label without ="); break }
                    let labelName = String(rest[..<eq])
                    XCTAssertTrue(isName(Substring(labelName)) && !labelName.contains(":"), "\(c): label name \(labelName)")
                    guard eq + 1 < rest.count, rest[eq + 1] == "\"" else { XCTFail("\(c): label value not quoted"); break }
                    var i = eq + 2, v = "", closed = false
                    while i < rest.count {
                        let ch = rest[i]
                        if ch == "\\" {
                            guard i + 1 < rest.count, ["\\", "\"", "n"].contains(rest[i + 1]) else { XCTFail("\(c): bad escape"); break }
                            v.append(rest[i + 1] == "n" ? "\n" : rest[i + 1]); i += 2; continue
                        }
                        if ch == "\"" { closed = true; i += 1; break }
                        v.append(ch); i += 1
                    }
                    XCTAssertTrue(closed, "\(c): unterminated label value")
                    XCTAssertNil(labels[labelName], "\(c): label \(labelName) twice")
                    labels[labelName] = v
                    if i < rest.count {
                        XCTAssertEqual(rest[i], ",", "\(c): labels separated by commas")
                        i += 1
                    }
                    rest = Array(rest[min(i, rest.count)...])
                }
            }
            let name = String(head)
            XCTAssertTrue(isName(head), "\(c): metric name")
            XCTAssertTrue(help.contains(name) && types[name] != nil, "\(c): sample before its HELP and TYPE")
            XCTAssertFalse(finished.contains(name), "\(c): the family's samples are split")
            if current != name {
                if let current { finished.insert(current) }
                current = name
            }
            let key = name + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            XCTAssertTrue(series.insert(key).inserted, "\(c): duplicate series")
            samples.append(PromSample(name: name, labels: labels, value: value ?? .nan))
        }
        return samples
    }

    func testMetricsAreValidPrometheusTextAndCountEveryEvent() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 6000, seed: seed)
        let context = "gen seed \(seed)"
        let p = project(ledger.events)
        for (point, n) in [([String](), ledger.events.count), (["--at-marker", "m-0003"], markerSeq(ledger, "m-0003"))] {
            let c = "\(context) \(point.joined(separator: " "))"
            let r = try run(["metrics", "--data", ledger.path, "--quiet"] + point)
            XCTAssertEqual(r.status, 0, "\(c): \(r.stderr.prefix(300))")
            let samples = parsePrometheus(r.stdout, c)
            let events = samples.filter { $0.name == "tokenledger_events_total" }
            XCTAssertEqual(events.reduce(0) { $0 + $1.value }, Double(n), "\(c): events_total sums to the events up to the point")
            for type in EventType.allCases {
                let want = ledger.events[..<n].filter { $0.type == type }.count
                XCTAssertEqual(events.filter { $0.labels["type"] == type.name }.reduce(0) { $0 + $1.value }, Double(want), "\(c): events of type \(type)")
            }
            let byRelease = Dictionary(grouping: events, by: { $0.labels["release"] ?? "" }).mapValues { $0.reduce(0) { $0 + $1.value } }
            for (release, total) in byRelease {
                let want = ledger.events[..<n].filter { ($0.release ?? "") == release }.count
                XCTAssertEqual(total, Double(want), "\(c): events of release \"\(release)\"")
            }
            let q = n == ledger.events.count ? p : project(ledger.events, through: n)
            let clock = n == ledger.events.count ? p.headClock : ledger.events[n - 1].ts
            let summary = q.summary(clock: clock)
            let tokens = Dictionary(uniqueKeysWithValues: samples.filter { $0.name == "tokenledger_tokens" }.map { ($0.labels["status"] ?? "", $0.value) })
            XCTAssertEqual(tokens["active"], Double(summary.active), c)
            XCTAssertEqual(tokens["expired"], Double(summary.expired), c)
            XCTAssertEqual(tokens["revoked"], Double(summary.revoked), c)
            XCTAssertEqual(tokens["superseded"], Double(summary.superseded), c)
            XCTAssertEqual(tokens["unknown"], Double(summary.unknown), c)
            XCTAssertEqual(samples.filter { $0.name == "tokenledger_active_tokens" }.reduce(0) { $0 + $1.value }, Double(summary.active), "\(c): active by release")
            for kind in AnomalyKind.allCases {
                XCTAssertEqual(samples.first { $0.name == "tokenledger_anomalies_total" && $0.labels["kind"] == kind.name }?.value,
                               Double(summary.anomalies[kind] ?? 0), "\(c): anomalies \(kind)")
            }
            XCTAssertEqual(samples.first { $0.name == "tokenledger_head_sequence" }?.value, Double(n), c)
            XCTAssertEqual(samples.first { $0.name == "tokenledger_markers" }?.value, Double(q.markers.count), c)
            XCTAssertEqual(samples.first { $0.name == "tokenledger_clock_seconds" }?.value, Double(clock) / 1000, c)
            XCTAssertEqual(samples.first { $0.name == "tokenledger_ledger_events" }?.value, Double(ledger.events.count), "\(c): the whole ledger")

            if let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool", "/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: promtool)
                process.arguments = ["check", "metrics"]
                let input = Pipe(), output = Pipe()
                process.standardInput = input
                process.standardOutput = output
                process.standardError = output
                try process.run()
                input.fileHandleForWriting.write(Data(r.stdout.utf8))
                try input.fileHandleForWriting.close()
                let said = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                XCTAssertEqual(process.terminationStatus, 0, "\(c): promtool check metrics: \(String(decoding: said, as: UTF8.self))")
            }
        }
        let bad = try run(["metrics", "--data", ledger.path, "--rate-window-ms", "0"])
        XCTAssertEqual(bad.status, 2, "\(context): --rate-window-ms 0")
    }

    // MARK: token

    func testTokenTimelineNDJSONCarriesEveryEventNamingItWithTheStatusAfter() throws {
        let seed = genSeed
        var rng = CLIRandom(seed: seed ^ 0x70)
        let ledger = try makeLedger("l", events: 8000, seed: seed)
        let events = ledger.events
        let context = "gen seed \(seed)"
        let compromised = (ledger.scenario["compromised"] as? [String: Any])?["token"] as? String
        let revalidated = Set(((ledger.scenario["compromised"] as? [String: Any])?["revalidated_seqs"] as? [Int]) ?? [])
        XCTAssertNotNil(compromised, "\(context): gen's compromised key")
        XCTAssertFalse(revalidated.isEmpty, "\(context): gen's compromised key is revalidated")
        var ids = Set([compromised ?? ""])
        let parents = events.compactMap { $0.type == .refreshed ? $0.parent : nil }
        let revoked = events.compactMap { $0.type == .revoked ? $0.token : nil }
        for _ in 0..<2 { ids.insert(rng.pick(parents)); ids.insert(rng.pick(revoked)) }
        var uses = [String: Int]()
        for e in events { if let t = e.token { uses[t, default: 0] += 1 } }
        ids.insert(uses.max { $0.value < $1.value }!.key)

        // One pass of a full projection: the status of each token after each event naming it.
        var expected = [String: [(seq: Int, status: TokenStatus, clock: Int64, type: EventType)]]()
        let p = Projection()
        var clock = Int64.min
        for (i, e) in events.enumerated() {
            p.apply(e, seq: UInt64(i + 1))
            clock = max(clock, e.ts)
            for id in ids where e.token == id || (e.type == .refreshed && e.parent == id) {
                expected[id, default: []].append((i + 1, p.status(of: id, clock: clock)!, clock, e.type))
            }
        }
        for id in ids.sorted() {
            let c = "\(context), token \(id)"
            let r = try run(["token", "--data", ledger.path, "--quiet", "--format", "ndjson", id])
            XCTAssertEqual(r.status, 0, "\(c): \(r.stderr.prefix(300))")
            let steps = lines(r.stdout).map { object($0, c) }
            let want = expected[id] ?? []
            XCTAssertEqual(steps.map { ($0["seq"] as? NSNumber)?.intValue ?? -1 }, want.map(\.seq), "\(c): steps")
            for (o, w) in zip(steps, want) {
                XCTAssertEqual(o["status_after"] as? String, w.status.rawValue, "\(c), seq \(w.seq): status_after")
                XCTAssertEqual((o["clock"] as? NSNumber)?.int64Value, w.clock, "\(c), seq \(w.seq): clock")
                XCTAssertEqual(o["type"] as? String, w.type.name, "\(c), seq \(w.seq): type")
                if id == compromised {
                    XCTAssertEqual(o["anomaly"] as? String, revalidated.contains(w.seq) ? "revoked_validated" : nil, "\(c), seq \(w.seq): anomaly")
                }
            }
            let table = try run(["token", "--data", ledger.path, "--quiet", id])
            XCTAssertTrue(table.stdout.contains("status now   \(p.status(of: id, clock: p.headClock)!.rawValue)"), "\(c): \(table.stdout.prefix(300))")
        }
        let unknown = try run(["token", "--data", ledger.path, "--quiet", "--format", "ndjson", "no-such-token"])
        XCTAssertEqual(unknown.status, 1, "\(context): unknown token")
        XCTAssertTrue(unknown.stdout.isEmpty, "\(context)")
        XCTAssertTrue(unknown.stderr.contains("does not appear"), "\(context): \(unknown.stderr)")
        XCTAssertEqual(try run(["token", "--data", ledger.path, "--quiet"]).status, 2, "\(context): no id")
    }

    // MARK: rollback

    func testRollbackDryRunPrintsThePlanAndChangesNothing() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 8000, seed: seed)
        let context = "gen seed \(seed)"
        let before = try segmentFiles(ledger.path), head = try self.head(ledger.path)
        let p = project(ledger.events)
        for target in ["m-0003", "m-0001", "m-0005"] {
            let r = try run(["rollback", "--data", ledger.path, "--quiet", "--to", target, "--dry-run", "--format", "json"])
            XCTAssertEqual(r.status, 0, "\(context): --to \(target): \(r.stderr.prefix(300))")
            let o = object(r.stdout, context)
            for key in ["marker", "revoke", "kept_known", "unattributed", "stay_revoked"] {
                XCTAssertNotNil(o[key], "\(context): --to \(target): \"\(key)\" in \(r.stdout.prefix(300))")
            }
            let plan = try p.rollbackPlan(to: target, policy: .revoke)
            XCTAssertEqual(r.stdout, plan.json + "\n", "\(context): --to \(target): the plan")
            XCTAssertEqual((o["revoke"] as? [String])?.count, (o["revoke_count"] as? NSNumber)?.intValue, "\(context)")
            if target == "m-0003" { XCTAssertFalse(plan.revoke.isEmpty, "\(context): test setup: the bad canary's tokens are to be revoked") }
        }
        let keep = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-0003", "--dry-run", "--policy", "keep"])
        XCTAssertEqual(keep.stdout, try p.rollbackPlan(to: "m-0003", policy: .keep).json + "\n", "\(context): policy keep")
        let table = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-0003", "--dry-run", "--format", "table"])
        XCTAssertTrue(table.stdout.contains("dry run: nothing appended"), "\(context): \(table.stdout)")
        XCTAssertEqual(try segmentFiles(ledger.path), before, "\(context): a dry run changed the segments")
        let after = try self.head(ledger.path)
        XCTAssertEqual(after.0, head.0, "\(context): head seq")
        XCTAssertEqual(after.1, head.1, "\(context): chain head")
        let verify = try run(["verify", "--data", ledger.path, "--quiet"])
        XCTAssertEqual(verify.status, 0, "\(context): verify after a dry run: \(verify.stdout) \(verify.stderr)")
        for bad in [["--policy", "maybe"], ["--format", "yaml"], []] {
            let r = try run(["rollback", "--data", ledger.path, "--quiet", "--dry-run"] + (bad.isEmpty ? [] : ["--to", "m-0003"]) + bad)
            XCTAssertEqual(r.status, 2, "\(context): rollback \(bad)")
        }
    }

    func testRollbackAppendsTheMarkerAndOneRevocationPerTokenAndASecondOneRevokesNothingNew() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 8000, seed: seed)
        let context = "gen seed \(seed)"
        let p = project(ledger.events)
        let plan = try p.rollbackPlan(to: "m-0003", policy: .revoke)
        XCTAssertFalse(plan.revoke.isEmpty, "\(context): test setup")
        let revokedBefore = p.summary(clock: p.headClock).revoked

        let r = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-0003", "--format", "json"])
        XCTAssertEqual(r.status, 0, "\(context): \(r.stderr.prefix(300))")
        let o = object(r.stdout, context)
        let first = (o["first_seq"] as? NSNumber)?.intValue ?? -1, last = (o["last_seq"] as? NSNumber)?.intValue ?? -1
        XCTAssertEqual(first, ledger.events.count + 1, "\(context): first_seq")
        XCTAssertEqual(last - first + 1, 1 + plan.revoke.count, "\(context): 1 + revoke.count events appended")
        XCTAssertEqual((o["revoked"] as? NSNumber)?.intValue, plan.revoke.count, "\(context)")
        XCTAssertEqual(object(JSONSerialization.string(o["plan"]), context)["revoke"] as? [String], plan.revoke, "\(context): the plan applied")
        let markerID = o["rollback_marker"] as? String
        XCTAssertEqual(markerID, "rollback-\(first)", "\(context)")
        let head = try self.head(ledger.path)
        XCTAssertEqual(head.0, UInt64(last), "\(context): head seq after the rollback")
        XCTAssertEqual(o["chain_hash"] as? String, head.1, "\(context): chain hash reported")

        // What went on the ledger: the marker, then the revocations, in the plan's order.
        let replay = try run(["replay", "--data", ledger.path, "--type", "rollback,revoked", "--from-seq", String(first)])
        let appended = lines(replay.stdout).map { object($0, context) }
        XCTAssertEqual(appended.count, 1 + plan.revoke.count, "\(context): replay of what was appended")
        XCTAssertEqual(appended.first?["type"] as? String, "rollback", "\(context)")
        XCTAssertEqual(appended.first?["marker"] as? String, markerID, "\(context)")
        XCTAssertEqual((appended.first?["attrs"] as? [String: String])?["to_marker"], "m-0003", "\(context)")
        let m3 = ledger.events.first { $0.marker == "m-0003" }!
        XCTAssertEqual(appended.first?["release"] as? String, m3.release, "\(context): the rollback marker restores m-0003's release")
        XCTAssertEqual(appended.dropFirst().map { $0["token"] as? String ?? "" }, plan.revoke, "\(context): revoked tokens")
        XCTAssertTrue(appended.dropFirst().allSatisfy { $0["reason"] as? String == "rollback" && $0["type"] as? String == "revoked" }, "\(context)")
        XCTAssertEqual(appended.map { ($0["seq"] as? NSNumber)?.intValue ?? 0 }, Array(first...last), "\(context): dense seqs")

        for id in plan.revoke.prefix(8) {
            let s = try run(["state", "--data", ledger.path, "--quiet", "--token", id])
            let v = object(s.stdout, "\(context), token \(id)")
            XCTAssertEqual(v["status"] as? String, "revoked", "\(context), token \(id)")
            XCTAssertEqual(v["revocation_reason"] as? String, "rollback", "\(context), token \(id)")
            XCTAssertTrue((first + 1...last).contains((v["revoked_seq"] as? NSNumber)?.intValue ?? 0), "\(context), token \(id)")
        }
        let summary = object(try run(["state", "--data", ledger.path, "--quiet", "--summary"]).stdout, context)
        XCTAssertEqual((summary["revoked"] as? NSNumber)?.uint64Value, revokedBefore + UInt64(plan.revoke.count), "\(context): revoked count")
        XCTAssertEqual((summary["seq"] as? NSNumber)?.intValue, last, "\(context)")

        // Again, to the same marker: the revoked stay revoked, nothing new to revoke.
        let again = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-0003", "--format", "json"])
        XCTAssertEqual(again.status, 0, "\(context): second rollback: \(again.stderr.prefix(300))")
        let a = object(again.stdout, context)
        XCTAssertEqual((a["revoked"] as? NSNumber)?.intValue, 0, "\(context): the second rollback revoked \(a["revoked"] ?? "?")")
        XCTAssertEqual((a["first_seq"] as? NSNumber)?.intValue, last + 1, "\(context)")
        XCTAssertEqual((a["last_seq"] as? NSNumber)?.intValue, last + 1, "\(context): only the marker")
        let stay = (object(JSONSerialization.string(a["plan"]), context)["stay_revoked"] as? NSNumber)?.intValue ?? 0
        XCTAssertGreaterThanOrEqual(stay, plan.stayRevoked + plan.revoke.count, "\(context): stay_revoked includes the first rollback's")
        // A rollback id already used is refused.
        let reused = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-0003", "--id", markerID ?? "x"])
        XCTAssertEqual(reused.status, 1, "\(context): reused rollback id")
        XCTAssertEqual(try self.head(ledger.path).0, UInt64(last + 1), "\(context)")
        let verify = try run(["verify", "--data", ledger.path, "--quiet"])
        XCTAssertEqual(verify.status, 0, "\(context): verify after rollbacks: \(verify.stdout)")
    }

    func testRollbackToAnUnknownMarkerChangesNothing() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 2000, seed: seed)
        let context = "gen seed \(seed)"
        let before = try segmentFiles(ledger.path), head = try self.head(ledger.path)
        let r = try run(["rollback", "--data", ledger.path, "--quiet", "--to", "m-7777"])
        XCTAssertEqual(r.status, 1, "\(context)")
        XCTAssertTrue(r.stderr.contains("unknown marker") && r.stderr.contains("m-7777") && r.stderr.contains("nothing changed"), "\(context): \(r.stderr)")
        XCTAssertTrue(r.stdout.isEmpty, "\(context)")
        XCTAssertEqual(try segmentFiles(ledger.path), before, "\(context)")
        XCTAssertEqual(try self.head(ledger.path).0, head.0, "\(context)")
    }

    /// History before the marker altered in a copy of the ledger: a payload byte flipped in a
    /// sealed (not the last) segment, which opening the ledger does not re-read. The copy keeps
    /// the snapshots written before the change (so the state now comes from a snapshot past the
    /// changed block, and only the chain verification up to the marker can find it); a second
    /// copy without snapshots must fail too (there the replay itself trips on the block).
    func testRollbackRefusesALedgerWhoseHistoryBeforeTheMarkerDoesNotVerify() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 8000, seed: seed, blockEvents: 200, segmentBytes: 65536)
        let context = "gen seed \(seed)"
        let state = try run(["state", "--data", ledger.path, "--quiet", "--summary"])
        XCTAssertEqual(state.status, 0, "\(context): \(state.stderr)")
        let snapshots = try FileManager.default.contentsOfDirectory(atPath: ledger.path + "/snapshots").filter { $0.hasSuffix(".snap") }
        XCTAssertFalse(snapshots.isEmpty, "\(context): snapshots written")

        let log = try SegmentLog.open(directory: ledger.path, options: LogOptions(readOnly: true))
        XCTAssertGreaterThan(log.segments.count, 2, "\(context): test setup: several segments")
        let target = "m-0004"
        let targetSeq = UInt64(markerSeq(ledger, target))
        let block = log.blocks.first { $0.segment == log.segments[0] && $0.header.lastSeq < targetSeq && $0.header.firstSeq > 1 }!
        try? log.close()

        for keepSnapshots in [true, false] {
            let c = "\(context), snapshots \(keepSnapshots ? "kept" : "deleted")"
            let copy = dir + "/copy-\(keepSnapshots)"
            try FileManager.default.copyItem(atPath: ledger.path, toPath: copy)
            if !keepSnapshots { try FileManager.default.removeItem(atPath: copy + "/snapshots") }
            let segment = URL(fileURLWithPath: copy + "/" + block.segment)
            var bytes = try Data(contentsOf: segment)
            bytes[Int(block.offset) + BlockHeader.size + Int(block.header.storedBytes) / 2] ^= 0x04
            try bytes.write(to: segment)
            let before = try segmentFiles(copy), head = try self.head(copy)

            for dryRun in [true, false] {
                let r = try run(["rollback", "--data", copy, "--quiet", "--to", target] + (dryRun ? ["--dry-run"] : []))
                XCTAssertEqual(r.status, 1, "\(c), dry run \(dryRun): exit \(r.status), stdout \(r.stdout.prefix(300))")
                XCTAssertTrue(r.stdout.isEmpty, "\(c), dry run \(dryRun): printed a plan: \(r.stdout.prefix(300))")
                if keepSnapshots {
                    XCTAssertTrue(r.stderr.contains("does not verify"), "\(c), dry run \(dryRun): \(r.stderr)")
                    XCTAssertTrue(r.stderr.contains("seq \(block.header.firstSeq)-\(block.header.lastSeq)"), "\(c), dry run \(dryRun): names the block: \(r.stderr)")
                }
                XCTAssertTrue(r.stderr.contains("nothing changed") || r.stderr.contains("cannot replay"), "\(c), dry run \(dryRun): \(r.stderr)")
                XCTAssertEqual(try segmentFiles(copy), before, "\(c), dry run \(dryRun): segments changed")
                XCTAssertEqual(try self.head(copy).0, head.0, "\(c), dry run \(dryRun): appended")
            }
            XCTAssertEqual(try run(["verify", "--data", copy, "--quiet"]).status, 1, "\(c): verify finds it too")
        }
        // The original is untouched and still rolls back.
        let ok = try run(["rollback", "--data", ledger.path, "--quiet", "--to", target, "--dry-run"])
        XCTAssertEqual(ok.status, 0, "\(context): the original: \(ok.stderr.prefix(300))")
    }

    func testRollbackToTheLatestMarkerRevokesNothingWhenEveryReleaseIsNamed() throws {
        let seed = genSeed
        let ledger = try makeLedger("l", events: 6000, seed: seed)
        let context = "gen seed \(seed)"
        // gen: every token event's release is one a marker names, and the last marker names the last release.
        let markerReleases = Set(ledger.events.filter { $0.type.isMarker }.compactMap(\.release))
        let tokenReleases = Set(ledger.events.filter { !$0.type.isMarker }.compactMap(\.release))
        XCTAssertTrue(tokenReleases.isSubset(of: markerReleases), "\(context): test setup: \(tokenReleases.subtracting(markerReleases))")
        let latest = ledger.events.last { $0.type.isMarker }!.marker!
        let p = project(ledger.events)
        let plan = try p.rollbackPlan(to: latest, policy: .revoke)
        XCTAssertGreaterThan(plan.keptKnown, 0, "\(context): test setup: tokens created after \(latest)")

        let dry = try run(["rollback", "--data", ledger.path, "--quiet", "--to", latest, "--dry-run"])
        XCTAssertEqual(dry.status, 0, "\(context): \(dry.stderr.prefix(300))")
        let o = object(dry.stdout, context)
        XCTAssertEqual(o["revoke"] as? [String], [], "\(context): --to \(latest)")
        XCTAssertEqual((o["kept_known"] as? NSNumber)?.intValue, plan.keptKnown, "\(context)")
        XCTAssertEqual((o["unattributed"] as? NSNumber)?.intValue, plan.unattributed, "\(context)")
        let applied = try run(["rollback", "--data", ledger.path, "--quiet", "--to", latest])
        XCTAssertEqual(applied.status, 0, "\(context): \(applied.stderr.prefix(300))")
        let a = object(applied.stdout, context)
        XCTAssertEqual((a["first_seq"] as? NSNumber)?.intValue, (a["last_seq"] as? NSNumber)?.intValue, "\(context): only the marker appended")
        XCTAssertEqual(try self.head(ledger.path).0, UInt64(ledger.events.count + 1), "\(context)")
    }
}

extension JSONSerialization {
    /// A parsed JSON value back to text (for nested objects).
    static func string(_ value: Any?) -> String {
        guard let value, let data = try? JSONSerialization.data(withJSONObject: value) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
