import Foundation
import LedgerModel
@testable import LedgerStorage
import Synchronization
import XCTest

/// Segments prepared ahead as zero-filled files (LogOptions.preallocate, FORMAT.md
/// "Preallocated space"), on the real file system.
final class PreallocationTests: XCTestCase {
    func testSegmentsArePreparedAheadSealedWithoutTheirZerosAndReopenedWithThem() throws {
        let seed = testSeed(0x9A11)
        let dir = NSTemporaryDirectory() + "tl-prealloc-\(getpid())-\(seed)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = PosixFileSystem()
        let options = LogOptions(segmentBytesMax: 8192, blockEventsMax: 16, preallocate: true)
        var factory = EventFactory(seed: seed, extremeValues: false)
        var log = try SegmentLog.open(directory: dir, options: options, fileSystem: fs)
        var history = [Event]()
        while log.segments.count < 4 {
            // Each roll finds the next file ready, so every segment after the first is one.
            log.preparer!.waitUntilIdle()
            let batch = factory.events(20)
            try log.append(batch)
            history += batch
        }
        log.preparer!.waitUntilIdle()
        XCTAssertTrue(fs.fileExists(joinPath(dir, SegmentPreparer.readyName)), "the next one is ready")
        func fileSize(_ name: String) throws -> UInt64 { let h = try fs.open(joinPath(dir, name), create: false, writable: false); defer { h.close() }; return try h.size() }
        for name in log.segments.dropLast() {
            let end = log.blocks.filter { $0.segment == name }.map { $0.offset + UInt64($0.header.totalBytes) }.max()!
            XCTAssertEqual(try fileSize(name), end, "seed \(seed): sealed \(name) holds no zeros")
        }
        let active = log.segments.last!
        XCTAssertEqual(try fileSize(active), options.segmentBytesMax, "seed \(seed): the active segment is a prepared file")
        XCTAssertLessThan(log.activeSize, options.segmentBytesMax)
        let lastSeq = log.lastSeq, chain = log.chainHash
        try log.close()

        var report = try Verifier(directory: dir, fileSystem: fs).run()
        XCTAssertNil(report.problem, "seed \(seed)")
        XCTAssertEqual(report.tornTailBytes, 0, "zeros are not a torn tail")
        XCTAssertEqual(report.lastSeq, lastSeq)

        log = try SegmentLog.open(directory: dir, options: options, fileSystem: fs)
        XCTAssertTrue(log.recovery.damage.isEmpty, "seed \(seed): \(log.recovery)")
        XCTAssertNil(log.recovery.tailCut, "seed \(seed): \(log.recovery)")
        XCTAssertEqual(log.lastSeq, lastSeq)
        XCTAssertEqual(log.chainHash, chain)
        XCTAssertEqual(try fileSize(active), options.segmentBytesMax, "reopened, the zeros stay for the next commits")
        let more = factory.events(5)
        try log.append(more)
        XCTAssertEqual(try readAll(log), history + more, "seed \(seed)")
        try log.close()
        report = try Verifier(directory: dir, fileSystem: fs).run()
        XCTAssertNil(report.problem, "seed \(seed)")
        XCTAssertEqual(report.lastSeq, lastSeq + 5)
    }

    /// A roll renamed a prepared file in and the machine died before the segment's header was
    /// durable: a segment of zeros, in which nothing was acknowledged. Verify ends before it and
    /// opening removes it; a leftover partial preparation goes too.
    func testAZeroSegmentAndAPartialPreparationAreRemovedOnOpen() throws {
        let seed = testSeed(0x9A12)
        let fs = SimulatedFileSystem()
        var factory = EventFactory(seed: seed, extremeValues: false)
        var log = try openLog(fs, LogOptions(segmentBytesMax: 1 << 20))
        let events = factory.events(30)
        try log.append(events)
        try log.close()
        let zeroSegment = segmentPath(SegmentHeader.fileName(firstSeq: log.lastSeq + 1))
        fs.setContents(zeroSegment, [UInt8](repeating: 0, count: 4096))
        let partial = joinPath(ledgerDirectory, SegmentPreparer.partialName)
        fs.setContents(partial, [UInt8](repeating: 0, count: 100))
        let before = try verify(fs)
        XCTAssertNil(before.problem, "seed \(seed)")
        XCTAssertEqual(before.lastSeq, 30)

        log = try openLog(fs, LogOptions(segmentBytesMax: 1 << 20, preallocate: true))
        XCTAssertTrue(log.recovery.damage.isEmpty, "\(log.recovery)")
        XCTAssertNil(fs.contents(zeroSegment), "the zero segment is removed")
        XCTAssertNil(fs.contents(partial), "the partial preparation is removed")
        XCTAssertEqual(log.lastSeq, 30)
        log.preparer!.waitUntilIdle()
        XCTAssertEqual(fs.contents(joinPath(ledgerDirectory, SegmentPreparer.readyName))?.count, 1 << 20, "a fresh one is prepared")
        let more = factory.events(3)
        try log.append(more)
        XCTAssertEqual(try readAll(log), events + more, "seed \(seed)")
        XCTAssertNil(try verify(fs).problem)
        try log.close()
    }

