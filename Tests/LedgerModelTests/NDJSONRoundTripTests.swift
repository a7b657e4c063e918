import XCTest
@testable import LedgerModel

/// Property: whatever the encoder writes, the decoder reads back as the same Event, and the same
/// holds for other spellings of the same JSON (field order, whitespace, escapes, nulls).
final class NDJSONRoundTripTests: XCTestCase {
    func testEncoderOutputDecodesToTheSameEvent() {
        let seed = testSeed(0x5EED_0001)
        var rng = SeededGenerator(seed: seed)
        let decoder = NDJSONDecoder()
        for iteration in 0..<3000 {
            let event = RandomEvent.make(&rng)
            let line = NDJSONEncoder.line(event)
            do {
                let back = try decoder.decode(line: line, lineNumber: iteration + 1)
                XCTAssertEqual(back, event, "seed \(seed), iteration \(iteration), line: \(line)")
                if back != event { return }
            } catch {
                XCTFail("seed \(seed), iteration \(iteration): \(error)\nline: \(line)")
                return
            }
        }
    }

    func testReplayOutputKeepsSeqAndReceivedAtInAttrs() throws {
        let event = Event(type: .issued, ts: 5, token: "t1")
        let line = NDJSONEncoder.line(event, seq: SequenceNumber(7), receivedAt: 9)
        let back = try NDJSONDecoder().decode(line: line)
        var expected = event
        expected.attrs = ["seq": "7", "received_at": "9"]
        XCTAssertEqual(back, expected)
    }

    func testOtherSpellingsOfTheSameJSONDecodeToTheSameEvent() {
        let seed = testSeed(0x5EED_0002)
        var rng = SeededGenerator(seed: seed)
        let decoder = NDJSONDecoder()
        for iteration in 0..<2000 {
            let event = RandomEvent.make(&rng)
            let escapeAll = iteration % 2 == 0
            let line = VariantEncoder.line(event, &rng, escapeAll: escapeAll)
            do {
                let back = try decoder.decode(line: line, lineNumber: 1)
                XCTAssertEqual(back, event, "seed \(seed), iteration \(iteration), line: \(line)")
                if back != event { return }
            } catch {
                XCTFail("seed \(seed), iteration \(iteration): \(error)\nline: \(line)")
                return
            }
        }
    }

    func testDecodingThroughTheBytesAPIWithCRLFMatchesTheStringAPI() throws {
        var rng = SeededGenerator(seed: testSeed(0x5EED_0003))
        let decoder = NDJSONDecoder()
        for _ in 0..<200 {
            let event = RandomEvent.make(&rng)
            var bytes = [UInt8]()
            NDJSONEncoder.append(event, to: &bytes)
            bytes.removeLast()
            bytes.append(0x0D)
            XCTAssertEqual(try decoder.decode(line: bytes, lineNumber: 1), event)
            XCTAssertEqual(try decoder.decode(line: bytes[...], lineNumber: 1), event)
        }
    }

    func testLimitsAreInclusive() throws {
        let limits = EventLimits.default
        var event = Event(type: .deploy, ts: 1, marker: "m1")
        event.sub = String(repeating: "s", count: limits.fieldBytesMax)
        event.route = String(repeating: "é", count: limits.fieldBytesMax / 2)
        for k in 0..<limits.attrsCountMax {
            let key = String(format: "%02d", k) + String(repeating: "k", count: limits.attrKeyBytesMax - 2)
            event.attrs[key] = String(repeating: "v", count: limits.attrValueBytesMax)
        }
        XCTAssertEqual(try NDJSONDecoder().decode(line: NDJSONEncoder.line(event)), event)
    }
}

extension NDJSONRoundTripTests {
    /// The decoder starts each event as a byte copy of `blankEvent`, which is only a valid copy if
    /// nothing in it needs retaining. A field added to Event with a reference-holding default would
    /// break that; this names it.
    func testBlankEventHoldsNoReferences() {
        for child in Mirror(reflecting: NDJSONParser.blankEvent).children {
            let label = child.label ?? "?"
            switch child.value {
            case is EventType, is Int64: continue
            case let attrs as [String: String]: XCTAssertTrue(attrs.isEmpty, label)
            default:
                let optional = Mirror(reflecting: child.value)
                XCTAssertEqual(optional.displayStyle, .optional, "\(label) is neither nil nor a plain value")
                XCTAssertEqual(optional.children.count, 0, "\(label) must be nil in the blank event")
            }
        }
    }
}
