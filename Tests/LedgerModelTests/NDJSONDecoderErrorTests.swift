import XCTest
@testable import LedgerModel

/// Every class of rejected input, with the full error text: each must name the line and the byte
/// and/or field, and say what was expected.
final class NDJSONDecoderErrorTests: XCTestCase {
    let ok = #""type":"issued","ts":1,"token":"t1""#

    // MARK: Error value and description

    func testDescriptionFormats() {
        XCTAssertEqual(EventDecodeError(line: 3, byteOffset: 41, reason: "invalid UTF-8").description, "line 3, byte 41: invalid UTF-8")
        XCTAssertEqual(EventDecodeError(line: 17, field: "ts", reason: "missing (required)").description, #"line 17, field "ts": missing (required)"#)
        XCTAssertEqual(EventDecodeError(line: 2, byteOffset: 5, field: "a\"b\n", reason: "r").description, #"line 2, byte 5, field "a\"b\n": r"#)
    }

    func testWrongTypeNamesFieldExpectationAndValue() {
        assertDecodeError(#"{"type":"issued","ts":true,"token":"t"}"#,
                          #"line 17, byte 22, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got true"#, lineNumber: 17)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","status":"200"}"#,
                          #"line 1, byte 45, field "status": expected an integer, got "200""#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":5}"#,
                          #"line 1, byte 42, field "sub": expected a string, got 5"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":{"a":1}}"#,
                          #"line 1, byte 32, field "token": expected a string, got an object"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","aud":["x"]}"#,
                          #"line 1, byte 42, field "aud": expected a string, got an array"#)
        assertDecodeError(#"{"type":7,"ts":1}"#,
                          #"line 1, byte 8, field "type": expected a string naming the event type (one of issued, validated, rejected, refreshed, revoked, expired, deploy, promote, rollback), got 7"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":"x"}"#,
                          #"line 1, byte 44, field "attrs": expected an object of string values, got "x""#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"k":5}}"#,
                          #"line 1, byte 49, field "attrs": value of key "k" must be a string, got 5"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"k":null}}"#,
                          #"line 1, byte 49, field "attrs": value of key "k" must be a string, got null"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","exp":false}"#,
                          #"line 1, byte 42, field "exp": expected an integer (epoch ms) or an RFC 3339 string, got false"#)
        assertDecodeError(#"{"type":"issued","ts":null,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got null"#)
        assertDecodeError(#"{"type":null,"ts":1,"token":"t"}"#,
                          #"line 1, byte 8, field "type": expected a string naming the event type (one of issued, validated, rejected, refreshed, revoked, expired, deploy, promote, rollback), got null"#)
    }

    func testNumbersMustBeIntegers() {
        assertDecodeError(#"{"type":"issued","ts":1.5,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got 1.5"#)
        assertDecodeError(#"{"type":"issued","ts":1700000000000.0,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got 1700000000000.0"#)
        assertDecodeError(#"{"type":"issued","ts":17e11,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got 17e11"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","status":200.0}"#,
                          #"line 1, byte 45, field "status": expected an integer, got 200.0"#)
        assertDecodeError(#"{"type":"deploy","ts":1,"marker":"m","weight":5E1}"#,
                          #"line 1, byte 46, field "weight": expected an integer, got 5E1"#)
    }

    func testIntegerRanges() {
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","status":600}"#,
                          #"line 1, byte 45, field "status": 600 is out of range (100...599)"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","status":99}"#,
                          #"line 1, byte 45, field "status": 99 is out of range (100...599)"#)
        assertDecodeError(#"{"type":"deploy","ts":1,"marker":"m","weight":101}"#,
                          #"line 1, byte 46, field "weight": 101 is out of range (0...100)"#)
        assertDecodeError(#"{"type":"deploy","ts":1,"marker":"m","weight":-1}"#,
                          #"line 1, byte 46, field "weight": -1 is out of range (0...100)"#)
        assertDecodeError(#"{"type":"issued","ts":9223372036854775808,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": integer 9223372036854775808 is out of range"#)
        assertDecodeError(#"{"type":"issued","ts":-9223372036854775809,"token":"t"}"#,
                          #"line 1, byte 22, field "ts": integer -9223372036854775809 is out of range"#)
        XCTAssertEqual(decoded(#"{"type":"issued","ts":-9223372036854775808,"token":"t"}"#)?.ts, .min)
        XCTAssertEqual(decoded(#"{"type":"issued","ts":9223372036854775807,"token":"t","status":599}"#)?.ts, .max)
        XCTAssertEqual(decoded(#"{"type":"deploy","ts":-0,"marker":"m","weight":0}"#)?.weight, 0)
    }

    func testUnknownEventTypeIsNamed() {
        assertDecodeError(#"{"type":"minted","ts":1,"token":"t"}"#,
                          #"line 1, byte 8, field "type": unknown event type "minted" (expected one of issued, validated, rejected, refreshed, revoked, expired, deploy, promote, rollback)"#)
        assertDecodeError(#"{"type":"Issued","ts":1,"token":"t"}"#,
                          #"line 1, byte 8, field "type": unknown event type "Issued" (expected one of issued, validated, rejected, refreshed, revoked, expired, deploy, promote, rollback)"#)
    }

    // MARK: Required fields

    func testRequiredFields() {
        assertDecodeError(#"{"ts":1,"token":"t"}"#, #"line 4, field "type": missing (required)"#, lineNumber: 4)
        assertDecodeError(#"{"type":"issued","token":"t"}"#, #"line 1, field "ts": missing (required)"#)
        assertDecodeError(#"{"type":"validated","ts":1}"#, #"line 1, field "token": missing (required on "validated" events)"#)
        assertDecodeError(#"{"type":"revoked","ts":1,"token":null}"#, #"line 1, field "token": missing (required on "revoked" events)"#)
        assertDecodeError(#"{"type":"promote","ts":1,"token":"t"}"#, #"line 1, field "marker": missing (required on "promote" events)"#)
        assertDecodeError(#"{}"#, #"line 1, field "type": missing (required)"#)
    }

    func testIDsMustNotBeEmpty() {
        assertDecodeError(#"{"type":"issued","ts":1,"token":""}"#, #"line 1, byte 32, field "token": must not be empty"#)
        assertDecodeError(#"{"type":"rollback","ts":1,"marker":""}"#, #"line 1, byte 35, field "marker": must not be empty"#)
        assertDecodeError(#"{"type":"refreshed","ts":1,"token":"a","parent":""}"#, #"line 1, byte 48, field "parent": must not be empty"#)
    }

    // MARK: Structure

    func testTopLevelMustBeOneObject() {
        assertDecodeError(#"[{"type":"issued"}]"#, #"line 1, byte 0: expected '{' (each line holds one JSON object), found '['"#)
        assertDecodeError(#""issued""#, #"line 1, byte 0: expected '{' (each line holds one JSON object), found '"'"#)
        assertDecodeError("   ", #"line 1, byte 3: expected '{' (each line holds one JSON object), found the end of the line"#)
        assertDecodeError("", #"line 1, byte 0: empty line (expected a JSON object)"#)
        assertDecodeError("{" + ok + "} x", #"line 1, byte 38: unexpected 'x' after the end of the JSON object"#)
        assertDecodeError("{" + ok + "}{}", #"line 1, byte 37: unexpected '{' after the end of the JSON object"#)
        assertDecodeError("{" + ok, #"line 1, byte 36: expected ',' or '}', found the end of the line"#)
    }

    func testSyntaxErrors() {
        assertDecodeError(#"{"type" "issued"}"#, #"line 1, byte 8: expected ':' after the field name, found '"'"#)
        assertDecodeError("{" + ok + ",}", #"line 1, byte 37: expected '"' to start a field name, found '}'"#)
        assertDecodeError("{" + ok + " \"sub\":\"x\"}", #"line 1, byte 37: expected ',' or '}' after a value, found '"'"#)
        assertDecodeError(#"{type:"issued"}"#, #"line 1, byte 1: expected '"' to start a field name, found 't'"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t"#, #"line 1, byte 32: unterminated string"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":tru}"#, #"line 1, byte 42: invalid literal (expected true, false or null)"#)
        assertDecodeError(#"{"type":"issued","ts":01,"token":"t"}"#, #"line 1, byte 22: leading zeros are not allowed in JSON numbers"#)
        assertDecodeError(#"{"type":"issued","ts":-,"token":"t"}"#, #"line 1, byte 23: expected a digit in a number, found ','"#)
        assertDecodeError(#"{"type":"issued","ts":1.,"token":"t"}"#, #"line 1, byte 24: expected a digit after '.', found ','"#)
        assertDecodeError(#"{"type":"issued","ts":1e,"token":"t"}"#, #"line 1, byte 24: expected a digit in the exponent, found ','"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","x":+1}"#, #"line 1, byte 40: expected a JSON value, found '+'"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"a":"b",}}"#, #"line 1, byte 53: expected '"' to start a key in attrs, found '}'"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"a":"b" "c":"d"}}"#, #"line 1, byte 53: expected ',' or '}' after a value in attrs, found '"'"#)
    }

    func testStringEscapeErrors() {
        assertDecodeError("{\"type\":\"issued\",\"ts\":1,\"token\":\"a\u{1}b\"}", #"line 1, byte 34: control character 0x01 must be escaped inside a string"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"a\xb"}"#, #"line 1, byte 44: invalid escape \x in a string"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"\u12G4"}"#, #"line 1, byte 43: \u escape needs four hex digits, found 'G'"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"\u12"}"#, #"line 1, byte 43: \u escape needs four hex digits"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"\uD83D"}"#,
                          #"line 1, byte 43: lone surrogate \uD83D (a high surrogate must be followed by a \uDC00-\uDFFF escape)"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"\uD83Dx\uDE00"}"#,
                          #"line 1, byte 43: lone surrogate \uD83D (a high surrogate must be followed by a \uDC00-\uDFFF escape)"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"\uD83D\u0041"}"#,
                          #"line 1, byte 43: lone surrogate \uD83D (followed by \u0041, not a low surrogate)"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"x\uDE00"}"#,
                          #"line 1, byte 44: lone surrogate \uDE00 (a low surrogate without a high one)"#)
        // The same rules hold inside keys and inside token values (whose text is never echoed).
        assertDecodeError(#"{"type":"issued","ts":1,"token":"\uDE00"}"#, #"line 1, byte 33: lone surrogate \uDE00 (a low surrogate without a high one)"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","\q":1}"#, #"line 1, byte 37: invalid escape \q in a string"#)
        XCTAssertEqual(decoded(#"{"type":"issued","ts":1,"token":"t","sub":"\uD83D\uDE00\u00e9\/\b\f\n\r\t\"\\"}"#)?.sub, "😀é/\u{8}\u{C}\n\r\t\"\\")
    }

    func testDuplicateKeys() {
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","ts":2}"#, #"line 1, byte 36, field "ts": duplicate field"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":null,"sub":"x"}"#, #"line 1, byte 47, field "sub": duplicate field"#)
        // An escaped spelling names the same key.
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","\u0074s":2}"#, #"line 1, byte 36, field "ts": duplicate field"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","x":1,"x":2}"#, #"line 1, byte 42, field "x": duplicate field"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"a":"1","a":"2"}}"#, #"line 1, byte 53, field "attrs": duplicate key "a""#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{},"attrs":{}}"#, #"line 1, byte 47, field "attrs": duplicate field"#)
    }

    // MARK: Limits

    func testStringFieldLimit() {
        var limits = EventLimits()
        limits.fieldBytesMax = 4
        XCTAssertEqual(decoded(#"{"type":"issued","ts":1,"token":"t","sub":"abcd"}"#, limits: limits)?.sub, "abcd")
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"abcde"}"#,
                          #"line 1, byte 42, field "sub": value is 5 bytes, over the limit of 4"#, limits: limits)
        // Bytes after unescaping: "\u00e9\u00e9" is 12 characters of JSON but 4 bytes of UTF-8.
        XCTAssertEqual(decoded(#"{"type":"issued","ts":1,"token":"t","sub":"\u00e9\u00e9"}"#, limits: limits)?.sub, "éé")
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","sub":"éé!"}"#,
                          #"line 1, byte 42, field "sub": value is 5 bytes, over the limit of 4"#, limits: limits)
    }

    func testLineLimit() {
        var limits = EventLimits()
        limits.lineBytesMax = 40
        let line = #"{"type":"issued","ts":1,"token":"abcdef"}"#
        XCTAssertEqual(line.utf8.count, 41)
        assertDecodeError(line, "line 1: line is 41 bytes, over the limit of 40", limits: limits)
        limits.lineBytesMax = 41
        XCTAssertNotNil(decoded(line + "\r", limits: limits))
    }

    func testAttrsLimits() {
        var limits = EventLimits()
        limits.attrsCountMax = 2
        limits.attrKeyBytesMax = 3
        limits.attrValueBytesMax = 4
        XCTAssertEqual(decoded(#"{"type":"issued","ts":1,"token":"t","attrs":{"abc":"1234","b":""}}"#, limits: limits)?.attrs, ["abc": "1234", "b": ""])
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"a":"1","b":"2","c":"3"}}"#,
                          #"line 1, byte 61, field "attrs": attrs would exceed 2 entries (unknown top-level fields are kept in attrs and count too)"#, limits: limits)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"abcd":"1"}}"#,
                          #"line 1, byte 45, field "attrs": key is 4 bytes, over the limit of 3"#, limits: limits)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"a":"12345"}}"#,
                          #"line 1, byte 49, field "attrs": value is 5 bytes, over the attrs value limit of 4"#, limits: limits)
        // Unknown fields count against the same limits.
        assertDecodeError(#"{"type":"issued","x":1,"ts":1,"token":"t","attrs":{"a":"1","b":"2"}}"#,
                          #"line 1, byte 59, field "attrs": attrs would exceed 2 entries (unknown top-level fields are kept in attrs and count too)"#, limits: limits)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","long":1}"#,
                          #"line 1, byte 36, field "long": unknown field name is 4 bytes, over the attrs key limit of 3 (unknown fields are kept in attrs)"#, limits: limits)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","x":123456}"#,
                          #"line 1, byte 40, field "x": value is 6 bytes, over the attrs value limit of 4 (unknown fields are kept in attrs)"#, limits: limits)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","x":"12345"}"#,
                          #"line 1, byte 40, field "x": value is 5 bytes, over the attrs value limit of 4"#, limits: limits)
    }

    // MARK: Unknown fields

    func testUnknownScalarFieldsAreKeptInAttrs() {
        let event = decoded(#"{"type":"issued","ts":1,"token":"t","a":"text","n":-1.5e3,"b":true,"f":false,"z":null,"attrs":{"k":"v"}}"#)
        XCTAssertEqual(event?.attrs, ["a": "text", "n": "-1.5e3", "b": "true", "f": "false", "z": "null", "k": "v"])
    }

    func testUnknownNonScalarFieldIsAnError() {
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","request":{"uri":"/"}}"#,
                          #"line 1, byte 46, field "request": unknown field "request" with a non-scalar value (an object); an unknown field is kept in attrs only when its value is a string, number, bool or null"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","tags":[]}"#,
                          #"line 1, byte 43, field "tags": unknown field "tags" with a non-scalar value (an array); an unknown field is kept in attrs only when its value is a string, number, bool or null"#)
    }

    func testUnknownFieldCollidingWithAttrsKeyIsAnError() {
        // Whichever comes first on the line.
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","k":"x","attrs":{"k":"v"}}"#,
                          #"line 1, byte 53, field "k": unknown field is kept in attrs, but attrs also has the key "k""#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","attrs":{"k":"v"},"k":"x"}"#,
                          #"line 1, byte 54, field "k": unknown field is kept in attrs, but attrs also has the key "k""#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","":"x"}"#,
                          #"line 1, byte 36: a field with an empty name cannot be kept in attrs"#)
    }

    func testInvalidTimestampText() {
        assertDecodeError(#"{"type":"issued","ts":"2026-13-01T00:00:00Z","token":"t"}"#,
                          #"line 1, byte 22, field "ts": invalid RFC 3339 timestamp "2026-13-01T00:00:00Z": month 13 is out of range (01-12)"#)
        assertDecodeError(#"{"type":"issued","ts":"yesterday","token":"t"}"#,
                          #"line 1, byte 22, field "ts": invalid RFC 3339 timestamp "yesterday": expected 4-digit year at byte 0, found 'y'"#)
        assertDecodeError(#"{"type":"issued","ts":1,"token":"t","exp":"2026-02-29T00:00:00Z"}"#,
                          #"line 1, byte 42, field "exp": invalid RFC 3339 timestamp "2026-02-29T00:00:00Z": day 29 is out of range for 2026-02 (01-28)"#)
        assertDecodeError(#"{"type":"issued","ts":"1700000000000","token":"t"}"#,
                          #"line 1, byte 22, field "ts": invalid RFC 3339 timestamp "1700000000000": expected '-' after the year at byte 4, found '0'"#)
    }

    func testTokenValuesNeverAppearInErrors() {
        var limits = EventLimits()
        limits.fieldBytesMax = 16
        let line = #"{"type":"issued","ts":1,"token":""# + SampleTokens.jwt + #""}"#
        guard let error = decodeError(line, limits: limits) else { return }
        XCTAssertEqual(error.description, #"line 1, byte 32, field "token": value is 71 bytes, over the limit of 16"#)
        XCTAssertFalse(error.description.contains("eyJ"))
    }

    func testNullMeansAbsentForOptionalFields() {
        let fields = ["token_type", "sub", "client_id", "iss", "aud", "scope", "exp", "parent", "gateway", "release", "track",
                      "route", "method", "status", "client_ip", "request_id", "reason", "weight", "attrs"]
        let line = #"{"type":"issued","ts":1,"token":"t","# + fields.map { "\"\($0)\":null" }.joined(separator: ",") + "}"
        XCTAssertEqual(decoded(line), Event(type: .issued, ts: 1, token: "t"))
        XCTAssertEqual(decoded(#"{"type":"deploy","ts":1,"marker":"m","token":null}"#), Event(type: .deploy, ts: 1, marker: "m"))
    }

    func testEveryFieldMapsToItsProperty() {
        let line = #"{"type":"refreshed","ts":10,"token":"new","token_type":"access","sub":"u1","client_id":"c1","iss":"i","aud":"a","scope":"s","exp":20,"parent":"old","gateway":"g","release":"r","track":"canary","route":"/x","method":"GET","status":200,"client_ip":"10.0.0.1","request_id":"q","reason":"ok","marker":"mk","weight":7,"attrs":{"k":"v"}}"#
        let expected = Event(type: .refreshed, ts: 10, token: "new", tokenType: "access", sub: "u1", clientID: "c1", iss: "i", aud: "a",
                             scope: "s", exp: 20, parent: "old", gateway: "g", release: "r", track: "canary", route: "/x", method: "GET",
                             status: 200, clientIP: "10.0.0.1", requestID: "q", reason: "ok", marker: "mk", weight: 7, attrs: ["k": "v"])
        XCTAssertEqual(decoded(line), expected)
        XCTAssertEqual(NDJSONEncoder.line(expected), line)
    }

    func testFieldTableMatchesNamesAndNothingElse() {
        for field in NDJSONField.allCases {
            var name = field.name
            let matched = name.withUTF8 { NDJSONField.match($0.baseAddress!, $0.count) }
            XCTAssertEqual(matched, field, field.name)
            // Near misses: one byte changed, one byte more, one byte less.
            for variant in [name.uppercased(), name + "x", String(name.dropLast()), String(name.dropFirst()), "x" + name.dropFirst()] {
                var v = variant
                let m = v.withUTF8 { NDJSONField.match($0.baseAddress!, $0.count) }
                XCTAssertNil(m, "\(variant) must not match")
            }
        }
        XCTAssertEqual(decoded(#"{"type":"issued","ts":1,"token":"t","Type":"x","tokens":"y"}"#)?.attrs, ["Type": "x", "tokens": "y"])
    }

    func testWhitespaceBetweenTokens() {
        let line = " \t{ \"type\" :\t\"issued\" , \"ts\" : 1 ,\"token\":\"t\" , \"attrs\" : { \"a\" : \"b\" } } \t\r"
        XCTAssertEqual(decoded(line), Event(type: .issued, ts: 1, token: "t", attrs: ["a": "b"]))
    }
}

extension NDJSONDecoderErrorTests {
    func testEventTypeTableMatchesNamesAndNothingElse() {
        for type in EventType.allCases {
            for (text, expected) in [(type.name, type), (type.name.uppercased(), nil), (type.name + "s", nil),
                                     (String(type.name.dropLast()), nil), ("x" + type.name.dropFirst(), nil)] as [(String, EventType?)] {
                var copy = text
                let matched = copy.withUTF8 { NDJSONParser.eventType($0.baseAddress!, $0.count) }
                XCTAssertEqual(matched, expected, text)
            }
        }
    }
}
