@testable import LedgerCLI
import LedgerModel
import LedgerStorage
import XCTest

/// The importer splits input into lines itself (in bulk, per read). However the input is cut
/// into reads, the ledger must hold the same events and report the same bad lines.
final class ImporterChunkTests: XCTestCase {
    func importAll(_ input: [UInt8], cuts: [Int], skipInvalid: Bool) throws -> ([Event], NDJSONImporter.Outcome) {
        let fs = SimulatedFileSystem()
        let log = try SegmentLog.open(directory: "/l", options: LogOptions(blockEventsMax: 64), fileSystem: fs, clock: FixedClock(ms: 0))
        var options = NDJSONImporter.Options()
        options.skipInvalid = skipInvalid
        options.showProgress = false
        options.chunkLines = 50
        options.limits.lineBytesMax = 300
        let importer = NDJSONImporter(log: log, options: options)
        var start = 0
        for cut in cuts + [input.count] where cut > start {
            input[start..<cut].withUnsafeBytes { importer.feed($0, flush: cut % 3 == 0) }
            start = cut
        }
        let outcome = try importer.finish()
        var events = [Event]()
        for location in log.blocks { events += try log.readBlock(location).events }
        return (events, outcome)
    }

    func testRandomChunkingGivesTheSameLedger() throws {
        var lines = [String]()
        for i in 0..<400 {
            switch i % 37 {
            case 5: lines.append("{\"type\":\"validated\",\"ts\":true,\"token\":\"t\(i)\"}")       // wrong type
            case 11: lines.append("{\"type\":\"validated\",\"ts\":1,\"token\":\"" + String(repeating: "x", count: 400) + "\"}") // over 300 bytes
            case 17: lines.append("   ")                                                           // blank, counted
            default: lines.append("{\"type\":\"validated\",\"ts\":\(i),\"token\":\"tok-\(i % 23)\",\"sub\":\"user-\(i % 7)\"}")
            }
        }
        let input = Array((lines.joined(separator: "\n") + "\n{\"type\":\"issued\",\"ts\":9,\"token\":\"last\"}").utf8)
        for skip in [true, false] {
            let (expected, expectedOutcome) = try importAll(input, cuts: [], skipInvalid: skip)
            XCTAssertGreaterThan(expected.count, 0)
            for seed: UInt64 in [1, 2, 3, 4, 5] {
                var rng = SplitMix64(seed: seed)
                var cuts = [Int]()
                var at = 0
                while at < input.count {
                    at += seed == 1 ? 1 : 1 + Int(rng.next() % 700)   // seed 1: one byte at a time
                    cuts.append(min(at, input.count))
                }
                let (events, outcome) = try importAll(input, cuts: cuts, skipInvalid: skip)
                XCTAssertEqual(events, expected, "seed \(seed), skipInvalid \(skip)")
                // In stop mode `lines` is how far the reader got before it saw the stop: timing.
                if skip { XCTAssertEqual(outcome.lines, expectedOutcome.lines, "seed \(seed)") }
                XCTAssertEqual(outcome.skipped.map(\.line), expectedOutcome.skipped.map(\.line), "seed \(seed)")
                XCTAssertEqual(outcome.stoppedAt?.line, expectedOutcome.stoppedAt?.line, "seed \(seed)")
            }
            if skip {
                XCTAssertEqual(expectedOutcome.skipped.map(\.line).prefix(2), [6, 12])
                XCTAssertEqual(expected.last?.token, "last", "a final line without a newline is imported")
                XCTAssertEqual(expectedOutcome.lines, 401)
            } else {
                XCTAssertEqual(expectedOutcome.stoppedAt?.line, 6)
                XCTAssertEqual(expected.count, 5, "the lines before the first bad one are kept")
            }
        }
    }
}
