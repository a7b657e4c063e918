import Foundation
import LedgerModel
import LedgerStorage
import XCTest

/// Format stability: `Fixtures/ledger-v1` was written by format version 1 and must keep
/// verifying, with the same chain head and the same events, as the code evolves. If this fails,
/// the on-disk format changed: bump the version and update FORMAT.md rather than the constants.
final class FixtureTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let ledger = fixtures.appendingPathComponent("ledger-v1").path
    static let pinnedLastSeq: UInt64 = 3018
    static let pinnedChainHead = "38e8e75b8dabe6bc37b190efe9ddb76f06bd8146b83f072470cdbcd8e44caa2e"

    func testFixtureLedgerVerifiesWithPinnedChainHead() throws {
        var verifier = Verifier(directory: FixtureTests.ledger)
        verifier.decodePayloads = true
        let report = try verifier.run()
        XCTAssertNil(report.problem)
        XCTAssertEqual(report.lastSeq, FixtureTests.pinnedLastSeq)
        XCTAssertEqual(report.chainHash.hex, FixtureTests.pinnedChainHead)

        let log = try SegmentLog.open(directory: FixtureTests.ledger, options: LogOptions(readOnly: true))
        XCTAssertTrue(log.recovery.isClean, "\(log.recovery)")
        XCTAssertEqual(log.segments.count, 4)
        XCTAssertEqual(log.lastSeq, FixtureTests.pinnedLastSeq)
        XCTAssertEqual(log.chainHash.hex, FixtureTests.pinnedChainHead)
    }

    func testFixtureHoldsExactlyItsSourceEvents() throws {
        let edge = try String(contentsOf: FixtureTests.fixtures.appendingPathComponent("edge-events.ndjson"), encoding: .utf8)
        let workload = try String(contentsOf: FixtureTests.fixtures.appendingPathComponent("workload-seed42.ndjson"), encoding: .utf8)
        // Written as: edge events, the workload, then the edge events again.
        let lines = (edge + workload + edge).split(separator: "\n").map(String.init)
        let decoder = NDJSONDecoder()
        let expected = try lines.enumerated().map { try decoder.decode(line: $1, lineNumber: $0 + 1) }

        let log = try SegmentLog.open(directory: FixtureTests.ledger, options: LogOptions(readOnly: true))
        var actual = [Event]()
        for location in log.blocks { actual += try log.readBlock(location).events }
        XCTAssertEqual(actual.count, expected.count)
        for (i, (a, e)) in zip(actual, expected).enumerated() { XCTAssertEqual(a, e, "seq \(i + 1)") }

        // Spot checks that pin the normalisation rules into the fixture.
        XCTAssertEqual(actual[2].token?.hasPrefix("sha256:"), true, "a raw JWT must be stored fingerprinted")
        XCTAssertEqual(actual[2].attrs["extra_field"], "kept in attrs")
        XCTAssertEqual(actual[2].attrs["retries"], "3")
        XCTAssertEqual(actual[1].ts, 1_795_478_400_001)
        XCTAssertEqual(actual[1].attrs["note"], "quote \" and \\ and \n newline")
        XCTAssertEqual(actual[1].sub, "user-ü-1")
    }
}
