import XCTest
@testable import LedgerModel

final class TimestampTests: XCTestCase {
    func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> Int64? {
        do {
            return try Timestamp.parseRFC3339(text)
        } catch {
            XCTFail("\(text): \(error)", file: file, line: line)
            return nil
        }
    }

    func reason(_ text: String) -> String? {
        do {
            let value = try Timestamp.parseRFC3339(text)
            XCTFail("\(text) parsed as \(value)")
            return nil
        } catch {
            return error.reason
        }
    }

    func testKnownInstants() {
        XCTAssertEqual(parse("1970-01-01T00:00:00Z"), 0)
        XCTAssertEqual(parse("2026-11-24T10:15:30Z"), 1_795_515_330_000)
        XCTAssertEqual(parse("2026-11-24T10:15:30.123+01:00"), 1_795_511_730_123)
        XCTAssertEqual(parse("2000-02-29T12:00:00Z"), 951_825_600_000)
        XCTAssertEqual(parse("1969-12-31T23:59:59.999Z"), -1)
        XCTAssertEqual(parse("0000-01-01T00:00:00Z"), -62_167_219_200_000)
        XCTAssertEqual(parse("9999-12-31T23:59:59.999Z"), 253_402_300_799_999)
    }

    func testVariantsOfTheSameInstantAreEqual() {
        let expected: Int64 = 1_795_515_330_000
        for text in ["2026-11-24T10:15:30Z", "2026-11-24t10:15:30z", "2026-11-24 10:15:30Z", "2026-11-24T10:15:30.000Z",
                     "2026-11-24T10:15:30+00:00", "2026-11-24T10:15:30-00:00", "2026-11-24T11:45:30+01:30",
                     "2026-11-24T00:15:30-10:00", "2026-11-25T09:14:30+22:59", "2026-11-24T10:15:30.0009Z"] {
            XCTAssertEqual(parse(text), expected, text)
        }
    }

    func testFractionsAreTruncatedToMilliseconds() {
        XCTAssertEqual(parse("1970-01-01T00:00:00.1Z"), 100)
        XCTAssertEqual(parse("1970-01-01T00:00:00.12Z"), 120)
        XCTAssertEqual(parse("1970-01-01T00:00:00.1239999999999999999999Z"), 123)
        XCTAssertEqual(parse("1970-01-01T00:00:00.000001Z"), 0)
        // Truncation is towards the past, also before 1970.
        XCTAssertEqual(parse("1969-12-31T23:59:59.9999Z"), -1)
    }

    func testLeapSecondIsTheNextMinute() {
        XCTAssertEqual(parse("2016-12-31T23:59:60Z"), parse("2017-01-01T00:00:00Z"))
        XCTAssertEqual(parse("2016-12-31T23:59:60.5Z"), parse("2017-01-01T00:00:00.5Z"))
    }

    func testCalendarRules() {
        XCTAssertNotNil(parse("2024-02-29T00:00:00Z"))
        XCTAssertNotNil(parse("2000-02-29T00:00:00Z"))
        XCTAssertEqual(reason("2023-02-29T00:00:00Z"), "day 29 is out of range for 2023-02 (01-28)")
        XCTAssertEqual(reason("1900-02-29T00:00:00Z"), "day 29 is out of range for 1900-02 (01-28)")
        XCTAssertEqual(reason("2026-04-31T00:00:00Z"), "day 31 is out of range for 2026-04 (01-30)")
        XCTAssertEqual(reason("2026-01-00T00:00:00Z"), "day 0 is out of range for 2026-01 (01-31)")
        XCTAssertEqual(reason("2026-13-01T00:00:00Z"), "month 13 is out of range (01-12)")
        XCTAssertEqual(reason("2026-00-01T00:00:00Z"), "month 0 is out of range (01-12)")
        XCTAssertEqual(reason("2026-01-01T24:00:00Z"), "hour 24 is out of range (00-23)")
        XCTAssertEqual(reason("2026-01-01T23:60:00Z"), "minute 60 is out of range (00-59)")
        XCTAssertEqual(reason("2026-01-01T23:59:61Z"), "second 61 is out of range (00-60)")
        XCTAssertEqual(reason("2026-01-01T00:00:00+24:00"), "offset hour 24 is out of range (00-23)")
        XCTAssertEqual(reason("2026-01-01T00:00:00+01:60"), "offset minute 60 is out of range (00-59)")
    }

