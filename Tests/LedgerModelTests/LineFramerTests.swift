import XCTest
@testable import LedgerModel

/// The framer must give the same lines and oversized reports however the stream is chunked, and
/// those must match a naive split-on-newline model.
final class LineFramerTests: XCTestCase {
    /// A result with the line's bytes copied out, so results from different framers compare.
    enum Framed: Equatable, CustomStringConvertible {
        case line(Int, [UInt8])
        case oversized(Int, Int)

        init(_ result: LineFramer.LineResult) {
            switch result {
            case .line(let number, let bytes): self = .line(number, Array(bytes))
            case .oversized(let number, let count): self = .oversized(number, count)
            }
        }

        var description: String {
            switch self {
            case .line(let n, let bytes): "line \(n): \(String(decoding: bytes, as: UTF8.self).debugDescription)"
            case .oversized(let n, let count): "line \(n): oversized \(count)"
            }
        }
    }

    func limits(_ lineBytesMax: Int) -> EventLimits {
        var limits = EventLimits()
        limits.lineBytesMax = lineBytesMax
        return limits
    }

    /// The specification, written as plainly as possible.
    func model(_ input: [UInt8], lineBytesMax: Int) -> [Framed] {
        var pieces = input.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        if pieces.last?.isEmpty == true { pieces.removeLast() } // the input ended with a newline
        var out: [Framed] = []
        for (index, piece) in pieces.enumerated() {
            var line = piece
            if line.last == 0x0D { line.removeLast() }
            if line.count > lineBytesMax {
                out.append(.oversized(index + 1, line.count))
            } else if !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                out.append(.line(index + 1, line))
            }
        }
        return out
    }

    /// Feeds `chunks`, draining after each append (or, with `lazy`, only now and then).
    func frame(_ chunks: [[UInt8]], lineBytesMax: Int, lazy: Bool = false, rng: inout SeededGenerator) -> [Framed] {
        var framer = LineFramer(limits: limits(lineBytesMax))
        var out: [Framed] = []
        for chunk in chunks {
            framer.append(chunk)
            if !lazy || Int.random(in: 0..<4, using: &rng) == 0 {
                while let result = framer.nextLine() { out.append(Framed(result)) }
            }
        }
        framer.finish()
        while let result = framer.nextLine() { out.append(Framed(result)) }
        XCTAssertNil(framer.nextLine())
        return out
    }

    func chunked(_ input: [UInt8], sizes: (inout SeededGenerator) -> Int, rng: inout SeededGenerator) -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        var start = 0
        while start < input.count {
            let size = min(sizes(&rng), input.count - start)
            chunks.append(Array(input[start..<start + size]))
            start += size
        }
        return chunks
    }

    func randomStream(_ rng: inout SeededGenerator, lineBytesMax: Int) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<Int.random(in: 0...40, using: &rng) {
            var line: [UInt8]
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: line = []
            case 1: line = Array(repeating: [0x20, 0x09, 0x0D].randomElement(using: &rng)!, count: Int.random(in: 1...3, using: &rng))
            case 2: line = Array(repeating: 0x78, count: Int.random(in: lineBytesMax * 2...lineBytesMax * 5, using: &rng))
            default:
                let length = Int.random(in: max(0, lineBytesMax - 3)...lineBytesMax + 2, using: &rng)
                line = (0..<length).map { _ in [0x61, 0x7B, 0x22, 0x0D, 0x20].randomElement(using: &rng)! }
            }
            if Bool.random(using: &rng) { line.append(0x0D) }
            out += line
            out.append(0x0A)
        }
        if Bool.random(using: &rng) { // a last line without newline
            out += Array(repeating: 0x79, count: Int.random(in: 0...lineBytesMax + 3, using: &rng))
            if Bool.random(using: &rng) { out.append(0x0D) }
        }
        return out
    }

    func testBasicFraming() {
        var rng = SeededGenerator(seed: 1)
        let input = Array("{\"a\":1}\n\n  \t\n{\"b\":2}\r\n\r\nlast".utf8)
        let expected: [Framed] = [.line(1, Array("{\"a\":1}".utf8)), .line(4, Array("{\"b\":2}".utf8)), .line(6, Array("last".utf8))]
        XCTAssertEqual(frame([input], lineBytesMax: 100, rng: &rng), expected)
        XCTAssertEqual(model(input, lineBytesMax: 100), expected)
    }

    func testNoFinalLineUntilFinish() {
        var framer = LineFramer()
        framer.append(Array("abc\ndef".utf8))
        XCTAssertEqual(framer.nextLine().map(Framed.init), .line(1, Array("abc".utf8)))
        XCTAssertNil(framer.nextLine())
        framer.finish()
        XCTAssertEqual(framer.nextLine().map(Framed.init), .line(2, Array("def".utf8)))
        XCTAssertNil(framer.nextLine())
    }

    func testOversizedBoundaries() {
        var rng = SeededGenerator(seed: 2)
        let ten = Array(repeating: UInt8(ascii: "a"), count: 10)
        let eleven = ten + [UInt8(ascii: "b")]
        // Exactly the limit, also with CR; one over; over with CR (the CR is not counted).
        let input = ten + [0x0A] + ten + [0x0D, 0x0A] + eleven + [0x0A] + eleven + [0x0D, 0x0A] + Array(repeating: 0x20, count: 30) + [0x0A] + eleven
        let expected: [Framed] = [.line(1, ten), .line(2, ten), .oversized(3, 11), .oversized(4, 11), .oversized(5, 30), .oversized(6, 11)]
        XCTAssertEqual(model(input, lineBytesMax: 10), expected)
        XCTAssertEqual(frame([input], lineBytesMax: 10, rng: &rng), expected)
        XCTAssertEqual(frame(input.map { [$0] }, lineBytesMax: 10, rng: &rng), expected)
    }

    func testChunkingNeverChangesTheResult() {
        let seed = testSeed(0xF4A3_0001)
        var rng = SeededGenerator(seed: seed)
        for iteration in 0..<400 {
            let lineBytesMax = Int.random(in: 1...24, using: &rng)
            let input = randomStream(&rng, lineBytesMax: lineBytesMax)
            let expected = model(input, lineBytesMax: lineBytesMax)
            let context = "seed \(seed), iteration \(iteration), limit \(lineBytesMax)"
            XCTAssertEqual(frame([input], lineBytesMax: lineBytesMax, rng: &rng), expected, "all at once, " + context)
            XCTAssertEqual(frame(input.map { [$0] }, lineBytesMax: lineBytesMax, rng: &rng), expected, "byte by byte, " + context)
            let small = chunked(input, sizes: { Int.random(in: 1...7, using: &$0) }, rng: &rng)
            XCTAssertEqual(frame(small, lineBytesMax: lineBytesMax, rng: &rng), expected, "small chunks, " + context)
            let mixed = chunked(input, sizes: { Int.random(in: 1...(lineBytesMax * 6), using: &$0) }, rng: &rng)
            XCTAssertEqual(frame(mixed, lineBytesMax: lineBytesMax, rng: &rng), expected, "random chunks, " + context)
            XCTAssertEqual(frame(mixed + [[]], lineBytesMax: lineBytesMax, lazy: true, rng: &rng), expected, "lazy draining, " + context)
        }
    }

    func testAnEndlessLineIsNotBuffered() {
        var framer = LineFramer(limits: limits(1000))
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        var results: [Framed] = []
        for _ in 0..<2560 { // 10 MiB without a newline
            framer.append(chunk)
            XCTAssertLessThanOrEqual(framer.bufferedByteCount, 1001)
            while let result = framer.nextLine() { results.append(Framed(result)) }
        }
        XCTAssertTrue(framer.isInOversizedLine)
        XCTAssertEqual(results, [], "reported once, when the line ends")
        framer.append(Array("\r\n{\"ok\":1}\n".utf8))
        while let result = framer.nextLine() { results.append(Framed(result)) }
        XCTAssertEqual(results, [.oversized(1, 4096 * 2560), .line(2, Array("{\"ok\":1}".utf8))])
        XCTAssertFalse(framer.isInOversizedLine)
    }

    func testAnEndlessLineAtEndOfStreamIsReported() {
        var framer = LineFramer(limits: limits(4))
        framer.append(Array("ok\n0123456789".utf8))
        XCTAssertEqual(framer.nextLine().map(Framed.init), .line(1, Array("ok".utf8)))
        XCTAssertNil(framer.nextLine())
        framer.finish()
        XCTAssertEqual(framer.nextLine().map(Framed.init), .oversized(2, 10))
        XCTAssertNil(framer.nextLine())
    }

    func testLinesHeldAcrossAppendsStayIntact() {
        var framer = LineFramer()
        framer.append(Array("first\nsec".utf8))
        guard case .line(_, let first) = framer.nextLine() else { return XCTFail() }
        framer.append(Array("ond\n".utf8))
        guard case .line(_, let second) = framer.nextLine() else { return XCTFail() }
        XCTAssertEqual(Array(first), Array("first".utf8))
        XCTAssertEqual(Array(second), Array("second".utf8))
    }

    func testFramedLinesDecode() throws {
        var framer = LineFramer()
        framer.append(Array("{\"type\":\"issued\",\"ts\":1,\"token\":\"a\"}\r\n\n{\"type\":\"deploy\",\"ts\":2,\"marker\":\"m\"}".utf8))
        framer.finish()
        var events: [Event] = []
        var numbers: [Int] = []
        while let result = framer.nextLine() {
            guard case .line(let number, let bytes) = result else { return XCTFail("\(result)") }
            events.append(try NDJSONDecoder().decode(line: bytes, lineNumber: number))
            numbers.append(number)
        }
        XCTAssertEqual(events, [Event(type: .issued, ts: 1, token: "a"), Event(type: .deploy, ts: 2, marker: "m")])
        XCTAssertEqual(numbers, [1, 3])
    }
}
