import Foundation
import LedgerModel
import LedgerStorage
import XCTest

/// The CLI as a user drives it: real processes, real files, exit codes and messages.
final class CLITests: XCTestCase {
    var dir = ""

    override func setUp() { dir = CLI.temporaryDirectory("cli") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func gen(_ n: Int, seed: Int = 3) throws -> String {
        let r = try CLI.run(["gen", "--events", String(n), "--seed", String(seed)])
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout
    }

    func testGenIsDeterministicAndAppendReplayRoundTrips() throws {
        let a = try gen(3000), b = try gen(3000)
        XCTAssertEqual(a, b, "same seed must give the same bytes")
        XCTAssertNotEqual(a, try gen(3000, seed: 4))
        let ledger = dir + "/l"
        let r = try CLI.run(["append", "--data", ledger, "--quiet"], stdin: Data(a.utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("imported 3000 events (seq 1-3000)"), r.stdout)

        let replay = try CLI.run(["replay", "--data", ledger])
        XCTAssertEqual(replay.status, 0, replay.stderr)
        let inLines = a.split(separator: "\n"), outLines = replay.stdout.split(separator: "\n")
        XCTAssertEqual(outLines.count, 3000)
        let decoder = NDJSONDecoder()
        for (i, (input, output)) in zip(inLines, outLines).enumerated() {
            let expected = try decoder.decode(line: String(input), lineNumber: i + 1)
            var line = String(output)
            XCTAssertTrue(line.hasPrefix("{\"seq\":\(i + 1),"), line)
            // Replay adds seq and received_at; what remains is the event as it went in.
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertNotNil(object["received_at"] as? Int)
            line = String(line.dropFirst("{\"seq\":\(i + 1),".count))
            line = "{" + line
            let decoded = try decoder.decode(line: String(line[..<line.range(of: ",\"received_at\"")!.lowerBound]) + "}", lineNumber: i + 1)
            XCTAssertEqual(decoded, expected, "line \(i + 1)")
        }
    }

    func testAppendStopsAtFirstInvalidLineAndKeepsEverythingBefore() throws {
        let good = try gen(50).split(separator: "\n").map(String.init)
        var input = good[0..<10].joined(separator: "\n") + "\n"
        input += "{\"type\":\"validated\",\"ts\":true,\"token\":\"abc\"}\n"
        input += good[10..<50].joined(separator: "\n") + "\n"
        let ledger = dir + "/l"
        let r = try CLI.run(["append", "--data", ledger, "--quiet"], stdin: Data(input.utf8))
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("line 11"), r.stderr)
        XCTAssertTrue(r.stderr.contains("\"ts\""), r.stderr)
        XCTAssertTrue(r.stderr.contains("kept 10 events"), r.stderr)
        let replay = try CLI.run(["replay", "--data", ledger])
        XCTAssertEqual(replay.stdout.split(separator: "\n").count, 10)

        // --skip-invalid imports the rest and names what it skipped.
        let ledger2 = dir + "/l2"
        var bad = input
        bad += "{\"type\":\"teleported\",\"ts\":1,\"token\":\"x\"}\n"
        bad += String(repeating: "x", count: 70_000) + "\n"
        var bytes = Array(bad.utf8)
        bytes += Array("{\"type\":\"validated\",\"ts\":1,\"token\":\"".utf8) + [0xC3, 0x28] + Array("\"}\n".utf8)
        let r2 = try CLI.run(["append", "--data", ledger2, "--skip-invalid", "--quiet"], stdin: Data(bytes))
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertTrue(r2.stdout.contains("imported 50 events"), r2.stdout)
        XCTAssertTrue(r2.stdout.contains("skipped 4 invalid lines"), r2.stdout)
        XCTAssertTrue(r2.stderr.contains("line 52"), r2.stderr)      // unknown type
        XCTAssertTrue(r2.stderr.contains("teleported"), r2.stderr)
        XCTAssertTrue(r2.stderr.contains("line 53"), r2.stderr)      // oversized
        XCTAssertTrue(r2.stderr.contains("65536"), r2.stderr)
        XCTAssertTrue(r2.stderr.contains("line 54"), r2.stderr)      // invalid UTF-8
        XCTAssertTrue(r2.stderr.lowercased().contains("utf-8"), r2.stderr)
    }

    func testRawJWTNeverReachesDiskAndReplayFindsItByTheRawValue() throws {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
        let input = """
        {"type":"issued","ts":1000,"token":"\(jwt)","sub":"user-1","exp":999999}
        {"type":"validated","ts":1001,"token":"\(jwt)","sub":"user-1"}
        {"type":"validated","ts":1002,"token":"other","sub":"user-2"}

        """
        let ledger = dir + "/l"
        XCTAssertEqual(try CLI.run(["append", "--data", ledger, "--quiet"], stdin: Data(input.utf8)).status, 0)
        for name in try FileManager.default.contentsOfDirectory(atPath: ledger) {
            let data = FileManager.default.contents(atPath: ledger + "/" + name) ?? Data()
            XCTAssertNil(data.range(of: Data(jwt.utf8)), "raw JWT found in \(name)")
            XCTAssertNil(data.range(of: Data("c2lnbmF0dXJlLWJ5dGVzLWhlcmU".utf8)), "JWT signature found in \(name)")
        }
        let r = try CLI.run(["replay", "--data", ledger, "--token", jwt])
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 2, r.stdout)
        XCTAssertTrue(r.stdout.contains("sha256:"), r.stdout)
        XCTAssertFalse(r.stdout.contains(jwt))
    }

    func testReplayFilters() throws {
        let input = try gen(5000)
        let ledger = dir + "/l"
        XCTAssertEqual(try CLI.run(["append", "--data", ledger, "--quiet", "--block-events", "500"], stdin: Data(input.utf8)).status, 0)
        let all = input.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }

