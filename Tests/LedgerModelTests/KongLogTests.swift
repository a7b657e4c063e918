import XCTest
@testable import LedgerModel

/// The Kong log-serializer adapter (KongLog.swift): the fixture samples mapped field by field, the
/// shape test against every v1 fixture line, the status rules, precedence of sources, malformed
/// input, and a seeded mutation run.
final class KongLogTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    /// The raw JWT that sample 4's `token_id` carries.
    static let sampleJWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imt4LTIwMjYtMTEifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJzdWIiOiJ1c2VyLTA0MjEiLCJleHAiOjE3OTU0ODIwMDB9.c2lnbmF0dXJlLWJ5dGVzLW5vdC1yZWFs"

    func lines(_ name: String) throws -> [String] {
        let text = try String(contentsOf: Self.fixtures.appendingPathComponent(name), encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    func samples() throws -> [String] {
        let samples = try lines("kong-tcp-log.ndjson")
        XCTAssertEqual(samples.count, 5)
        return samples
    }

    func map(_ line: String, options: KongLog.Options = .default, file: StaticString = #filePath, line testLine: UInt = #line) -> Event? {
        do {
            return try KongLog.event(from: line, lineNumber: 1, options: options)
        } catch {
            XCTFail("\(error)", file: file, line: testLine)
            return nil
        }
    }

    func mapError(_ line: String, lineNumber: Int = 1, options: KongLog.Options = .default,
                  file: StaticString = #filePath, line testLine: UInt = #line) -> EventDecodeError? {
        do {
            let event = try KongLog.event(from: line, lineNumber: lineNumber, options: options)
            XCTFail("expected an error, mapped \(event)", file: file, line: testLine)
            return nil
        } catch {
            return error
        }
    }

    static func outcome(_ bytes: [UInt8], lineNumber: Int) -> Result<Event, EventDecodeError> {
        bytes.withUnsafeBytes { raw in
            Result { () throws(EventDecodeError) -> Event in try KongLog.event(from: raw, lineNumber: lineNumber) }
        }
    }

    /// A minimal Kong object; `fields` are raw JSON members appended at the top level.
    func kong(status: String = "200", token: String? = "tok-1", authenticated: Bool = false, _ fields: String = "") -> String {
        var members = [#""request":{"method":"GET","uri":"/v1/x","headers":{"authorization":"REDACTED"}}"#,
                       #""response":{"status":\#(status),"headers":{}}"#,
                       #""started_at":1795478400000"#, #""client_ip":"10.0.0.1""#]
        if let token { members.append(#""token_id":"\#(token)""#) }
        if authenticated {
            members.append(#""authenticated_entity":{"id":"cred-1","consumer_id":"cons-1"}"#)
            members.append(#""consumer":{"id":"cons-1","username":"carol"}"#)
        }
        if !fields.isEmpty { members.append(fields) }
        return "{" + members.joined(separator: ",") + "}"
    }

    // MARK: Fixture samples, field by field

    func testAuthenticated200() throws {
        let event = try XCTUnwrap(map(samples()[0]))
        XCTAssertEqual(event, Event(
            type: .validated, ts: 1_795_478_400_011, token: "b1e7c2a4-9d3f-4e8a-8c1b-5f2d7a9e0c33",
            sub: "alice", clientID: "mobile-ios", gateway: "kong-dp-eu-1a", release: "v2.7.0", track: "canary",
            route: "/v1/orders/1234", method: "GET", status: 200, clientIP: "203.0.113.7",
            requestID: "2f6946328ffc4946b8c9120704a4a155",
            attrs: ["kong_route": "orders-api", "kong_service": "orders-svc"]))
        // The query string (here with an api_key) is not kept.
        XCTAssertFalse(String(describing: event).contains("api_key"))
    }

    func test401FromKeyAuthWithCustomObjectAndEscapedSlashes() throws {
        let line = try samples()[1]
        XCTAssertTrue(line.contains(#"\/v1\/orders"#), "cjson escapes '/'")
        let event = try XCTUnwrap(map(line))
        XCTAssertEqual(event, Event(
            type: .rejected, ts: 1_795_478_401_020, token: "k-9f8e7d6c5b4a",
            gateway: "kong-dp-eu-1b", release: "v2.7.0", track: "stable",
            route: "/v1/orders", method: "POST", status: 401, clientIP: "198.51.100.23",
            requestID: "7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", reason: "invalid",
            attrs: ["kong_route": "orders-api", "kong_service": "orders-svc"]))
    }

    func test403FromACLOnKong34Shape() throws {
        let event = try XCTUnwrap(map(samples()[2]))
        XCTAssertEqual(event, Event(
            type: .rejected, ts: 1_795_478_402_033, token: "tok_3JqX8sLmN2pQ",
            sub: "bob", clientID: "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d", gateway: "kong-dp-us-2a",
            route: "/v1/admin/users", method: "DELETE", status: 403, clientIP: "192.0.2.44",
            requestID: "5b7e9c1a-3d2f-4e6a-8b0c-1d2e3f4a5b6c#42", reason: "insufficient_scope",
            attrs: ["kong_route": "admin-api", "kong_service": "admin-svc"]))
    }

    func testRawJWTInTokenFieldIsFingerprinted() throws {
        let line = try samples()[3]
        XCTAssertTrue(line.contains(Self.sampleJWT))
        let event = try XCTUnwrap(map(line))
        let fingerprint = TokenFingerprint.normalize(Self.sampleJWT)
        XCTAssertTrue(fingerprint.hasPrefix("sha256:"))
        XCTAssertEqual(event, Event(
            type: .validated, ts: 1_795_478_403_044, token: fingerprint,
            sub: "alice", clientID: "mobile-ios", release: "v2.6.3", track: "stable",
            route: "/v1/orders", method: "GET", status: 200, clientIP: "2001:db8::42",
            requestID: "9a8b7c6d5e4f30211203948576a1b2c3",
            attrs: ["kong_route": "orders-api", "kong_service": "orders-svc"]))
        assertNoSecret(Self.sampleJWT, in: event)
        // Also through the v1 encoder, as the ledger will write it.
        XCTAssertFalse(NDJSONEncoder.line(event).contains("eyJ"))
    }

    func testNoTokenFieldIsNotATokenEvent() throws {
        let error = try XCTUnwrap(mapError(samples()[4], lineNumber: 5))
        XCTAssertEqual(error.line, 5)
        XCTAssertEqual(error.field, "token_id")
        XCTAssertTrue(error.reason.hasPrefix(KongLog.notATokenEvent), error.description)
    }

    // MARK: Secrets

    func testAuthorizationHeaderIsNeverCopied() throws {
        let secret = "opaque-secret-0123456789"
        for authorization in ["Bearer " + Self.sampleJWT, "Bearer " + secret, "REDACTED"] {
            for line in try samples() {
                let raw = line.replacingOccurrences(of: #""authorization":"REDACTED""#, with: #""authorization":"\#(authorization)""#)
                do {
                    let event = try KongLog.event(from: raw, lineNumber: 1)
                    assertNoSecret(Self.sampleJWT, in: event)
                    assertNoSecret(secret, in: event)
                    assertNoSecret("Bearer", in: event)
                } catch {
                    XCTAssertFalse(error.description.contains(secret))
                    XCTAssertFalse(error.description.contains("eyJ"))
                }
            }
        }
    }

    func testBearerPrefixedTokenFieldIsStrippedThenFingerprinted() {
        let event = map(kong(token: "Bearer " + Self.sampleJWT))
        XCTAssertEqual(event?.token, TokenFingerprint.normalize(Self.sampleJWT))
        XCTAssertEqual(map(kong(token: "bearer  tok-9"))?.token, "tok-9")
        // An over-long opaque token is fingerprinted too.
        let long = String(repeating: "k", count: 129)
        XCTAssertEqual(map(kong(token: long))?.token, TokenFingerprint.normalize(long))
        XCTAssertEqual(map(kong(token: String(repeating: "k", count: 128)))?.token, String(repeating: "k", count: 128))
    }

    func testMistypedTokenIsNeverQuoted() {
        let error = mapError(kong(token: nil, #""token_id":["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"]"#))
        XCTAssertEqual(error?.field, "token_id")
        XCTAssertEqual(error?.reason, "expected a string (the token id), got an array")
    }

    func assertNoSecret(_ secret: String, in event: Event, file: StaticString = #filePath, line: UInt = #line) {
        let values: [String?] = [event.token, event.tokenType, event.sub, event.clientID, event.iss, event.aud, event.scope,
                                 event.parent, event.gateway, event.release, event.track, event.route, event.method,
                                 event.clientIP, event.requestID, event.reason, event.marker]
        for value in values.compactMap({ $0 }) + Array(event.attrs.keys) + Array(event.attrs.values) {
            XCTAssertFalse(value.contains(secret), "\(secret.prefix(12))… leaked into \(value.prefix(40))", file: file, line: line)
        }
    }

    // MARK: Shape test

    func testLooksLikeKongOnFixtures() throws {
        for line in try samples() { XCTAssertTrue(KongLog.looksLikeKong(line), line) }
        var v1 = 0
        for name in ["edge-events.ndjson", "workload-seed42.ndjson"] {
            for line in try lines(name) {
                XCTAssertFalse(KongLog.looksLikeKong(line), line)
                v1 += 1
            }
        }
        XCTAssertEqual(v1, 3009)
    }

    func testLooksLikeKongEdges() {
        let k = #""request":{},"response":{"status":200},"started_at":1"#
        XCTAssertTrue(KongLog.looksLikeKong("{" + k + "}"))
        XCTAssertTrue(KongLog.looksLikeKong(" {" + k + "} \r"))
        // Any top-level "type" makes it a v1 event, first, last or escaped.
        XCTAssertFalse(KongLog.looksLikeKong(#"{"type":"validated","# + k + "}"))
        XCTAssertFalse(KongLog.looksLikeKong("{" + k + #","type":"validated"}"#))
        XCTAssertFalse(KongLog.looksLikeKong("{" + k + #","\u0074ype":"validated"}"#))
        // A nested "type" does not count.
        XCTAssertTrue(KongLog.looksLikeKong("{" + k + #","route":{"type":"x","a":[{"type":1}]}}"#))
        // Missing or wrongly typed keys.
        XCTAssertFalse(KongLog.looksLikeKong(#"{"request":{},"response":{}}"#))
        XCTAssertFalse(KongLog.looksLikeKong(#"{"request":"x","response":{},"started_at":1}"#))
        XCTAssertFalse(KongLog.looksLikeKong(#"{"request":{},"response":{},"started_at":"2026-11-24T00:00:00Z"}"#))
        XCTAssertFalse(KongLog.looksLikeKong(#"{"route":{"request":{},"response":{},"started_at":1}}"#))
        // Not an object, truncated, empty.
        for text in ["", " ", "[" + "{" + k + "}]", "{" + k, "{" + k + ",", "{", "}", "\"", "{\"", "{\"request\":{\"a\":\"}"] {
            XCTAssertFalse(KongLog.looksLikeKong(text), text)
        }
        XCTAssertFalse(KongLog.looksLikeKong(UnsafeRawBufferPointer(start: nil, count: 0)))
    }

    // MARK: Status rules

    func testStatusToType() {
        XCTAssertEqual(map(kong(status: "200"))?.type, .validated)
        XCTAssertEqual(map(kong(status: "204"))?.type, .validated)
        XCTAssertEqual(map(kong(status: "302"))?.type, .validated)
        XCTAssertEqual(map(kong(status: "101"))?.type, .validated)

        let r401 = map(kong(status: "401"))
        XCTAssertEqual(r401?.type, .rejected)
        XCTAssertEqual(r401?.reason, "invalid")
        XCTAssertEqual(r401?.status, 401)
        let r403 = map(kong(status: "403", authenticated: true))
        XCTAssertEqual(r403?.type, .rejected)
        XCTAssertEqual(r403?.reason, "insufficient_scope")

        // Other failures: a token event only when Kong authenticated the request.
        for status in ["400", "404", "405", "429", "500", "502", "503", "504"] {
            let event = map(kong(status: status, authenticated: true))
            XCTAssertEqual(event?.type, .validated, status)
            XCTAssertNil(event?.reason)
            let error = mapError(kong(status: status))
            XCTAssertEqual(error?.field, "response.status")
            XCTAssertTrue(error?.reason.hasPrefix(KongLog.notATokenEvent) ?? false, error?.description ?? "")
        }
        // Either the credential or the consumer counts as authenticated.
        XCTAssertEqual(map(kong(status: "503", #""consumer":{"id":"c"}"#))?.type, .validated)
        XCTAssertEqual(map(kong(status: "503", #""authenticated_entity":{"id":"c"}"#))?.type, .validated)
        XCTAssertNotNil(mapError(kong(status: "503", #""consumer":null"#)))
    }

    func testCustomReason() {
        XCTAssertEqual(map(kong(status: "401", #""reason":"expired""#))?.reason, "expired")
        XCTAssertEqual(map(kong(status: "403", #""custom":{"reason":"revoked"},"consumer":{"id":"c"}"#))?.reason, "revoked")
        // A 403 before authentication (bot detection, IP restriction) is not about the token.
        XCTAssertTrue(mapError(kong(status: "403", #""custom":{"reason":"revoked"}"#))?.reason.hasPrefix(KongLog.notATokenEvent) ?? false)
        XCTAssertEqual(map(kong(status: "401", #""reason":"","custom":{"reason":"malformed"}"#))?.reason, "malformed")
        // A reason means nothing on an accepted request.
        XCTAssertNil(map(kong(status: "200", #""reason":"expired""#))?.reason)
    }

    func testMissingEmptyOrRedactedTokenIsNotATokenEvent() {
        for line in [kong(token: nil), kong(token: ""), kong(token: "REDACTED"), kong(token: "Bearer "),
                     kong(token: nil, #""token_id":null"#), kong(token: nil, #""custom":{"token_id":null}"#),
                     kong(status: "401", token: nil)] {
            let error = mapError(line)
            XCTAssertEqual(error?.field, "token_id", line)
            XCTAssertTrue(error?.reason.hasPrefix(KongLog.notATokenEvent) ?? false, line)
        }
    }

    // MARK: Sources and precedence

    func testTokenFieldOptionAndCustomObject() {
        let options = KongLog.Options(tokenField: "jti", customObject: "ledger")
        XCTAssertEqual(map(kong(token: nil, #""jti":"j-1""#), options: options)?.token, "j-1")
        XCTAssertEqual(map(kong(token: nil, #""ledger":{"jti":"j-2","gateway":"g"}"#), options: options)?.token, "j-2")
        XCTAssertEqual(map(kong(token: nil, #""ledger":{"jti":"j-2","gateway":"g"}"#), options: options)?.gateway, "g")
        // The default name is not looked at under another option.
        XCTAssertNotNil(mapError(kong(token: "t"), options: options))
        // Top level wins over the custom object.
        XCTAssertEqual(map(kong(token: "top", #""custom":{"token_id":"nested","release":"r2"},"release":"r1""#))?.token, "top")
        XCTAssertEqual(map(kong(token: "top", #""custom":{"token_id":"nested","release":"r2"},"release":"r1""#))?.release, "r1")
        XCTAssertEqual(map(kong(token: nil, #""custom":{"token_id":"nested","release":"r2","track":"blue"}"#))?.release, "r2")
        XCTAssertEqual(map(kong(token: nil, #""custom":{"token_id":"nested","release":"r2","track":"blue"}"#))?.track, "blue")
    }

    func testSubjectAndClientPrecedence() {
        let entity = #""authenticated_entity":{"id":"cred-9","consumer_id":"cons-9"}"#
        var event = map(kong(entity + #","consumer":{"id":"cons-9","username":"dave","custom_id":"ext-9"}"#))
        XCTAssertEqual(event?.sub, "dave")
        XCTAssertEqual(event?.clientID, "ext-9")
        event = map(kong(entity + #","consumer":{"id":"cons-9","username":null}"#))
        XCTAssertEqual(event?.sub, "cons-9")
        XCTAssertEqual(event?.clientID, "cred-9")
        event = map(kong(entity))
        XCTAssertEqual(event?.sub, "cons-9")
        XCTAssertEqual(event?.clientID, "cred-9")
        event = map(kong(entity + #","sub":"user-1","custom":{"client_id":"app-1"}"#))
        XCTAssertEqual(event?.sub, "user-1")
        XCTAssertEqual(event?.clientID, "app-1")
        event = map(kong())
        XCTAssertNil(event?.sub)
        XCTAssertNil(event?.clientID)
    }

    func testRequestIDPrecedence() {
        func line(requestID: String?, responseHeader: String?, requestHeaders: String) -> String {
            let id = requestID.map { #","id":"\#($0)""# } ?? ""
            let rh = responseHeader.map { #""x-kong-request-id":"\#($0)""# } ?? ""
            return #"{"request":{"method":"GET","uri":"/a"\#(id),"headers":{\#(requestHeaders)}},"response":{"status":200,"headers":{\#(rh)}},"started_at":1,"token_id":"t"}"#
        }
        XCTAssertEqual(map(line(requestID: "r1", responseHeader: "r2", requestHeaders: #""x-kong-request-id":"r3""#))?.requestID, "r1")
        XCTAssertEqual(map(line(requestID: nil, responseHeader: "r2", requestHeaders: #""x-kong-request-id":"r3""#))?.requestID, "r2")
        XCTAssertEqual(map(line(requestID: nil, responseHeader: nil, requestHeaders: #""x-kong-request-id":"r3","kong-request-id":"r4""#))?.requestID, "r3")
        XCTAssertEqual(map(line(requestID: nil, responseHeader: nil, requestHeaders: #""kong-request-id":["r4","r5"]"#))?.requestID, "r4")
        XCTAssertNil(map(line(requestID: nil, responseHeader: nil, requestHeaders: #""kong-request-id":[]"#))?.requestID)
        XCTAssertNil(map(line(requestID: nil, responseHeader: nil, requestHeaders: ""))?.requestID)
    }

    func testRouteAndTimestamp() {
        let base = #"{"response":{"status":200},"token_id":"t","#
        XCTAssertEqual(map(base + #""request":{"uri":"\/a\/b?c=d?e"},"started_at":5}"#)?.route, "/a/b")
        XCTAssertNil(map(base + #""request":{"uri":"?x=1"},"started_at":5}"#)?.route)
        XCTAssertNil(map(base + #""request":{},"started_at":5}"#)?.route)
        // Older Kong (start_time() * 1000) could write a fraction: truncated to the millisecond.
        XCTAssertEqual(map(base + #""request":{},"started_at":1795478400011.7}"#)?.ts, 1_795_478_400_011)
        XCTAssertEqual(map(base + #""request":{},"started_at":0}"#)?.ts, 0)
        // Unicode survives, including escaped surrogate pairs.
        XCTAssertEqual(map(base + #""request":{"uri":"/caf\u00e9/\ud83d\ude00/ü"},"started_at":5}"#)?.route, "/café/😀/ü")
    }

    func testLongValuesAreErrorsNotTruncations() {
        let long = String(repeating: "a", count: 1025)
        let error = mapError(kong(#""gateway":"\#(long)""#))
        XCTAssertEqual(error?.field, "gateway")
        XCTAssertEqual(error?.reason, "value is 1025 bytes, over the limit of 1024")
        let name = String(repeating: "n", count: 513)
        XCTAssertEqual(mapError(kong(#""route":{"name":"\#(name)"}"#))?.field, "route.name")
        XCTAssertEqual(map(kong(#""route":{"name":"\#(name.dropLast())"}"#))?.attrs["kong_route"], String(name.dropLast()))
    }

    // MARK: Malformed input

    func testWrongTypesNameFieldAndOffset() {
        let cases: [(String, String)] = [
            (#"{"request":{},"response":{"status":"200"},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 35, field "response.status": expected an integer, got "200""#),
            (#"{"request":{},"response":{"status":200.0},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 35, field "response.status": expected an integer, got 200.0"#),
            (#"{"request":{},"response":{"status":2e2},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 35, field "response.status": expected an integer, got 2e2"#),
            (#"{"request":{},"response":{"status":600},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 35, field "response.status": HTTP status 600 out of range 100-599"#),
            (#"{"request":{},"response":{},"started_at":1,"token_id":"t"}"#,
             #"line 1, field "response.status": missing (required)"#),
            (#"{"request":{},"response":{"status":200},"started_at":"2026-11-24T00:00:00Z","token_id":"t"}"#,
             #"line 1, byte 53, field "started_at": expected an integer, got "2026-11-24T00:00:00Z""#),
            (#"{"request":{},"response":{"status":200},"started_at":1.7e12,"token_id":"t"}"#,
             #"line 1, byte 53, field "started_at": expected an integer, got 1.7e12"#),
            (#"{"request":{},"response":{"status":200},"started_at":99999999999999999999,"token_id":"t"}"#,
             #"line 1, byte 53, field "started_at": integer out of range, got 99999999999999999999"#),
            (#"{"request":"GET /","response":{"status":200},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 11, field "request": expected an object, got "GET /""#),
            (#"{"response":{"status":200},"started_at":1,"token_id":"t"}"#,
             #"line 1, field "request": missing (required in a Kong log object)"#),
            (#"{"request":{"method":7},"response":{"status":200},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 21, field "request.method": expected a string, got 7"#),
            (#"{"request":{},"response":{"status":200},"started_at":1,"token_id":"t","consumer":[]}"#,
             #"line 1, byte 81, field "consumer": expected an object, got an array"#),
            (#"{"request":{},"response":{"status":200},"started_at":1,"custom":{"token_id":42}}"#,
             #"line 1, byte 76, field "custom.token_id": expected a string (the token id), got a number"#),
            (#"{"request":{},"response":{"status":200,"status":401},"started_at":1,"token_id":"t"}"#,
             #"line 1, byte 39, field "response.status": repeated key"#),
        ]
        for (line, description) in cases {
            XCTAssertEqual(mapError(line)?.description, description, line)
        }
    }

    func testSyntaxErrorsNameTheByte() {
        let cases: [(String, Int)] = [
            ("", 0), ("\r", 0), ("   ", 3), ("[]", 0), ("nul", 0), (#"{"a":1}x"#, 7), (#"{"a":1,}"#, 7), (#"{"a" 1}"#, 5),
            (#"{"a":01}"#, 5), (#"{"a":-}"#, 6), (#"{"a":1.}"#, 7), (#"{"a":1e}"#, 7), (#"{"a":tru}"#, 5),
            (#"{"a":"\x"}"#, 6), (#"{"a":"\u12G4"}"#, 6), (#"{"a":"\udc00"}"#, 6), (#"{"a":"\ud800x"}"#, 6),
            (#"{"a":"\ud800\u0041"}"#, 6), ("{\"a\":\"\u{1}\"}", 6), (#"{"a":"abc}"#, 5), (#"{"a":[1 2]}"#, 8),
            (#"{"a":{"b":1"#, 11), (#"{a:1}"#, 1), (#"{"a":1"#, 6),
        ]
        for (line, offset) in cases {
            let error = mapError(line)
            XCTAssertEqual(error?.byteOffset, offset, "\(line): \(error?.description ?? "")")
            XCTAssertNil(error?.field, line)
        }
    }

    func testEveryTruncationOfASampleFails() throws {
        let bytes = Array(try samples()[0].utf8)
        for cut in 0..<bytes.count {
            let error = Self.outcome(Array(bytes[0..<cut]), lineNumber: 9).error
            guard let error else { XCTFail("prefix of \(cut) bytes mapped"); continue }
            XCTAssertEqual(error.line, 9)
            let offset = try XCTUnwrap(error.byteOffset, error.description)
            XCTAssertTrue((0...cut).contains(offset), error.description)
        }
    }

    func testInvalidUTF8IsRejectedWithItsOffset() throws {
        var bytes = Array(try samples()[0].utf8)
        let at = bytes.count / 2
        for bad: [UInt8] in [[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82]] {
            var copy = bytes
            copy.insert(contentsOf: bad, at: at)
            let error = Self.outcome(copy, lineNumber: 1).error
            XCTAssertEqual(error?.byteOffset, at)
            XCTAssertTrue(error?.reason.hasPrefix("invalid UTF-8") ?? false, error?.description ?? "")
        }
        // Inside a string value the adapter reads, too.
        bytes = Array(#"{"request":{},"response":{"status":200},"started_at":1,"token_id":"t"#.utf8) + [0xFE] + Array(#""}"#.utf8)
        let error = Self.outcome(bytes, lineNumber: 1).error
        XCTAssertEqual(error?.byteOffset, bytes.count - 3)
    }

    func testDepthLimit() {
        func nested(_ depth: Int) -> String {
            // The outer object is depth 1; `depth - 1` arrays below it.
            let inner = String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1)
            return kong(#""x":"# + inner)
        }
        XCTAssertNotNil(map(nested(KongLog.depthMax)))
        let error = mapError(nested(KongLog.depthMax + 1))
        let prefix = kong(#""x":"#).dropLast().utf8.count
        XCTAssertEqual(error?.byteOffset, prefix + KongLog.depthMax - 1)
        XCTAssertEqual(error?.reason, "nesting deeper than 16 levels")
        // A bomb far deeper than the stack could take is refused at the limit.
        let bomb = "{\"a\":" + String(repeating: "[", count: 60_000)
        XCTAssertEqual(mapError(bomb)?.byteOffset, 5 + 15)
        XCTAssertEqual(mapError(String(repeating: "{\"a\":", count: 10_000))?.byteOffset, 16 * 5)
    }

    func testLineSizeLimit() throws {
        let filler = String(repeating: "x", count: 70 * 1024)
        let error = try XCTUnwrap(mapError(kong(#""pad":"\#(filler)""#)))
        XCTAssertEqual(error.byteOffset, 65536)
        XCTAssertTrue(error.reason.hasSuffix("over the limit of 65536"), error.description)
        // Just under the limit is fine.
        let line = kong("\"pad\":\"\"")
        let fits = kong(#""pad":"\#(String(repeating: "x", count: 65536 - line.utf8.count))""#)
        XCTAssertEqual(fits.utf8.count, 65536)
        XCTAssertNotNil(map(fits))
    }

    // MARK: Mutation

    func testSeededMutationsNeverCrash() throws {
        let seed = testSeed(0x4B4F_4E47)
        var rng = SeededGenerator(seed: seed)
        let samples = try samples().map { Array($0.utf8) }
        let interesting: [UInt8] = Array(#"{}[]",:\u0"#.utf8) + [0x00, 0x0A, 0x80, 0xC3, 0xE2, 0xF0, 0xFF, 0x30, 0x2E, 0x65]
        var mapped = 0, rejected = 0
        for iteration in 0..<2000 {
            var bytes = samples.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                guard !bytes.isEmpty else { break }
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                case 1: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...16, using: &rng)))
                case 2: bytes.insert(interesting.randomElement(using: &rng)!, at: at)
                default: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let lineNumber = iteration + 1
            _ = bytes.withUnsafeBytes { KongLog.looksLikeKong($0) }
            switch Self.outcome(bytes, lineNumber: lineNumber) {
            case .success(let event):
                mapped += 1
                assertNoSecret(Self.sampleJWT, in: event)
                if let token = event.token {
                    var copy = token
                    XCTAssertFalse(copy.withUTF8 { TokenFingerprint.looksLikeJWT(UnsafeRawBufferPointer($0)) }, "seed \(seed), iteration \(iteration)")
                    XCTAssertLessThanOrEqual(token.utf8.count, 128, "seed \(seed), iteration \(iteration)")
                }
            case .failure(let error):
                rejected += 1
                XCTAssertEqual(error.line, lineNumber, "seed \(seed), iteration \(iteration)")
                if let offset = error.byteOffset {
                    XCTAssertTrue((0...bytes.count).contains(offset), "seed \(seed), iteration \(iteration): \(error)")
                }
                XCTAssertFalse(error.description.contains("eyJhbGciOiJSUzI1NiIsImtpZCI6"), "seed \(seed), iteration \(iteration)")
            }
            if testRun?.failureCount ?? 0 > 0 {
                XCTFail("mutation test failed: replay with LEDGER_TEST_SEED=\(seed)")
                return
            }
        }
        XCTAssertGreaterThan(mapped, 0)
        XCTAssertGreaterThan(rejected, 0)
    }
}

fileprivate extension Result where Failure == EventDecodeError {
    var error: EventDecodeError? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
