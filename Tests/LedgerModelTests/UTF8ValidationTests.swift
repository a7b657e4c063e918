import XCTest
@testable import LedgerModel

/// Ill-formed UTF-8 anywhere in a line is rejected with the offset of the sequence's first byte.
final class UTF8ValidationTests: XCTestCase {
    let prefix = Array(#"{"type":"issued","ts":1,"token":"t","sub":""#.utf8) // 43 bytes
    let suffix = Array(#""}"#.utf8)

    func error(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> EventDecodeError? {
        do {
            let event = try NDJSONDecoder().decode(line: bytes, lineNumber: 3)
            XCTFail("decoded \(event)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func assertInvalid(_ inner: [UInt8], offset: Int, _ reason: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let error = error(prefix + inner + suffix, file: file, line: line) else { return }
        XCTAssertEqual(error.description, "line 3, byte \(prefix.count + offset): invalid UTF-8 (\(reason))", file: file, line: line)
        XCTAssertEqual(error.byteOffset, prefix.count + offset, file: file, line: line)
    }

    func testOverlongEncodings() {
        assertInvalid([0xC0, 0xAF], offset: 0, "overlong encoding starting with 0xC0")
        assertInvalid([0x41, 0xC1, 0xBF], offset: 1, "overlong encoding starting with 0xC1")
        assertInvalid([0xE0, 0x80, 0xAF], offset: 0, "overlong encoding starting with 0xE0")
        assertInvalid([0xE0, 0x9F, 0xBF], offset: 0, "overlong encoding starting with 0xE0")
        assertInvalid([0xF0, 0x80, 0x80, 0xAF], offset: 0, "overlong encoding starting with 0xF0")
        assertInvalid([0xF0, 0x8F, 0xBF, 0xBF], offset: 0, "overlong encoding starting with 0xF0")
    }

    func testSurrogatesEncodedInUTF8() {
        assertInvalid([0xED, 0xA0, 0x80], offset: 0, "UTF-16 surrogate encoded in UTF-8")
        assertInvalid([0x61, 0x62, 0xED, 0xBF, 0xBF], offset: 2, "UTF-16 surrogate encoded in UTF-8")
        // A CESU-8 style pair is two surrogates, not one emoji.
        assertInvalid([0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80], offset: 0, "UTF-16 surrogate encoded in UTF-8")
    }

    func testTruncatedSequences() {
        assertInvalid([0xE2, 0x82], offset: 0, "truncated sequence starting with 0xE2")
        assertInvalid([0xE2, 0x82, 0x41], offset: 0, "truncated sequence starting with 0xE2")
        assertInvalid([0xF0, 0x9F, 0x98], offset: 0, "truncated sequence starting with 0xF0")
        assertInvalid([0x61, 0xC3], offset: 1, "truncated sequence starting with 0xC3")
        // At the very end of the line, not followed by the closing quote.
        guard let error = error(prefix + [0xC3]) else { return }
        XCTAssertEqual(error.byteOffset, prefix.count)
        XCTAssertEqual(error.reason, "invalid UTF-8 (truncated sequence starting with 0xC3)")
    }

    func testOtherIllFormedBytes() {
        assertInvalid([0x80], offset: 0, "unexpected continuation byte 0x80")
        assertInvalid([0xC3, 0xA9, 0xA9], offset: 2, "unexpected continuation byte 0xA9")
        assertInvalid([0xF4, 0x90, 0x80, 0x80], offset: 0, "code point above U+10FFFF")
        assertInvalid([0xF5, 0x80, 0x80, 0x80], offset: 0, "code point above U+10FFFF")
        assertInvalid([0xFF], offset: 0, "byte 0xFF never appears in UTF-8")
        assertInvalid([0xFE], offset: 0, "byte 0xFE never appears in UTF-8")
    }

    func testInvalidBytesOutsideStringsAreReportedAsUTF8() {
        var line = Array(#"{"type":"issued","ts":1,"token":"t"}"#.utf8)
        line.insert(0xFF, at: 5)
        XCTAssertEqual(error(line)?.description, "line 3, byte 5: invalid UTF-8 (byte 0xFF never appears in UTF-8)")
        line = Array(#"{"type":"issued","ts":1,"token":"t"}"#.utf8) + [0xC0]
        XCTAssertEqual(error(line)?.description, "line 3, byte 36: invalid UTF-8 (overlong encoding starting with 0xC0)")
    }

    func testBoundaryScalarsAreAccepted() throws {
        let scalars: [UInt32] = [0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x10FFFF]
        var text = ""
        for value in scalars { text.unicodeScalars.append(UnicodeScalar(value)!) }
        let event = try NDJSONDecoder().decode(line: prefix + Array(text.utf8) + suffix, lineNumber: 1)
        XCTAssertEqual(event.sub, text)
    }

    /// The validator agrees with the standard library on random, mostly-invalid byte strings, and
    /// names the first bad sequence where the standard library's decoder first repairs.
    func testAgreesWithTheStandardLibrary() {
        let seed = testSeed(0x0718_0001)
        var rng = SeededGenerator(seed: seed)
        let interesting: [UInt8] = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
                                    0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
        for iteration in 0..<50_000 {
            let count = Int.random(in: 0...12, using: &rng)
            let bytes = (0..<count).map { _ in Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng) }
            let problem = bytes.withUnsafeBufferPointer { buffer in
                EventUTF8Validation.firstProblem(buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!, buffer.count)
            }
            let valid = String(validating: bytes, as: UTF8.self) != nil
            XCTAssertEqual(problem == nil, valid, "seed \(seed), iteration \(iteration): \(bytes)")
            if let problem {
                // Everything before the reported offset is well-formed on its own.
                XCTAssertNotNil(String(validating: bytes[..<problem.offset], as: UTF8.self), "seed \(seed), iteration \(iteration): \(bytes)")
            }
        }
    }
}

extension UTF8ValidationTests {
    /// UTF-8 is checked as strings are scanned, with a whole-line check only when a line fails; so
    /// for random corruptions of valid lines: a line decodes only if it is valid UTF-8, and an
    /// invalid line always reports its first bad sequence, wherever that lies.
    func testCorruptedLinesReportTheirFirstInvalidSequence() {
        let seed = testSeed(0x0718_0002)
        var rng = SeededGenerator(seed: seed)
        let decoder = NDJSONDecoder()
        for iteration in 0..<5000 {
            var bytes = Array(NDJSONEncoder.line(RandomEvent.make(&rng)).utf8)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let position = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[position] = [0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xFF, 0x5C, 0x22].randomElement(using: &rng)!
            }
            let firstProblem = bytes.withUnsafeBufferPointer { EventUTF8Validation.firstProblem($0.baseAddress!, $0.count) }
            XCTAssertEqual(firstProblem == nil, String(validating: bytes, as: UTF8.self) != nil)
            do {
                _ = try decoder.decode(line: bytes, lineNumber: 1)
                XCTAssertNil(firstProblem, "seed \(seed), iteration \(iteration): an invalid line decoded")
            } catch {
                if let firstProblem {
                    XCTAssertEqual(error.byteOffset, firstProblem.offset, "seed \(seed), iteration \(iteration): \(error)")
                    XCTAssertTrue(error.reason.hasPrefix("invalid UTF-8"), "seed \(seed), iteration \(iteration): \(error)")
                } else {
                    XCTAssertFalse(error.reason.hasPrefix("invalid UTF-8"), "seed \(seed), iteration \(iteration): \(error)")
                }
            }
        }
    }
}