    func testSyntax() {
        XCTAssertEqual(reason("2026-01-01T00:00:00"), "expected 'Z' or a ±hh:mm offset at byte 19, found the end")
        XCTAssertEqual(reason("2026-01-01"), "expected 'T' between date and time at byte 10, found the end")
        XCTAssertEqual(reason("2026-1-01T00:00:00Z"), "expected 2-digit month at byte 6, found '-'")
        XCTAssertEqual(reason("26-01-01T00:00:00Z"), "expected 4-digit year at byte 2, found '-'")
        XCTAssertEqual(reason("2026-01-01X00:00:00Z"), "expected 'T' between date and time at byte 10, found 'X'")
        XCTAssertEqual(reason("2026-01-01T00:00:00.Z"), "expected a digit after '.' at byte 20")
        XCTAssertEqual(reason("2026-01-01T00:00:00+0100"), "expected ':' in the offset at byte 22, found '0'")
        XCTAssertEqual(reason("2026-01-01T00:00:00Z "), "unexpected ' ' at byte 20 after the timestamp")
        XCTAssertEqual(reason("2026-01-01T00:00:00ZZ"), "unexpected 'Z' at byte 20 after the timestamp")
        XCTAssertEqual(reason(""), "expected 4-digit year at byte 0, found the end")
        XCTAssertEqual(reason("+2026-01-01T00:00:00Z"), "expected 4-digit year at byte 0, found '+'")
    }

    func testFormat() {
        XCTAssertEqual(Timestamp.formatRFC3339(epochMilliseconds: 0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(Timestamp.formatRFC3339(epochMilliseconds: -1), "1969-12-31T23:59:59.999Z")
        XCTAssertEqual(Timestamp.formatRFC3339(epochMilliseconds: 1_795_511_730_123), "2026-11-24T09:15:30.123Z")
        XCTAssertEqual(Timestamp.formatRFC3339(epochMilliseconds: -62_167_219_200_000), "0000-01-01T00:00:00.000Z")
        XCTAssertEqual(Timestamp.formatRFC3339(epochMilliseconds: 253_402_300_799_999), "9999-12-31T23:59:59.999Z")
        XCTAssertNil(Timestamp.formatRFC3339(epochMilliseconds: -62_167_219_200_001))
        XCTAssertNil(Timestamp.formatRFC3339(epochMilliseconds: 253_402_300_800_000))
        XCTAssertNil(Timestamp.formatRFC3339(epochMilliseconds: .min))
        XCTAssertNil(Timestamp.formatRFC3339(epochMilliseconds: .max))
    }

    func testFormatThenParseIsIdentity() {
        let seed = testSeed(0x7153_0001)
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<20_000 {
            let ms = Int64.random(in: -62_167_219_200_000...253_402_300_799_999, using: &rng)
            guard let text = Timestamp.formatRFC3339(epochMilliseconds: ms) else {
                XCTFail("seed \(seed): \(ms) not formatted")
                return
            }
            XCTAssertEqual(try? Timestamp.parseRFC3339(text), ms, "seed \(seed): \(text)")
        }
    }

    func testParseAcceptsEpochMillisecondsOrRFC3339() {
        XCTAssertEqual(try Timestamp.parse("1795515330000"), 1_795_515_330_000)
        XCTAssertEqual(try Timestamp.parse("-5"), -5)
        XCTAssertEqual(try Timestamp.parse("2026-11-24T10:15:30Z"), 1_795_515_330_000)
        XCTAssertThrowsError(try Timestamp.parse("99999999999999999999"))
        XCTAssertThrowsError(try Timestamp.parse("2026-11-24"))
        XCTAssertThrowsError(try Timestamp.parse(""))
        XCTAssertThrowsError(try Timestamp.parse("-"))
    }

    /// RFC 3339 text and epoch ms are two spellings of one instant in decoded events.
    func testDecoderTreatsBothFormsAlike() throws {
        let decoder = NDJSONDecoder()
        let a = try decoder.decode(line: #"{"type":"issued","ts":"2026-11-24T10:15:30.123+01:00","token":"t","exp":"2026-11-24T10:15:30Z"}"#)
        let b = try decoder.decode(line: #"{"type":"issued","ts":1795511730123,"token":"t","exp":1795515330000}"#)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.ts, 1_795_511_730_123)
        // Escapes inside the string are honoured before parsing.
        let c = try decoder.decode(line: #"{"type":"issued","ts":"2026-11-24T10:15:30.123\u002B01:00","token":"t","exp":1795515330000}"#)
        XCTAssertEqual(c, b)
    }
}
