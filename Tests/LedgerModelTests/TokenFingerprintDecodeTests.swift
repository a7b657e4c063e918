import XCTest
@testable import LedgerModel

/// PRODUCT.md: a raw bearer token is never stored. The decoder is where that is enforced, so a
/// JWT or an over-long token must never come out of it.
final class TokenFingerprintDecodeTests: XCTestCase {
    let jwt = SampleTokens.jwt

    func fingerprint(_ text: String) -> String {
        var copy = text
        return copy.withUTF8 { TokenFingerprint.fingerprint(UnsafeRawBufferPointer($0)) }
    }

    func testJWTTokenIsFingerprinted() throws {
        let event = try NDJSONDecoder().decode(line: #"{"type":"validated","ts":1,"token":""# + jwt + #"","parent":""# + jwt + #""}"#)
        XCTAssertEqual(event.token, fingerprint(jwt))
        XCTAssertEqual(event.parent, fingerprint(jwt))
        XCTAssertTrue(event.token!.hasPrefix("sha256:"))
        XCTAssertEqual(event.token!.utf8.count, 71)
        XCTAssertFalse(String(describing: event).contains("eyJ"), "no part of the JWT may survive decoding")
    }

    func testEscapedJWTIsFingerprintedAsItsUnescapedBytes() throws {
        // "\/" and "\u0065" are other spellings of the same JSON string.
        let escaped = jwt.replacingOccurrences(of: "e", with: "\\u0065").replacingOccurrences(of: "_", with: "\\u005f")
        XCTAssertNotEqual(escaped, jwt)
        let event = try NDJSONDecoder().decode(line: #"{"type":"validated","ts":1,"token":""# + escaped + #""}"#)
        XCTAssertEqual(event.token, fingerprint(jwt))
    }

    func testLengthRule() throws {
        let decoder = NDJSONDecoder()
        let long = String(repeating: "a", count: 200)
        let limit = String(repeating: "b", count: 128)
        let over = String(repeating: "c", count: 129)
        XCTAssertEqual(try decoder.decode(line: #"{"type":"issued","ts":1,"token":""# + long + #""}"#).token, fingerprint(long))
        XCTAssertEqual(try decoder.decode(line: #"{"type":"issued","ts":1,"token":""# + limit + #""}"#).token, limit)
        XCTAssertEqual(try decoder.decode(line: #"{"type":"issued","ts":1,"token":""# + over + #""}"#).token, fingerprint(over))
        // The rule counts bytes after unescaping: 64 × "é" is 128 bytes though 384 JSON characters.
        let accents = String(repeating: "\\u00e9", count: 64)
        XCTAssertEqual(try decoder.decode(line: #"{"type":"issued","ts":1,"token":""# + accents + #""}"#).token, String(repeating: "é", count: 64))
    }

    func testFingerprintingHappensBeforeTheFieldLimit() throws {
        var limits = EventLimits()
        limits.fieldBytesMax = 80
        let huge = String(repeating: "x", count: 5000)
        let event = try NDJSONDecoder(limits: limits).decode(line: #"{"type":"issued","ts":1,"token":""# + huge + #""}"#)
        XCTAssertEqual(event.token, fingerprint(huge))
    }

    func testFingerprintsAreStableAcrossReingest() throws {
        let decoder = NDJSONDecoder()
        let first = try decoder.decode(line: #"{"type":"issued","ts":1,"token":""# + jwt + #""}"#)
        let second = try decoder.decode(line: NDJSONEncoder.line(first))
        XCTAssertEqual(first, second)
    }

    func testPlainTokenIdsAreKept() throws {
        for id in ["jti-123", "a.b", "a..b", ".a.b", "1f0e7c9a-3b1d-4c55-9a3e-2b8f0c1d2e3f", "tok en.x.y"] {
            XCTAssertEqual(try NDJSONDecoder().decode(line: #"{"type":"issued","ts":1,"token":""# + id + #""}"#).token, id)
        }
    }

    func testJWTsInAttrsAndUnknownFieldsAreFingerprinted() throws {
        let event = try NDJSONDecoder().decode(line: #"{"type":"issued","ts":1,"token":"t","id_token":""# + jwt + #"","attrs":{"assertion":""# + jwt + #"","version":"1.2.3"}}"#)
        XCTAssertEqual(event.attrs["id_token"], fingerprint(jwt))
        XCTAssertEqual(event.attrs["assertion"], fingerprint(jwt))
        XCTAssertEqual(event.attrs["version"], "1.2.3", "only JWT-shaped values (eyJ…) are fingerprinted in attrs")
        XCTAssertFalse(String(describing: event).contains("eyJ"))
    }

    func testRandomLinesNeverYieldARawToken() {
        let seed = testSeed(0xF1F0_0001)
        var rng = SeededGenerator(seed: seed)
        let decoder = NDJSONDecoder()
        for iteration in 0..<2000 {
            var raw = RandomText.string(&rng, nonEmpty: true)
            if Bool.random(using: &rng) { raw = [jwt, String(repeating: "z", count: Int.random(in: 100...300, using: &rng)), raw].randomElement(using: &rng)! }
            var event = Event(type: .refreshed, ts: 1)
            event.token = raw
            event.parent = raw
            let line = NDJSONEncoder.line(event) // the encoder writes whatever it is given
            guard let back = try? decoder.decode(line: line, lineNumber: 1) else {
                XCTFail("seed \(seed), iteration \(iteration): \(line)")
                return
            }
            for value in [back.token!, back.parent!] {
                var copy = value
                let needs = copy.withUTF8 { TokenFingerprint.needsFingerprint(UnsafeRawBufferPointer($0)) }
                XCTAssertFalse(needs, "seed \(seed), iteration \(iteration)")
                XCTAssertEqual(value, TokenFingerprint.normalize(raw), "seed \(seed), iteration \(iteration)")
            }
        }
    }
}
