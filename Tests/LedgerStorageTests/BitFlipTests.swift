// Media damage: one flipped bit anywhere in a segment is found by `Verifier` and located to the
// block (or segment header) that holds it; on open, damage in the middle of the log makes the
// log read-only, names the sequence range, and deletes nothing.
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

final class BitFlipTests: XCTestCase {
    struct Ledger {
        var files: [String: [UInt8]]
        var blocks: [BlockLocation]
        var segments: [String]
        var events: [Event]
    }

    /// Three or more segments of several blocks each.
    func makeLedger(seed: UInt64, segmentBytesMax: UInt64 = 2500) throws -> Ledger {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: segmentBytesMax, blockEventsMax: 5))
        var factory = EventFactory(seed: seed, extremeValues: false)
        var events = [Event]()
        for _ in 0..<12 { let batch = factory.events(factory.int(3...12)); try log.append(batch); events += batch }
        let ledger = Ledger(files: fs.snapshot(), blocks: Array(log.blocks), segments: log.segments, events: events)
        try log.close()
        return ledger
    }

    enum Region: Equatable { case segmentHeader(String), block(BlockLocation) }

    func region(of offset: Int, in segment: String, _ ledger: Ledger) -> Region {
        if offset < SegmentHeader.size { return .segmentHeader(segment) }
        let block = ledger.blocks.first { $0.segment == segment && Int($0.offset) <= offset && offset < Int($0.offset) + $0.header.totalBytes }
        return .block(block!)
    }

    func flipped(_ ledger: Ledger, segment: String, byte: Int, bit: Int) -> SimulatedFileSystem {
        var files = ledger.files
        files[segmentPath(segment)]![byte] ^= UInt8(1 << bit)
        return SimulatedFileSystem.from(files)
    }

    /// Asserts the Verifier's first problem is exactly the damaged region.
    func checkVerifierLocates(_ ledger: Ledger, segment: String, byte: Int, bit: Int, _ context: String) throws {
        let fs = flipped(ledger, segment: segment, byte: byte, bit: bit)
        let report = try verify(fs)
        guard let problem = report.problem else { return XCTFail("\(context): flip at \(segment)+\(byte) bit \(bit) not found") }
        let where_ = "\(context): flip at \(segment)+\(byte) bit \(bit): \(problem)"
        switch region(of: byte, in: segment, ledger) {
        case let .segmentHeader(name):
            XCTAssertEqual(problem.segment, name, where_)
            XCTAssertEqual(problem.offset, 0, where_)
            let first = SegmentHeader.firstSeq(fromFileName: name)!
            XCTAssertEqual(problem.firstSeq, first, where_)
            let inSegment = ledger.blocks.filter { $0.segment == name }
            XCTAssertEqual(problem.lastSeq, name == ledger.segments.last ? nil : inSegment.last!.header.lastSeq, where_)
        case let .block(block):
            XCTAssertEqual(problem.segment, block.segment, where_)
            XCTAssertEqual(problem.offset, block.offset, where_)
            XCTAssertEqual(problem.firstSeq, block.header.firstSeq, where_)
            let isLastOfLog = block == ledger.blocks.last
            let inHeader = byte < Int(block.offset) + BlockHeader.size
            if isLastOfLog && inHeader {
                // Nothing after an unreadable last header says where its range ends.
                XCTAssertNil(problem.lastSeq, where_)
            } else {
                XCTAssertEqual(problem.lastSeq, block.header.lastSeq, where_)
            }
        }
        XCTAssertLessThanOrEqual(report.lastSeq, problem.firstSeq - 1, "\(where_): verified past the problem")
    }

    func testVerifierLocatesSeededRandomFlips() throws {
        let seed = testSeed(0xF1)
        let ledger = try makeLedger(seed: seed)
        XCTAssertGreaterThanOrEqual(ledger.segments.count, 3, "seed \(seed)")
        var rng = SplitMix64(seed: seed)
        for round in 0..<1000 {
            let segment = ledger.segments.randomElement(using: &rng)!
            let size = ledger.files[segmentPath(segment)]!.count
            try checkVerifierLocates(ledger, segment: segment, byte: Int.random(in: 0..<size, using: &rng), bit: Int.random(in: 0..<8, using: &rng),
                                     "seed \(seed) round \(round)")
        }
    }

    func testVerifierLocatesFlipsInEveryKindOfField() throws {
        let seed = testSeed(0xF2)
        let ledger = try makeLedger(seed: seed)
        let middleSegment = ledger.segments[1]
        let middleBlocks = ledger.blocks.filter { $0.segment == middleSegment }
        XCTAssertGreaterThanOrEqual(middleBlocks.count, 3, "seed \(seed)")
        let middle = middleBlocks[1]
        let last = ledger.blocks.last!
        let chainHashField = 64   // BlockHeader layout: the chain hash is bytes 64..<96
        for (name, block) in [("middle", middle), ("first of a segment", middleBlocks[0]), ("last of a sealed segment", middleBlocks.last!), ("last", last)] {
            let o = Int(block.offset)
            for (field, byte) in [("magic", o), ("first seq", o + 8), ("event count", o + 16), ("stored bytes", o + 20), ("min ts", o + 32),
                                  ("payload checksum", o + 56), ("chain hash", o + chainHashField + 5), ("reserved", o + 100),
                                  ("header checksum", o + 127), ("payload start", o + 128), ("payload end", o + block.header.totalBytes - 1)] {
                for bit in [0, 7] {
                    try checkVerifierLocates(ledger, segment: block.segment, byte: byte, bit: bit, "seed \(seed) \(name) block, \(field)")
                }
            }
        }
        for segment in ledger.segments {
            for byte in [0, 8, 16, 24, 55, 60, 127] {
                try checkVerifierLocates(ledger, segment: segment, byte: byte, bit: 2, "seed \(seed) segment header")
            }
        }
    }

    func testVerifierReportsTheFirstProblemInLogOrder() throws {
        let seed = testSeed(0xF5)
        let ledger = try makeLedger(seed: seed)
        // Damage in a payload of the first segment and in the header of the second: the one
        // earlier in the log is the one to report, although its block is checked in a batch.
        let early = ledger.blocks.first { $0.segment == ledger.segments[0] }!
        var files = ledger.files
        files[segmentPath(early.segment)]![Int(early.offset) + BlockHeader.size + 2] ^= 0x10
        files[segmentPath(ledger.segments[1])]![3] ^= 0x01
        let report = try verify(SimulatedFileSystem.from(files))
        XCTAssertEqual(report.problem?.segment, early.segment, "seed \(seed): \(String(describing: report.problem))")
        XCTAssertEqual(report.problem?.offset, early.offset, "seed \(seed)")
        XCTAssertEqual(report.problem?.firstSeq, early.header.firstSeq, "seed \(seed)")
    }

    func testVerifierReportsAnEarlierPayloadProblemBeforeALaterTruncation() throws {
        let seed = testSeed(0xF6)
        let ledger = try makeLedger(seed: seed)
        let early = ledger.blocks.first { $0.segment == ledger.segments[0] }!
        for damage in ["truncated", "stray bytes"] {
            var files = ledger.files
            files[segmentPath(early.segment)]![Int(early.offset) + BlockHeader.size + 2] ^= 0x10
            let sealed = segmentPath(ledger.segments[1])
            if damage == "truncated" { files[sealed]!.removeLast(3) } else { files[sealed]! += [1, 2, 3] }
            let report = try verify(SimulatedFileSystem.from(files))
            let context = "seed \(seed) \(damage): \(String(describing: report.problem))"
            XCTAssertEqual(report.problem?.segment, early.segment, context)
            XCTAssertEqual(report.problem?.offset, early.offset, context)
        }
    }

    func testDamageInTheMiddleMakesTheLogReadOnlyAndDeletesNothing() throws {
        let seed = testSeed(0xF3)
        // One segment, so open checks every payload (sealed segments with an index are not re-read on open).
        let ledger = try makeLedger(seed: seed, segmentBytesMax: 64 << 20)
        XCTAssertEqual(ledger.segments.count, 1, "seed \(seed)")
        var rng = SplitMix64(seed: seed)
        let middle = Array(ledger.blocks.dropFirst().dropLast())
        for round in 0..<60 {
            let block = middle.randomElement(using: &rng)!
            let inHeader = round % 2 == 0
            let byte = Int(block.offset) + (inHeader ? Int.random(in: 0..<BlockHeader.size, using: &rng)
                                                     : Int.random(in: BlockHeader.size..<block.header.totalBytes, using: &rng))
            try checkOpenReportsDamage(ledger, block: block, byte: byte, bit: Int.random(in: 0..<8, using: &rng), "seed \(seed) round \(round)")
        }
    }

    func testDamageInASealedSegmentWithoutIndexIsFoundOnOpen() throws {
        let seed = testSeed(0xF4)
        var ledger = try makeLedger(seed: seed)
        let segment = ledger.segments[1]
        ledger.files[indexPath(segment)] = nil
        let block = ledger.blocks.filter { $0.segment == segment }[1]
        try checkOpenReportsDamage(ledger, block: block, byte: Int(block.offset) + 20, bit: 1, "seed \(seed) sealed segment")
    }

    func checkOpenReportsDamage(_ ledger: Ledger, block: BlockLocation, byte: Int, bit: Int, _ context: String) throws {
        let fs = flipped(ledger, segment: block.segment, byte: byte, bit: bit)
        let before = fs.snapshot()
        let log = try openLog(fs)
        let where_ = "\(context): flip at \(block.segment)+\(byte) bit \(bit): \(log.recovery)"
        XCTAssertTrue(log.isReadOnly, where_)
        XCTAssertNil(log.recovery.tailCut?.applied == true ? log.recovery.tailCut : nil, "\(where_): nothing is cut while damage is present")
        XCTAssertEqual(log.recovery.damage.count, 1, where_)
        if let damage = log.recovery.damage.first {
            XCTAssertEqual(damage.segment, block.segment, where_)
            XCTAssertEqual(damage.offset, block.offset, where_)
            XCTAssertEqual(damage.firstSeq, block.header.firstSeq, where_)
            XCTAssertEqual(damage.lastSeq, block.header.lastSeq, where_)
        }
        XCTAssertThrowsError(try log.append([Event(type: .issued, ts: 1, token: "x")]), where_) { error in
            guard case .readOnly = error as? StorageError else { return XCTFail("\(where_): \(error)") }
        }
        // Every block outside the damaged range still reads back.
        var seq: UInt64 = 0
        for location in log.locateBlocks() {
            let events = try log.readBlock(location).events
            XCTAssertEqual(events, Array(ledger.events[Int(location.header.firstSeq - 1)..<Int(location.header.lastSeq)]), where_)
            XCTAssertFalse(location.header.seqRange.contains(block.header.firstSeq), where_)
            seq = location.header.lastSeq
        }
        XCTAssertEqual(seq, UInt64(ledger.events.count), where_)
        try log.close()
        XCTAssertEqual(fs.snapshot(), before, "\(where_): files changed")
    }
}