    /// The disk fills while a segment is being prepared: the preparation fails and its partial
    /// file is removed (its space is the commits'), the log goes on, and once there is room
    /// again a roll makes its segment as without preallocation and preparing starts over.
    func testAPreparationThatRunsOutOfSpaceLeavesNoFileAndTheLogGoesOn() throws {
        let seed = testSeed(0x9A13)
        let fs = SimulatedFileSystem()
        var factory = EventFactory(seed: seed, extremeValues: false)
        fs.noSpaceAfterBytes = 300_000
        let options = LogOptions(segmentBytesMax: 1 << 20, blockEventsMax: 16, preallocate: true)
        let log = try openLog(fs, options)
        log.preparer!.waitUntilIdle()
        let partial = joinPath(ledgerDirectory, SegmentPreparer.partialName), ready = joinPath(ledgerDirectory, SegmentPreparer.readyName)
        guard case let .io(_, _, errno)? = log.preparations.lastFailure else { return XCTFail("seed \(seed): the preparation must fail, got \(String(describing: log.preparations.lastFailure))") }
        XCTAssertEqual(errno, ENOSPC)
        XCTAssertEqual(log.preparations.failed, 1, "seed \(seed): counted for /metrics")
        // A handler registered after that failure is told of it at once (serve logs it).
        let toldAtOnce = Mutex([StorageError]())
        log.preparations.onFailure { e in toldAtOnce.withLock { $0.append(e) } }
        XCTAssertEqual(toldAtOnce.withLock { $0 }, [log.preparations.lastFailure!], "seed \(seed)")
        XCTAssertEqual(log.preparations.prepared, 0)
        XCTAssertFalse(log.preparer!.isReady)
        XCTAssertFalse(fs.fileExists(partial), "seed \(seed): the partial preparation is removed")
        XCTAssertFalse(fs.fileExists(ready))

        // (The simulated disk does not give back removed bytes: the room comes back here.)
        fs.noSpaceAfterBytes = nil
        let first = factory.events(40)
        try log.append(first)
        var history = first
        try appendUntilTheNextRoll(log, &factory, &history)
        log.preparer!.waitUntilIdle()
        XCTAssertEqual(fs.contents(ready)?.count, 1 << 20, "seed \(seed): with room again, the next one is prepared")
        XCTAssertEqual(try readAll(log), history, "seed \(seed)")
        try log.close()
        XCTAssertNil(try verify(fs).problem, "seed \(seed)")
    }

    /// Under twice a segment's size free, nothing is prepared (no file is started), and a roll
    /// makes its segment as without preallocation; with room again, preparing resumes.
    func testNothingIsPreparedWhileTheDiskIsNearlyFull() throws {
        let seed = testSeed(0x9A14)
        let fs = SimulatedFileSystem()
        fs.reportsAvailableBytes = true
        var factory = EventFactory(seed: seed, extremeValues: false)
        fs.noSpaceAfterBytes = (1 << 21) - 1
        let options = LogOptions(segmentBytesMax: 1 << 20, blockEventsMax: 16, preallocate: true)
        let log = try openLog(fs, options)
        log.preparer!.waitUntilIdle()
        guard case let .io(why, _, code)? = log.preparations.lastFailure, code == ENOSPC else { return XCTFail("seed \(seed): nothing must be prepared, got \(String(describing: log.preparations.lastFailure))") }
        XCTAssertTrue(why.contains("bytes free"), why)
        XCTAssertFalse(fs.fileExists(joinPath(ledgerDirectory, SegmentPreparer.partialName)), "seed \(seed): no file was started")
        XCTAssertEqual(fs.noSpaceAfterBytes, (1 << 21) - 1, "seed \(seed): not a byte written for it")
        var history = factory.events(30)
        try log.append(history)
        fs.noSpaceAfterBytes = nil
        try appendUntilTheNextRoll(log, &factory, &history)
        log.preparer!.waitUntilIdle()
        XCTAssertEqual(fs.contents(joinPath(ledgerDirectory, SegmentPreparer.readyName))?.count, 1 << 20, "seed \(seed): prepared again")
        XCTAssertEqual(log.preparations.prepared, 1, "seed \(seed)")
        // At open, and at the first segment's roll while the disk was still nearly full.
        XCTAssertEqual(log.preparations.failed, 2, "seed \(seed)")

        // The disk fills again: the roll uses the ready file, the next preparation is not
        // started, and the log's owner hears of it (serve logs it).
        let heard = Mutex([StorageError]())
        log.preparations.onFailure { e in heard.withLock { $0.append(e) } }
        fs.noSpaceAfterBytes = 3 << 19
        try appendUntilTheNextRoll(log, &factory, &history)
        log.preparer!.waitUntilIdle()
        let told = heard.withLock { $0 }
        XCTAssertEqual(told.count, 1, "seed \(seed): \(told)")
        XCTAssertTrue("\(told.first.map { "\($0)" } ?? "")".contains("bytes free"), "seed \(seed): \(told)")
        XCTAssertEqual(log.preparations.failed, 3, "seed \(seed)")
        XCTAssertEqual(log.preparations.prepared, 1, "seed \(seed)")
        XCTAssertEqual(try readAll(log), history, "seed \(seed)")
        try log.close()
        XCTAssertNil(try verify(fs).problem, "seed \(seed)")
    }
}

/// Appends 200-event batches (kept in `history`) until the log rolls to a new segment.
private func appendUntilTheNextRoll(_ log: SegmentLog, _ factory: inout EventFactory, _ history: inout [Event]) throws {
    let segments = log.segments.count
    while log.segments.count == segments {
        let batch = factory.events(200)
        try log.append(batch)
        history += batch
    }
}
