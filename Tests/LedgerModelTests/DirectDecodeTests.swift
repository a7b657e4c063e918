import XCTest
@testable import LedgerModel

/// The direct path (`NDJSONDecoder.decode(line:lineNumber:into:gateway:)`: NDJSON bytes into a
/// block encoder with no String per field) must be indistinguishable from decoding an `Event`
/// and appending it: the same payload bytes, the same refusals, the same decoded columns.
final class DirectDecodeTests: XCTestCase {
    enum Outcome<T> {
        case kept(T)
        case refused(String)
    }

    /// Lines that take the direct path's fallbacks: escapes, nulls, JWT-looking and dotted token
    /// ids, unknown fields, attrs, markers, repeated values, gateways present and absent.
    static let handWritten: [String] = [
        #"{"type":"issued","ts":1,"token":"tok-1","sub":"alice","scope":"read","gateway":"gw-a","exp":100}"#,
        #"{"type":"validated","ts":2,"token":"tok-1","sub":"alice","scope":"read","gateway":"gw-a"}"#,
        #"{"type":"validated","ts":3,"token":"tok-1","sub":"al\u0069ce","scope":"read","gateway":"gw-a"}"#,
        #"{"type":"validated","ts":4,"token":"t\u006fk-1","sub":null,"gateway":"gw-b","status":200}"#,
        #"{"type":"issued","ts":5,"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl","sub":"bob"}"#,
        #"{"type":"validated","ts":6,"token":"a.b","route":"/x","method":"GET","status":401}"#,
        #"{"type":"refreshed","ts":7,"token":"tok-2","parent":"tok-1","release":"v2","track":"canary"}"#,
        #"{"type":"validated","ts":8,"token":"tok-2","region":"eu","retries":3,"attrs":{"k":"v","a":"b"}}"#,
        #"{"type":"deploy","ts":9,"release":"v2","track":"canary","marker":"m-1","weight":10}"#,
        #"{"ts":10,"type":"revoked","reason":"compromised","token":"tok-2","gateway":"gw-a"}"#,
        #"{"type":"validated","ts":11,"token":"tok-3","gateway":"gw-\u00e9"}"#,
        #"{"type":"validated","ts":12,"token":"tok-3","gateway":"gw-é"}"#,
        #"{"type":"validated","ts":"2026-11-24T10:00:00Z","token":"tok-3","client_ip":"10.0.0.1","request_id":"r-1"}"#,
        #"{"type":"validated","ts":13,"token":"","sub":"x"}"#,
        #"{"type":"validated","ts":14,"sub":"no token"}"#,
        #"{"type":"validated","ts":15,"token":"tok-4","status":700}"#,
        #"{"type":"validated","ts":16,"token":"tok-4","sub":"x","sub":"y"}"#,
        #"{"type":"validated","ts":17,"token":"tok-4","aud":"\ud800"}"#,
        #"{"type":"validated","ts":18,"token":"tok-4","iss":"https://issuer.example.com/"} trailing"#,
        #"{"type":"expired","ts":19,"token":"tok-4","token_type":"access","client_id":"c-1","iss":"https://issuer.example.com/","aud":"api"}"#,
    ]

    func testDirectPathMatchesDecodeThenAppend() {
        let seed = testSeed(0xD1EC7)
        var rng = SeededGenerator(seed: seed)
        var lines = Self.handWritten.map { Array($0.utf8) }
        for _ in 0..<3000 {
            var line = [UInt8]()
            NDJSONEncoder.append(RandomEvent.make(&rng), to: &line)
            if line.last == 0x0A { line.removeLast() }
            lines.append(line)
            // Values repeat within a block in real traffic; repeat lines to exercise the caches.
            if Int.random(in: 0..<4, using: &rng) == 0, let again = lines.randomElement(using: &rng) { lines.append(again) }
        }
        for gateway in [nil, "gw-a", "gw-é"] as [String?] {
            compare(lines, gateway: gateway, seed: seed)
        }
    }

    private func compare(_ lines: [[UInt8]], gateway: String?, seed: UInt64, file: StaticString = #filePath, line testLine: UInt = #line) {
        let decoder = NDJSONDecoder()
        var viaEvents = BlockPayloadEncoder()
        var direct = BlockPayloadEncoder(keepColumns: true)
        var kept = 0
        for (n, bytes) in lines.enumerated() {
            // The reference: decode an Event, apply the gateway rule, refuse what a block cannot hold.
            var expected: Outcome<Event>
            do {
                var e = try decoder.decode(line: bytes, lineNumber: n + 1)
                if let gateway {
                    if e.gateway == nil { e.gateway = gateway }
                    if e.gateway != gateway { throw EventDecodeError(line: n + 1, reason: "gateway") }
                }
                if let problem = BlockPayloadEncoder.unencodable(e) { throw EventDecodeError(line: n + 1, reason: problem) }
                expected = .kept(e)
            } catch {
                expected = .refused("\(error)")
            }
            let got: Outcome<EventType> = bytes.withUnsafeBytes { raw in
                do { return .kept(try decoder.decode(line: raw, lineNumber: n + 1, into: &direct, gateway: gateway)) } catch {
                    return .refused("\(error)")
                }
            }
            switch (expected, got) {
            case let (.kept(e), .kept(type)):
                XCTAssertEqual(e.type, type, "line \(n + 1), seed \(seed)", file: file, line: testLine)
                viaEvents.append(e)
                kept += 1
            case let (.refused(a), .refused(b)):
                // Gateway refusals are worded by each caller; every other error is the decoder's own.
                if !a.hasSuffix(": gateway") {
                    XCTAssertEqual(a, b, "line \(n + 1), seed \(seed)", file: file, line: testLine)
                }
            default:
                XCTFail("line \(n + 1) (seed \(seed), gateway \(gateway ?? "none")): \(expected) vs \(got): \(String(decoding: bytes, as: UTF8.self))", file: file, line: testLine)
                return
            }
            XCTAssertEqual(viaEvents.count, direct.count, "a refused line left something in the encoder (line \(n + 1), seed \(seed))", file: file, line: testLine)
        }
        // Most random events are valid; with a gateway most name another one and are refused.
        XCTAssertGreaterThan(kept, gateway == nil ? lines.count / 2 : 10, "seed \(seed)", file: file, line: testLine)
        let payload = direct.finish()
        XCTAssertEqual(viaEvents.finish(), payload, "payload bytes differ (seed \(seed), gateway \(gateway ?? "none"))", file: file, line: testLine)
        // The columns the server hands its projection equal decoding the payload.
        guard let decoded = try? BlockPayloadDecoder.decode(payload) else { return XCTFail("payload does not decode (seed \(seed))", file: file, line: testLine) }
        XCTAssertEqual(direct.decodedBlock().events, decoded.events, "decodedBlock() differs from the payload (seed \(seed))", file: file, line: testLine)
    }
}