        let revoked = try CLI.run(["replay", "--data", ledger, "--type", "revoked,expired"])
        XCTAssertEqual(revoked.stdout.split(separator: "\n").count, all.filter { ["revoked", "expired"].contains($0["type"] as! String) }.count)

        let range = try CLI.run(["replay", "--data", ledger, "--from-seq", "1200", "--to-seq", "1300"])
        let seqs = range.stdout.split(separator: "\n").map { (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["seq"] as! Int }
        XCTAssertEqual(seqs, Array(1200...1300))

        let someToken = all.first { $0["type"] as? String == "refreshed" }?["token"] as! String
        let byToken = try CLI.run(["replay", "--data", ledger, "--token", someToken])
        XCTAssertEqual(byToken.stdout.split(separator: "\n").count, all.filter { $0["token"] as? String == someToken }.count)

        let release = all.first { $0["track"] as? String == "canary" }?["release"] as! String
        let gw = all.first { $0["release"] as? String == release && $0["gateway"] != nil }?["gateway"] as! String
        let both = try CLI.run(["replay", "--data", ledger, "--release", release, "--gateway", gw, "--format", "ndjson"])
        XCTAssertEqual(both.stdout.split(separator: "\n").count,
                       all.filter { $0["release"] as? String == release && $0["gateway"] as? String == gw }.count)

        let ts = all[2500]["ts"] as! Int
        let since = try CLI.run(["replay", "--data", ledger, "--since", String(ts), "--until", String(ts + 50)])
        XCTAssertEqual(since.stdout.split(separator: "\n").count, all.filter { ($0["ts"] as! Int) >= ts && ($0["ts"] as! Int) <= ts + 50 }.count)

        let table = try CLI.run(["replay", "--data", ledger, "--limit", "3", "--format", "table"])
        XCTAssertEqual(table.stdout.split(separator: "\n").count, 4, table.stdout)
        XCTAssertTrue(table.stdout.contains("2026-11-24T00:00:00"), table.stdout)

        let badType = try CLI.run(["replay", "--data", ledger, "--type", "teleported"])
        XCTAssertEqual(badType.status, 2)
        XCTAssertTrue(badType.stderr.contains("teleported"))
    }

    func testVerifyFindsTamperingAndDigestProvesHistory() throws {
        let ledger = dir + "/l"
        XCTAssertEqual(try CLI.run(["append", "--data", ledger, "--quiet", "--block-events", "300"], stdin: Data(try gen(3000).utf8)).status, 0)
        XCTAssertEqual(try CLI.run(["verify", "--data", ledger, "--quiet"]).status, 0)

        let key = dir + "/hmac.key"
        try Data("0123456789abcdef0123456789abcdef\n".utf8).write(to: URL(fileURLWithPath: key))
        let digest = try CLI.run(["digest", "--data", ledger, "--key", key])
        XCTAssertEqual(digest.status, 0, digest.stderr)
        let digestFile = dir + "/head.json"
        try Data(digest.stdout.utf8).write(to: URL(fileURLWithPath: digestFile))
        XCTAssertTrue(digest.stdout.contains("\"seq\":3000"), digest.stdout)

        // More events after the digest: history up to it is unchanged, so it still proves.
        XCTAssertEqual(try CLI.run(["append", "--data", ledger, "--quiet"], stdin: Data(try gen(100, seed: 9).utf8)).status, 0)
        let ok = try CLI.run(["verify", "--data", ledger, "--digest", digestFile, "--key", key, "--quiet"])
        XCTAssertEqual(ok.status, 0, ok.stdout + ok.stderr)
        XCTAssertTrue(ok.stdout.contains("matches the signed digest"), ok.stdout)

        // A wrong key is refused.
        let wrongKey = dir + "/wrong.key"
        try Data("ffffffffffffffffffffffffffffffff".utf8).write(to: URL(fileURLWithPath: wrongKey))
        XCTAssertEqual(try CLI.run(["verify", "--data", ledger, "--digest", digestFile, "--key", wrongKey]).status, 1)

        // Flip one byte inside the fourth block's payload: verify names that block.
        let segment = ledger + "/" + (try FileManager.default.contentsOfDirectory(atPath: ledger).first { $0.hasSuffix(".seg") }!)
        let log = try SegmentLog.open(directory: ledger, options: LogOptions(readOnly: true))
        let target = log.blocks[3]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: segment))
        bytes[Int(target.offset) + BlockHeader.size + 10] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: segment))
        let bad = try CLI.run(["verify", "--data", ledger, "--quiet"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stdout.contains("seq \(target.header.firstSeq)-\(target.header.lastSeq)"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("byte offset \(target.offset)"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains(target.segment), bad.stdout)
        let badDigest = try CLI.run(["verify", "--data", ledger, "--digest", digestFile, "--key", key, "--quiet"])
        XCTAssertEqual(badDigest.status, 1)

        // A damaged ledger refuses appends and says why.
        let refused = try CLI.run(["append", "--data", ledger, "--quiet"], stdin: Data(try gen(10, seed: 5).utf8))
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("read-only"), refused.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: segment)), bytes, "nothing may be cut from a damaged ledger")
    }

    func testUsageErrors() throws {
        XCTAssertEqual(try CLI.run([]).status, 2)
        XCTAssertEqual(try CLI.run(["frobnicate"]).status, 2)
        let help = try CLI.run(["append", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("--skip-invalid"))
        let unknown = try CLI.run(["replay", "--data", dir, "--bogus"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.stderr.contains("--bogus"))
        let missing = try CLI.run(["verify"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.stderr.contains("--data"))
    }
}
