// Failing writes and failing fsyncs. A write that fails with ENOSPC is rolled back and the log
// carries on once space returns; an fsync that fails stops the log (the page cache can no longer
// be trusted), and reopening after a crash recovers every acknowledged event.
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

final class FaultTests: XCTestCase {
    let options = LogOptions(segmentBytesMax: 1500, blockEventsMax: 4)

    func testNoSpaceAtEveryPointOfACommitThatRollsASegment() throws {
        let seed = testSeed(0xE05)
        var factory = EventFactory(seed: seed, extremeValues: false)
        let base = SimulatedFileSystem()
        var acknowledged = [Event]()
        do {
            let log = try openLog(base, options)
            for _ in 0..<5 { let batch = factory.events(6); try log.append(batch); acknowledged += batch }
            try log.close()
        }
        let baseFiles = base.snapshot()
        let batch = factory.events(20)

        // How many bytes the commit writes, segment roll and index included.
        let probe = SimulatedFileSystem.from(baseFiles)
        let probeLog = try openLog(probe, options)
        let segmentsBefore = probeLog.segments.count
        probe.noSpaceAfterBytes = 1 << 40
        try probeLog.append(batch)
        let needed = (1 << 40) - probe.noSpaceAfterBytes!
        XCTAssertGreaterThan(probeLog.segments.count, segmentsBefore, "seed \(seed): the commit must roll a segment")

        for budget in stride(from: 0, to: needed, by: max(1, needed / 150)) + [needed - 1] {
            let context = "seed \(seed) ENOSPC after \(budget) of \(needed) bytes"
            let fs = SimulatedFileSystem.from(baseFiles)
            let log = try openLog(fs, options)
            let (lastSeq, chain, blocks, segments) = (log.lastSeq, log.chainHash, log.blocks, log.segments)
            fs.noSpaceAfterBytes = budget
            XCTAssertThrowsError(try log.append(batch), context) { error in
                XCTAssertTrue((error as? StorageError)?.isNoSpace == true, "\(context): \(error)")
            }
            XCTAssertEqual(log.lastSeq, lastSeq, context)
            XCTAssertEqual(log.chainHash, chain, context)
            XCTAssertEqual(log.blocks, blocks, context)
            XCTAssertEqual(log.segments, segments, context)
            XCTAssertNil(log.failure, "\(context): a failed write is rolled back, not fatal")
            XCTAssertEqual(try readAll(log), acknowledged, context)
            for path in fs.segmentPaths() { XCTAssertEqual(fs.contents(path), baseFiles[path], "\(context): \(path) not rolled back") }
            for (path, bytes) in baseFiles where path.hasSuffix(".idx") { XCTAssertEqual(fs.contents(path), bytes, context) }
            // Still out of space: refused again, still nothing changes.
            XCTAssertThrowsError(try log.append(Array(batch.prefix(1))), context)
            XCTAssertEqual(log.lastSeq, lastSeq, context)

            fs.noSpaceAfterBytes = nil
            let result = try log.append(batch)
            XCTAssertEqual(result.firstSeq, lastSeq + 1, context)
            XCTAssertEqual(try readAll(log), acknowledged + batch, context)
            XCTAssertNil(try verify(fs).problem, context)
            try log.close()
            let reopened = try openLog(fs, options)
            XCTAssertTrue(reopened.recovery.isClean, "\(context): \(reopened.recovery)")
            XCTAssertEqual(try readAll(reopened), acknowledged + batch, context)
        }
    }

    func testNoSpaceThenCrashKeepsOnlyAcknowledgedHistory() throws {
        let base = testSeed(0xE06)
        for round in 0..<60 {
            let seed = base &+ UInt64(round)
            var rng = SplitMix64(seed: seed)
            var factory = EventFactory(seed: seed, extremeValues: false)
            let fs = SimulatedFileSystem()
            var log: SegmentLog? = try openLog(fs, options)
            var acknowledged = [Event]()
            for _ in 0..<Int.random(in: 1...6, using: &rng) { let b = factory.events(Int.random(in: 1...8, using: &rng)); try log!.append(b); acknowledged += b }
            fs.noSpaceAfterBytes = Int.random(in: 0...1500, using: &rng)
            let failed = factory.events(20)
            let didFail = (try? log!.append(failed)) == nil
            if !didFail { acknowledged += failed }
            fs.crash(seed: seed)
            fs.noSpaceAfterBytes = nil
            log = nil
            let reopened = try openLog(fs, options)
            let context = "seed \(seed): \(reopened.recovery)"
            XCTAssertTrue(reopened.recovery.damage.isEmpty, context)
            // A rolled-back append was never acknowledged and its truncation was synced: it is gone.
            XCTAssertEqual(try readAll(reopened), acknowledged, context)
            XCTAssertNil(try verify(fs).problem, context)
        }
    }

    func testFailedFsyncStopsTheLogAndReopeningRecovers() throws {
        let base = testSeed(0xF5C)
        for round in 0..<80 {
            let seed = base &+ UInt64(round)
            var rng = SplitMix64(seed: seed)
            var factory = EventFactory(seed: seed, extremeValues: false)
            let fs = SimulatedFileSystem()
            var log: SegmentLog? = try openLog(fs, options)
            var acknowledged = [Event]()
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let batch = factory.events(Int.random(in: 1...10, using: &rng))
                XCTAssertTrue(try log!.append(batch).durable, "seed \(seed)")
                acknowledged += batch
            }
            fs.syncsBeforeFailure = Int.random(in: 0...1, using: &rng)
            let failing = factory.events(Int.random(in: 1...30, using: &rng))
            var threw = false
            do { try log!.append(failing) } catch {
                threw = true
                guard case .failed = error else { XCTFail("seed \(seed): \(error)"); continue }
            }
            // Written but not acknowledged: each may or may not survive the crash, in order.
            var unacknowledged = failing
            if !threw {
                // One sync was allowed and the commit needed only one.
                acknowledged += failing
                unacknowledged = factory.events(1)
                XCTAssertThrowsError(try log!.append(unacknowledged), "seed \(seed)")
            }
            XCTAssertNotNil(log!.failure, "seed \(seed)")
            XCTAssertThrowsError(try log!.append(factory.events(2)), "seed \(seed)") { error in
                guard case .failed = error as? StorageError else { return XCTFail("seed \(seed): \(error)") }
            }
            XCTAssertThrowsError(try log!.sync(), "seed \(seed)")

            fs.crash(seed: seed)
            fs.syncsBeforeFailure = nil
            log = nil
            let reopened = try openLog(fs, options)
            let context = "seed \(seed): \(reopened.recovery)"
            XCTAssertTrue(reopened.recovery.damage.isEmpty, context)
            XCTAssertNil(reopened.failure, context)
            let events = try readAll(reopened)
            XCTAssertGreaterThanOrEqual(events.count, acknowledged.count, context)
            XCTAssertEqual(Array(events.prefix(acknowledged.count)), acknowledged, "\(context): an acknowledged event was lost")
            XCTAssertEqual(events, Array((acknowledged + unacknowledged).prefix(events.count)), context)
            XCTAssertNil(try verify(fs).problem, context)
            let more = factory.events(3)
            try reopened.append(more)
            XCTAssertEqual(try readAll(reopened), events + more, context)
            XCTAssertNil(try verify(fs).problem, context)
        }
    }
}
