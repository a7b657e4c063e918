import Foundation
import Glibc
import LedgerServer
import XCTest

/// The HTTP API (PROTOCOL.md "HTTP API") of a real `tokenledger serve --http 127.0.0.1:0`,
/// spoken to by curl.
final class HTTPTests: XCTestCase {
    static let curl = ["/usr/bin/curl", "/usr/local/bin/curl", "/bin/curl"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Event times near the wall clock, so "active" (live clock = the later of the wall clock
    /// and the head's) means what the test says. Taken as each test starts: XCTest makes every
    /// test case object when the run begins, minutes earlier in a full run.
    var now: Int64 = 0

    override func setUp() {
        super.setUp()
        now = Int64(Date().timeIntervalSince1970 * 1000)
    }
    static let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLWJ5dGVz"

    /// A small story: a stable release v1 (marker m-1), tokens issued, one revoked and then
    /// validated again (an anomaly), a canary v2 (marker m-2) that rejects a third of its
    /// validations and issues tok-c.
    func ledgerLines() -> [String] {
        var lines = [String]()
        func add(_ ts: Int64, _ fields: String) { lines.append("{\"ts\":\(ts),\(fields)}") }
        let t0 = now - 600_000
        add(t0, "\"type\":\"deploy\",\"marker\":\"m-1\",\"release\":\"v1\",\"track\":\"stable\",\"weight\":100")
        add(t0 + 1, "\"type\":\"issued\",\"token\":\"tok-a\",\"sub\":\"alice\",\"client_id\":\"web\",\"token_type\":\"access\",\"scope\":\"openid orders:read\",\"exp\":\(now + 3_600_000),\"release\":\"v1\",\"track\":\"stable\"")
        add(t0 + 2, "\"type\":\"issued\",\"token\":\"\(Self.jwt)\",\"sub\":\"bob\",\"client_id\":\"cli\",\"exp\":\(now + 3_600_000),\"release\":\"v1\",\"track\":\"stable\"")
        add(t0 + 3, "\"type\":\"issued\",\"token\":\"tok-r\",\"sub\":\"carol\",\"exp\":\(now + 3_600_000),\"release\":\"v1\",\"track\":\"stable\"")
        add(t0 + 4, "\"type\":\"revoked\",\"token\":\"tok-r\",\"reason\":\"logout\",\"release\":\"v1\",\"track\":\"stable\"")
        add(t0 + 5, "\"type\":\"validated\",\"token\":\"tok-r\",\"release\":\"v1\",\"track\":\"stable\",\"gateway\":\"gw-1\"")
        for i in 0..<200 { add(t0 + 10 + Int64(i), "\"type\":\"validated\",\"token\":\"tok-a\",\"release\":\"v1\",\"track\":\"stable\",\"gateway\":\"gw-1\"") }
        for i in 0..<4 { add(t0 + 300 + Int64(i), "\"type\":\"rejected\",\"token\":\"tok-a\",\"reason\":\"expired\",\"release\":\"v1\",\"track\":\"stable\",\"gateway\":\"gw-1\"") }
        let t1 = now - 300_000
        add(t1, "\"type\":\"deploy\",\"marker\":\"m-2\",\"release\":\"v2\",\"track\":\"canary\",\"weight\":10")
        add(t1 + 1, "\"type\":\"issued\",\"token\":\"tok-c\",\"sub\":\"dave\",\"exp\":\(now + 3_600_000),\"release\":\"v2\",\"track\":\"canary\"")
        for i in 0..<150 {
            let type = i % 3 == 0 ? "rejected\",\"reason\":\"invalid_signature" : "validated"
            add(t1 + 10 + Int64(i), "\"type\":\"\(type)\",\"token\":\"tok-c\",\"release\":\"v2\",\"track\":\"canary\",\"gateway\":\"gw-2\"")
        }
        return lines
    }

    func testEveryEndpointAgainstARealServer() throws {
        guard Self.curl != nil else { throw XCTSkip("curl is not installed: the HTTP tests speak HTTP with curl (apt-get install curl)") }
        let dir = CLI.temporaryDirectory("http")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/ledger"
        let lines = ledgerLines()
        let imported = try CLI.run(["append", "--data", data], stdin: Data((lines.joined(separator: "\n") + "\n").utf8))
        XCTAssertEqual(imported.status, 0, imported.stderr)
        let adminKey = "admin-key-0123456789abcdef"
        try (adminKey + "\n").write(toFile: dir + "/admin.key", atomically: true, encoding: .utf8)
        try "digest-secret-0123456789abcdef\n".write(toFile: dir + "/digest.key", atomically: true, encoding: .utf8)
        let server = try HTTPServerProcess(directory: data, arguments: ["--admin-key-file", dir + "/admin.key", "--digest-key", dir + "/digest.key"])
        defer { server.killIfRunning() }
        let head = UInt64(lines.count)

        // Health and metrics.
        var r = try server.request("GET", "/healthz")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["status"] as? String, "ok")
        XCTAssertEqual((r.json?["head_seq"] as? NSNumber)?.uint64Value, head)
        XCTAssertEqual((r.json?["chain_hash"] as? String)?.count, 64)
        r = try server.request("GET", "/metrics")
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true, "\(r.headers)")
        for family in ["tokenledger_events_total{", "tokenledger_tokens{status=\"active\"}", "tokenledger_anomalies_total{kind=\"revoked_validated\"} 1",
                       "tokenledger_ingest_duration_seconds_bucket{le=\"+Inf\"}", "tokenledger_fsync_duration_seconds_count",
                       "tokenledger_ledger_bytes ", "tokenledger_ledger_events \(head)",
                       "tokenledger_segments_prepared_total ", "tokenledger_segment_preparations_failed_total 0"] {
            XCTAssertTrue(r.text.contains(family), "/metrics lacks \(family)")
        }
        XCTAssertFalse(r.text.contains("tok-a") || r.text.contains("alice"), "no token or user id may be a label value")
        try promtoolCheck(r.body)

        // Token state: RFC 7662's "active", a raw JWT found by its fingerprint.
        r = try server.request("GET", "/v1/tokens/tok-a")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["status"] as? String, "active")
        XCTAssertEqual(r.json?["active"] as? Bool, true)
        XCTAssertEqual(r.json?["sub"] as? String, "alice")
        XCTAssertEqual((r.json?["use_count"] as? NSNumber)?.intValue, 200)
        XCTAssertEqual(r.json?["scope"] as? String, "openid orders:read", r.text)
        r = try server.request("GET", "/v1/tokens/tok-r")
        XCTAssertEqual(r.json?["status"] as? String, "revoked")
        XCTAssertEqual(r.json?["active"] as? Bool, false)
        r = try server.request("GET", "/v1/tokens/" + Self.jwt)
        XCTAssertEqual(r.status, 200, r.text)
        let fingerprint = try XCTUnwrap(r.json?["token"] as? String)
        XCTAssertTrue(fingerprint.hasPrefix("sha256:"), fingerprint)
        XCTAssertFalse(r.text.contains(Self.jwt), "the raw token is never echoed")
        r = try server.request("GET", "/v1/tokens/no-such-token")
        XCTAssertEqual(r.status, 404)
        XCTAssertTrue((r.json?["error"] as? String)?.contains("no-such-token") == true, r.text)

        // Introspection (form-encoded, RFC 7662).
        r = try server.request("POST", "/v1/introspect", body: "token=tok-a&token_type_hint=access_token")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["active"] as? Bool, true)
        XCTAssertEqual(r.json?["sub"] as? String, "alice")
        XCTAssertEqual(r.json?["client_id"] as? String, "web")
        XCTAssertEqual(r.json?["token_type"] as? String, "access")
        XCTAssertEqual(r.json?["scope"] as? String, "openid orders:read", r.text)
        XCTAssertEqual((r.json?["exp"] as? NSNumber)?.int64Value, (now + 3_600_000) / 1000)
        XCTAssertEqual((r.json?["iat"] as? NSNumber)?.int64Value, (now - 600_000 + 1) / 1000)
        for inactive in ["tok-r", "no-such-token"] {
            r = try server.request("POST", "/v1/introspect", body: "token=" + inactive)
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.text.trimmingCharacters(in: .whitespacesAndNewlines), "{\"active\":false}", inactive)
        }
        r = try server.request("POST", "/v1/introspect", body: "token=" + Self.jwt)
        XCTAssertEqual(r.json?["active"] as? Bool, true, r.text)
        XCTAssertEqual(r.json?["sub"] as? String, "bob")
        XCTAssertNil(r.json?["scope"], "issued without a scope, introspected without one: \(r.text)")
        r = try server.request("POST", "/v1/introspect", body: "token_type_hint=access_token")
        XCTAssertEqual(r.status, 400)
        XCTAssertTrue(r.errorMessage.contains("token"), r.text)
        r = try server.request("POST", "/v1/introspect", headers: ["Content-Type: application/json"], body: "{\"token\":\"tok-a\"}")
        XCTAssertEqual(r.status, 415, r.text)
        r = try server.request("GET", "/v1/introspect")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(r.headers["allow"], "POST")

        // Forensic queries: filters, pages without gap or duplicate, bad parameters.
        r = try server.request("GET", "/v1/events?token=tok-r")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.headers["content-type"], "application/x-ndjson")
        XCTAssertEqual(r.lines.map { $0["type"] as? String }, ["issued", "revoked", "validated"])
        XCTAssertEqual(r.lines.map { ($0["seq"] as? NSNumber)?.intValue }, [4, 5, 6])
        XCTAssertNil(r.headers["x-next-from-seq"])
        XCTAssertEqual(r.headers["x-head-seq"], String(head))
        r = try server.request("GET", "/v1/events?token=" + Self.jwt)
        XCTAssertEqual(r.lines.count, 1)
        XCTAssertEqual(r.lines.first?["token"] as? String, fingerprint)
        r = try server.request("GET", "/v1/events?type=rejected&release=v2&gateway=gw-2&since=\(now - 300_000)")
        XCTAssertEqual(r.lines.count, 50)
        r = try server.request("GET", "/v1/events?type=issued,revoked&token=tok-r")
        XCTAssertEqual(r.lines.count, 2)
        r = try server.request("GET", "/v1/events?sub=carol")
        XCTAssertEqual(r.lines.map { $0["type"] as? String }, ["issued"], "sub filters on the event's own field")
        var pages = [Int](), from = 1, requests = 0
        while requests < 100 {
            requests += 1
            let page = try server.request("GET", "/v1/events?type=issued&type=deploy&limit=2&from_seq=\(from)")
            XCTAssertEqual(page.status, 200, page.text)
            pages += page.lines.compactMap { ($0["seq"] as? NSNumber)?.intValue }
            guard let next = page.headers["x-next-from-seq"].flatMap(Int.init) else { break }
            XCTAssertEqual(page.lines.count, 2)
            from = next
        }
        let all = try server.request("GET", "/v1/events?type=issued,deploy").lines.compactMap { ($0["seq"] as? NSNumber)?.intValue }
        XCTAssertEqual(pages, all)
        XCTAssertEqual(all.count, 6)
        for (query, parameter) in [("type=bogus", "type"), ("since=yesterday", "since"), ("limit=0", "limit"), ("limit=10001", "limit"),
                                   ("from_seq=0", "from_seq"), ("from_seq=-1", "from_seq"), ("tokne=tok-a", "tokne"), ("token=", "token"),
                                   ("sub=a&sub=b", "sub"), ("since=\(now)&until=\(now - 1)", "since")] {
            r = try server.request("GET", "/v1/events?" + query)
            XCTAssertEqual(r.status, 400, query)
            XCTAssertTrue(r.errorMessage.contains(parameter), "\(query): \(r.text)")
        }

        // Markers, state at points, alerts, digest.
        r = try server.request("GET", "/v1/markers")
        let markers = try XCTUnwrap(r.json?["markers"] as? [[String: Any]])
        XCTAssertEqual(markers.map { $0["marker"] as? String }, ["m-1", "m-2"])
        XCTAssertEqual((markers[0]["chain_hash"] as? String)?.count, 64)
        r = try server.request("GET", "/v1/state")
        XCTAssertEqual(r.status, 200, r.text)
        let cliSummary = try CLI.run(["state", "--data", data, "--summary", "--quiet"])
        XCTAssertEqual(r.text.trimmingCharacters(in: .whitespacesAndNewlines), cliSummary.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        for (query, expected) in [("at_marker=m-2", ["state", "--at-marker", "m-2"]), ("at_seq=5", ["state", "--at-seq", "5"]),
                                  ("at_time=\(now - 400_000)", ["state", "--at-time", String(now - 400_000)])] {
            r = try server.request("GET", "/v1/state?" + query)
            XCTAssertEqual(r.status, 200, "\(query): \(r.text)")
            let cli = try CLI.run(expected + ["--data", data, "--summary", "--quiet", "--no-snapshots"])
            XCTAssertEqual(r.text.trimmingCharacters(in: .whitespacesAndNewlines), cli.stdout.trimmingCharacters(in: .whitespacesAndNewlines), query)
        }
        for (query, status, parameter) in [("at_seq=abc", 400, "at_seq"), ("at_seq=1&at_marker=m-1", 400, "at most one"),
                                           ("at_marker=m-9", 404, "m-9"), ("at_seq=\(head + 1)", 400, "at_seq"), ("at_time=soon", 400, "at_time")] {
            r = try server.request("GET", "/v1/state?" + query)
            XCTAssertEqual(r.status, status, query)
            XCTAssertTrue(r.errorMessage.contains(parameter), "\(query): \(r.text)")
        }
        r = try server.request("GET", "/v1/alerts?from_seq=1")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.lines.first?["anomaly"] as? String, "revoked_validated")
        XCTAssertEqual(r.lines.first?["token"] as? String, "tok-r")
        XCTAssertEqual(try server.request("GET", "/v1/alerts?from_seq=7").lines.filter { $0["anomaly"] as? String == "revoked_validated" }.count, 0)
        XCTAssertEqual(try server.request("GET", "/v1/alerts?from_seq=x").status, 400)
        r = try server.request("GET", "/v1/digest")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual((r.json?["seq"] as? NSNumber)?.uint64Value, head)
        try r.body.write(to: URL(fileURLWithPath: dir + "/head.json"))
        let verified = try CLI.run(["verify", "--data", data, "--digest", dir + "/head.json", "--key", dir + "/digest.key"])
        XCTAssertEqual(verified.status, 0, verified.stdout + verified.stderr)

        // Canary analysis: v2 rejects a third of its validations against v1's 2%.
        r = try server.request("GET", "/v1/analysis/canary?canary=v2&stable=v1&window_ms=3600000")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["ok"] as? Bool, false)
        XCTAssertEqual(r.json?["verdict"] as? String, "fail")
        let c = try XCTUnwrap(r.json?["canary"] as? [String: Any]), s = try XCTUnwrap(r.json?["stable"] as? [String: Any])
        XCTAssertEqual((c["rejected"] as? NSNumber)?.intValue, 50)
        XCTAssertEqual((c["samples"] as? NSNumber)?.intValue, 150)
        XCTAssertEqual((s["samples"] as? NSNumber)?.intValue, 205)
        XCTAssertEqual((s["anomalies"] as? NSNumber)?.intValue, 1)
        r = try server.request("GET", "/v1/analysis/canary?canary=v1&stable=v1&window_ms=3600000")
        XCTAssertEqual(r.json?["verdict"] as? String, "pass", r.text)
        r = try server.request("GET", "/v1/analysis/canary?canary=v2&stable=v1&window_ms=3600000&min_samples=1000")
        XCTAssertEqual(r.json?["verdict"] as? String, "inconclusive", r.text)
        // Flagger: a POST webhook with the parameters as metadata; non-2xx fails the step.
        r = try server.request("POST", "/v1/analysis/canary", headers: ["Content-Type: application/json"],
                               body: "{\"name\":\"api\",\"namespace\":\"prod\",\"phase\":\"Progressing\",\"metadata\":{\"canary\":\"v2\",\"stable\":\"v1\",\"window_ms\":\"3600000\"}}")
        XCTAssertEqual(r.status, 412, r.text)
        r = try server.request("POST", "/v1/analysis/canary?canary=v1&stable=v1&window_ms=3600000")
        XCTAssertEqual(r.status, 200, r.text)
        for query in ["stable=v1", "canary=v2&stable=v1&window_ms=10", "canary=v2&stable=v1&factor=0.5"] {
            XCTAssertEqual(try server.request("GET", "/v1/analysis/canary?" + query).status, 400, query)
        }

        // Routing, methods, sizes.
        r = try server.request("GET", "/v2/nothing")
        XCTAssertEqual(r.status, 404)
        XCTAssertFalse(r.errorMessage.isEmpty)
        r = try server.request("POST", "/healthz", body: "x=1")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(r.headers["allow"], "GET, HEAD")
        XCTAssertEqual(try server.request("GET", "/v1/rollback").status, 405)
        let big = "token=" + String(repeating: "a", count: 100_000)
        r = try server.request("POST", "/v1/introspect", body: big)
        XCTAssertEqual(r.status, 413)
        XCTAssertTrue(r.errorMessage.contains("limit"), r.text)
        r = try server.request("POST", "/v1/introspect", headers: ["Transfer-Encoding: chunked"], body: big)
        XCTAssertEqual(r.status, 413, "a chunked body over the limit")
        r = try server.request("GET", "/v1/events?token=" + String(repeating: "x", count: 100_000))
        XCTAssertTrue([414, 431].contains(r.status), "an oversized request line: \(r.status)")
        XCTAssertEqual(try server.request("GET", "/healthz").status, 200, "the server still answers")

        // Rollback: the admin key or nothing changes.
        let body = "{\"to\":\"m-1\",\"policy\":\"revoke\",\"dry_run\":true}"
        for auth in [[], ["Authorization: Bearer wrong-key-0123456789abcdef"], ["Authorization: Basic YWRtaW46YWRtaW4="], ["Authorization: Bearer"]] {
            r = try server.request("POST", "/v1/rollback", headers: auth, body: body.replacingOccurrences(of: "true", with: "false"))
            XCTAssertEqual(r.status, 401, "\(auth): \(r.text)")
            XCTAssertNotNil(r.headers["www-authenticate"])
            XCTAssertTrue(r.errorMessage.contains("nothing changed"), r.text)
        }
        XCTAssertFalse(server.stderr.contains("wrong-key-0123456789abcdef"), "a presented key is never logged")
        XCTAssertEqual((try server.request("GET", "/healthz").json?["head_seq"] as? NSNumber)?.uint64Value, head, "nothing appended")
        XCTAssertEqual(try server.request("GET", "/v1/tokens/tok-c").json?["status"] as? String, "active")
        let admin = ["Authorization: Bearer " + adminKey]
        for (bad, status) in [("{\"to\":1}", 400), ("[]", 400), ("{\"to\":\"m-1\",\"policy\":\"maybe\"}", 400), ("{\"to\":\"m-1\",\"extra\":1}", 400),
                              ("{\"to\":\"m-1\",\"dry_run\":\"no\"}", 400), ("{\"to\":\"m-9\",\"dry_run\":false}", 404)] {
            XCTAssertEqual(try server.request("POST", "/v1/rollback", headers: admin, body: bad).status, status, bad)
        }
        r = try server.request("POST", "/v1/rollback", headers: admin, body: body)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["dry_run"] as? Bool, true)
        XCTAssertEqual((r.json?["plan"] as? [String: Any])?["revoke"] as? [String], ["tok-c"])
        XCTAssertEqual((try server.request("GET", "/healthz").json?["head_seq"] as? NSNumber)?.uint64Value, head, "a dry run appends nothing")
        r = try server.request("POST", "/v1/rollback", headers: admin, body: "{\"to\":\"m-1\",\"dry_run\":false,\"id\":\"rb-http\"}")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["dry_run"] as? Bool, false)
        XCTAssertEqual(r.json?["rollback_marker"] as? String, "rb-http")
        XCTAssertEqual((r.json?["revoked"] as? NSNumber)?.intValue, 1)
        XCTAssertEqual((r.json?["last_seq"] as? NSNumber)?.uint64Value, head + 2)
        r = try server.request("GET", "/v1/tokens/tok-c")
        XCTAssertEqual(r.json?["status"] as? String, "revoked", r.text)
        XCTAssertEqual(r.json?["revocation_reason"] as? String, "rollback")
        XCTAssertEqual(try server.request("GET", "/v1/markers").json.flatMap { ($0["markers"] as? [[String: Any]])?.last?["marker"] as? String }, "rb-http")
        XCTAssertEqual(try server.request("POST", "/v1/rollback", headers: admin, body: "{\"to\":\"m-1\",\"dry_run\":false,\"id\":\"rb-http\"}").status, 409,
                       "a marker id already on the ledger")

        // Live: an event sent over TCP is answered over HTTP once committed.
        let gateway = try TestConnection(server.endpoint)
        let sent = Int64(Date().timeIntervalSince1970 * 1000)
        try gateway.write(Array("{\"type\":\"issued\",\"ts\":\(sent),\"token\":\"tok-live\",\"sub\":\"erin\",\"exp\":\(sent + 600_000)}\n".utf8))
        gateway.shutdownWrite()
        _ = try gateway.readToEnd()
        var live = try server.request("POST", "/v1/introspect", body: "token=tok-live")
        for _ in 0..<200 where live.json?["active"] as? Bool != true {
            usleep(20_000)
            live = try server.request("POST", "/v1/introspect", body: "token=tok-live")
        }
        XCTAssertEqual(live.json?["sub"] as? String, "erin", live.text)
        XCTAssertEqual(server.terminate(), 0, server.stderr)
    }

    /// `/v1/events?token=` answers from the server's token index: the same lines as `tokenledger
    /// replay --token`, whole, in pages and filtered, on a server that received several thousand
    /// events over several connections, and again after more arrived (the index follows).
    func testTokenEventsFromTheIndexEqualReplay() throws {
        guard Self.curl != nil else { throw XCTSkip("curl is not installed: the HTTP tests speak HTTP with curl (apt-get install curl)") }
        let dir = CLI.temporaryDirectory("http-index")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/ledger"
        let server = try HTTPServerProcess(directory: data, arguments: [])
        defer { server.killIfRunning() }
        var sent = 0
        func send(connections: Int, perConnection: Int, round: Int) throws {
            let conns = try (0..<connections).map { _ in try TestConnection(server.endpoint) }
            let types = ["validated", "validated", "rejected", "issued", "refreshed", "revoked"]
            for chunk in 0..<5 {
                for (c, conn) in conns.enumerated() {
                    var text = ""
                    for i in 0..<(perConnection / 5) {
                        let k = (round * 7919 + chunk * 131 + c * 17 + i * 13) % 997
                        let type = types[k % types.count]
                        var line = "{\"type\":\"\(type)\",\"ts\":\(now - 100_000 + Int64(sent)),\"token\":\"tok-\(k % 37)\",\"sub\":\"user-\(k % 5)\",\"gateway\":\"gw-\(c)\",\"release\":\"v\(k % 3)\""
                        if type == "refreshed" { line += ",\"parent\":\"tok-\((k + 1) % 37)\"" }
                        if type == "rejected" { line += ",\"reason\":\"expired\"" }
                        text += line + "}\n"
                        sent += 1
                    }
                    try conn.write(Array(text.utf8))
                }
            }
            for conn in conns { conn.shutdownWrite() }
            for conn in conns { _ = try conn.readToEnd() }
            var head: UInt64 = 0
            for _ in 0..<500 {
                head = (try server.request("GET", "/healthz").json?["head_seq"] as? NSNumber)?.uint64Value ?? 0
                if head == UInt64(sent) { break }
                usleep(20_000)
            }
            XCTAssertEqual(head, UInt64(sent), "every event committed")
        }
        func check(_ context: String) throws {
            for k in [0, 1, 5, 11, 23, 36] {
                let id = "tok-\(k)"
                let c = "\(context), \(id)"
                let replay = try CLI.run(["replay", "--data", data, "--token", id])
                XCTAssertEqual(replay.status, 0, replay.stderr)
                let whole = try server.request("GET", "/v1/events?token=\(id)&limit=10000")
                XCTAssertEqual(whole.status, 200, whole.text)
                XCTAssertEqual(whole.text, replay.stdout, c)
                XCTAssertGreaterThan(whole.lines.count, 20, "\(c): test setup")
                // Pages of 7, following X-Next-From-Seq, make up the whole answer.
                var pages = "", from = 1, requests = 0
                while requests < 1000 {
                    requests += 1
                    let page = try server.request("GET", "/v1/events?token=\(id)&limit=7&from_seq=\(from)")
                    XCTAssertEqual(page.status, 200, page.text)
                    pages += page.text
                    guard let next = page.headers["x-next-from-seq"].flatMap(Int.init) else { break }
                    XCTAssertEqual(page.lines.count, 7, c)
                    from = next
                }
                XCTAssertEqual(pages, replay.stdout, "\(c): pages")
                let filtered = try server.request("GET", "/v1/events?token=\(id)&type=validated,revoked&gateway=gw-1&sub=user-\(k % 5)&limit=10000")
                let replayFiltered = try CLI.run(["replay", "--data", data, "--token", id, "--type", "validated,revoked", "--gateway", "gw-1", "--sub", "user-\(k % 5)"])
                XCTAssertEqual(filtered.text, replayFiltered.stdout, "\(c): filtered")
                let middle = (whole.lines.dropFirst(whole.lines.count / 2).first?["seq"] as? NSNumber)?.intValue ?? 1
                let tail = try server.request("GET", "/v1/events?token=\(id)&from_seq=\(middle)&limit=10000")
                let replayTail = try CLI.run(["replay", "--data", data, "--token", id, "--from-seq", String(middle)])
                XCTAssertEqual(tail.text, replayTail.stdout, "\(c): from_seq \(middle)")
            }
        }
        try send(connections: 4, perConnection: 1000, round: 0)
        try check("after 4000 events")
        try send(connections: 3, perConnection: 1000, round: 1)
        try check("after 7000 events")
        XCTAssertEqual(server.terminate(), 0, server.stderr)
    }

    func testWithoutAdminKeyOrLiveState() throws {
        guard Self.curl != nil else { throw XCTSkip("curl is not installed: the HTTP tests speak HTTP with curl (apt-get install curl)") }
        let dir = CLI.temporaryDirectory("http-off")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try HTTPServerProcess(directory: dir + "/ledger", arguments: ["--no-alerts"])
        defer { server.killIfRunning() }
        var r = try server.request("POST", "/v1/rollback", headers: ["Authorization: Bearer anything-at-all-0123"], body: "{\"to\":\"m-1\"}")
        XCTAssertEqual(r.status, 403, r.text)
        r = try server.request("GET", "/v1/tokens/tok-a")
        XCTAssertEqual(r.status, 503, r.text)
        r = try server.request("GET", "/v1/digest")
        XCTAssertEqual(r.status, 404, r.text)
        XCTAssertTrue(r.errorMessage.contains("--digest-key"), r.text)
        r = try server.request("GET", "/healthz")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual((r.json?["head_seq"] as? NSNumber)?.intValue, 0)
        r = try server.request("GET", "/v1/events")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body.count, 0)
        XCTAssertEqual(server.terminate(), 0, server.stderr)
    }

    private func promtoolCheck(_ text: Data) throws {
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool", "/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("HTTPTests: promtool not found, skipping `promtool check metrics` on /metrics (tools/test installs it)")
            return
        }
        let result = try runProcess(promtool, ["check", "metrics"], stdin: text)
        XCTAssertEqual(result.status, 0, "promtool check metrics on /metrics: \(String(decoding: result.output, as: UTF8.self))")
    }
}

struct HTTPReply {
    let status: Int
    /// Lowercased names.
    let headers: [String: String]
    let body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] }
    var errorMessage: String { (json?["error"] as? String) ?? "" }
    var lines: [[String: Any]] {
        text.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }
}

func runProcess(_ path: String, _ arguments: [String], stdin: Data?) throws -> (status: Int32, output: Data) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = out
    process.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try process.run()
    nonisolated(unsafe) var data = Data()
    let group = DispatchGroup()
    group.enter(); DispatchQueue.global().async { data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try input.fileHandleForWriting.close()
    }
    process.waitUntilExit()
    group.wait()
    return (process.terminationStatus, data)
}

/// `tokenledger serve --listen 127.0.0.1:0 --http 127.0.0.1:0`: stdout's first lines are
/// "listening HOST:PORT" and "http HOST:PORT".
final class HTTPServerProcess: @unchecked Sendable {
    let process = Process()
    private(set) var port: UInt16 = 0
    private(set) var httpPort: UInt16 = 0
    private let lock = NSCondition()
    private var stdoutData = Data()
    private var stderrData = Data()

    init(directory: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["serve", "--data", directory, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        for (handle, isOut) in [(out.fileHandleForReading, true), (err.fileHandleForReading, false)] {
            Thread.detachNewThread { [self] in
                while true {
                    let d = handle.availableData
                    lock.lock()
                    if isOut { stdoutData.append(d) } else { stderrData.append(d) }
                    lock.broadcast()
                    lock.unlock()
                    if d.isEmpty { return }
                }
            }
        }
        let deadline = Date().addingTimeInterval(30)
        lock.lock()
        while String(decoding: stdoutData, as: UTF8.self).split(separator: "\n").count < 2 && process.isRunning && lock.wait(until: deadline) {}
        let lines = String(decoding: stdoutData, as: UTF8.self).split(separator: "\n").map(String.init)
        lock.unlock()
        func portAfter(_ prefix: String) -> UInt16? { lines.first { $0.hasPrefix(prefix) }.flatMap { UInt16($0.dropFirst(prefix.count)) } }
        guard let p = portAfter("listening 127.0.0.1:"), let h = portAfter("http 127.0.0.1:") else {
            killIfRunning()
            throw TestFailure("serve did not print \"listening 127.0.0.1:PORT\" and \"http 127.0.0.1:PORT\"; stdout: \(lines); stderr: \(stderr)")
        }
        port = p
        httpPort = h
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }
    var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: stderrData, as: UTF8.self) }

    /// One request with curl. A body is sent as given (curl's default type is form-encoded).
    func request(_ method: String, _ path: String, headers: [String] = [], body: String? = nil) throws -> HTTPReply {
        guard let curl = HTTPTests.curl else { throw TestFailure("curl is not installed") }
        var args = ["-s", "-S", "-i", "--max-time", "30", "-X", method, "-H", "Expect:"]
        for h in headers { args += ["-H", h] }
        if body != nil { args += ["--data-binary", "@-"] }
        args.append("http://127.0.0.1:\(httpPort)\(path)")
        let (status, output) = try runProcess(curl, args, stdin: body.map { Data($0.utf8) })
        guard status == 0 else { throw TestFailure("curl \(method) \(path.prefix(100)) failed (\(status)): \(String(decoding: output.prefix(300), as: UTF8.self))") }
        guard let split = output.range(of: Data("\r\n\r\n".utf8)) else { throw TestFailure("no header end in \(String(decoding: output.prefix(300), as: UTF8.self))") }
        let head = String(decoding: output[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusCode = head.first.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? 0
        var fields = [String: String]()
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return HTTPReply(status: statusCode, headers: fields, body: Data(output[split.upperBound...]))
    }

    func terminate(timeout: TimeInterval = 20) -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { killIfRunning(); return nil }
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    func killIfRunning() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
