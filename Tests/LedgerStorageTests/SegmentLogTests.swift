// The segment log on a healthy disk: what is appended reads back, survives reopening, rolls into
// segments with index files, and is found again by sequence number and by time.
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

final class SegmentLogTests: XCTestCase {
    /// Appends `commits` seeded batches and returns the events in log order.
    @discardableResult
    func fill(_ log: SegmentLog, seed: UInt64, commits: Int, eventsMax: Int = 25) throws -> [Event] {
        var factory = EventFactory(seed: seed, extremeValues: false)
        var all = [Event]()
        for _ in 0..<commits {
            let batch = factory.events(factory.int(1...eventsMax))
            let firstBefore = log.lastSeq + 1
            let result = try log.append(batch)
            XCTAssertEqual(result.firstSeq, firstBefore, "seed \(seed)")
            XCTAssertEqual(result.lastSeq, firstBefore + UInt64(batch.count) - 1, "seed \(seed)")
            XCTAssertEqual(result.chainHash, log.chainHash, "seed \(seed)")
            XCTAssertTrue(result.durable, "seed \(seed): fsync always acknowledges durable appends")
            all += batch
        }
        return all
    }

    func testAppendReopenReadBack() throws {
        let seed = testSeed(0x5E6)
        let fs = SimulatedFileSystem()
        var log: SegmentLog? = try openLog(fs, LogOptions(blockEventsMax: 7))
        let events = try fill(log!, seed: seed, commits: 20)
        XCTAssertEqual(log!.lastSeq, UInt64(events.count), "seed \(seed)")
        XCTAssertEqual(try readAll(log!), events, "seed \(seed)")
        let (blocks, chain) = (log!.blocks, log!.chainHash)
        XCTAssertEqual(log!.segments.count, 1, "seed \(seed): the default segment size holds everything")
        for (a, b) in zip(blocks, blocks.dropFirst()) { XCTAssertEqual(a.header.lastSeq + 1, b.header.firstSeq, "seed \(seed)") }
        XCTAssertTrue(blocks.allSatisfy { $0.header.eventCount <= 7 }, "seed \(seed)")
        try log!.close()
        log = nil

        let reopened = try openLog(fs)
        XCTAssertTrue(reopened.recovery.isClean, "seed \(seed): \(reopened.recovery)")
        XCTAssertEqual(reopened.lastSeq, UInt64(events.count), "seed \(seed)")
        XCTAssertEqual(reopened.chainHash, chain, "seed \(seed)")
        XCTAssertEqual(reopened.blocks, blocks, "seed \(seed)")
        XCTAssertEqual(try readAll(reopened), events, "seed \(seed)")
        let report = try verify(fs)
        XCTAssertNil(report.problem, "seed \(seed)")
        XCTAssertEqual(report.events, UInt64(events.count), "seed \(seed)")
        XCTAssertEqual(report.blocks, blocks.count, "seed \(seed)")
        XCTAssertEqual(report.chainHash, chain, "seed \(seed)")

        // The chain continues across the reopen.
        let more = try fill(reopened, seed: seed &+ 1, commits: 3)
        XCTAssertEqual(try readAll(reopened), events + more, "seed \(seed)")
        XCTAssertNil(try verify(fs).problem, "seed \(seed)")
    }

    func testReadOnlyOpenSeesEverythingAndRefusesAppends() throws {
        let fs = SimulatedFileSystem()
        let writer = try openLog(fs)
        let seed: UInt64 = 1
        let events = try fill(writer, seed: seed, commits: 4)
        let reader = try openLog(fs, LogOptions(readOnly: true))
        XCTAssertTrue(reader.isReadOnly)
        XCTAssertEqual(try readAll(reader), events, "seed \(seed)")
        XCTAssertThrowsError(try reader.append([Event(type: .issued, ts: 1, token: "x")])) { error in
            guard case .readOnly = error as? StorageError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try openLog(fs), "a second writer must be locked out") { error in
            XCTAssertEqual(error as? StorageError, .locked(path: ledgerDirectory))
        }
        XCTAssertThrowsError(try SegmentLog.open(directory: "/missing", options: LogOptions(readOnly: true), fileSystem: fs))
    }

    func testEmptyAppendAndEmptyLog() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs)
        XCTAssertEqual(log.lastSeq, 0)
        XCTAssertEqual(log.chainHash, .zero)
        XCTAssertTrue(log.locateBlocks().isEmpty)
        let result = try log.append([])
        XCTAssertEqual(result.lastSeq, 0)
        XCTAssertTrue(fs.segmentPaths().isEmpty, "an empty append writes nothing")
        XCTAssertNil(try verify(fs).problem)
    }

    func testAppendAfterCloseIsRefused() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs)
        try log.append([Event(type: .issued, ts: 1, token: "a")])
        try log.close()
        let files = fs.snapshot()
        XCTAssertThrowsError(try log.append([Event(type: .issued, ts: 2, token: "b")])) { error in
            guard case .failed = error as? StorageError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(fs.snapshot(), files, "a closed log writes nothing")
        XCTAssertEqual(try readAll(log).count, 1, "reading still works")
        // The lock was released: another writer may open it now.
        XCTAssertNoThrow(try openLog(fs).close())
    }

    func testBlockEventsMaxZeroIsTreatedAsOne() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(blockEventsMax: 0))
        let events = (1...3).map { Event(type: .issued, ts: Int64($0), token: "t\($0)") }
        try log.append(events)
        XCTAssertEqual(log.blocks.count, 3)
        XCTAssertEqual(try readAll(log), events)
    }

    func testSegmentRollingWritesIndexesAndReopenUsesThem() throws {
        let seed = testSeed(0x8011)
        let fs = SimulatedFileSystem()
        let options = LogOptions(segmentBytesMax: 2048, blockEventsMax: 6)
        var log: SegmentLog? = try openLog(fs, options)
        let events = try fill(log!, seed: seed, commits: 30)
        let segments = log!.segments
        XCTAssertGreaterThanOrEqual(segments.count, 4, "seed \(seed): small segments must roll")
        XCTAssertEqual(fs.segmentPaths(), segments.map(segmentPath))
        for (i, name) in segments.enumerated() {
            // Named by the first sequence number they hold, starting where the last one ended.
            let first = log!.blocks.first { $0.segment == name }!.header.firstSeq
            XCTAssertEqual(SegmentHeader.firstSeq(fromFileName: name), first, "seed \(seed)")
            XCTAssertEqual(fs.contents(indexPath(name)) != nil, i < segments.count - 1, "seed \(seed): only sealed segments have an index (\(name))")
        }
        let blocks = log!.blocks
        let chain = log!.chainHash
        try log!.close()
        log = nil

        func reopenAndCompare(_ label: String, rebuilt: [String]) throws {
            let reopened = try openLog(fs, options)
            defer { try? reopened.close() }
            XCTAssertTrue(reopened.recovery.isClean, "seed \(seed) \(label): \(reopened.recovery)")
            XCTAssertEqual(reopened.recovery.indexesRebuilt, rebuilt, "seed \(seed) \(label)")
            XCTAssertEqual(reopened.segments, segments, "seed \(seed) \(label)")
            XCTAssertEqual(reopened.blocks, blocks, "seed \(seed) \(label)")
            XCTAssertEqual(reopened.lastSeq, UInt64(events.count), "seed \(seed) \(label)")
            XCTAssertEqual(reopened.chainHash, chain, "seed \(seed) \(label)")
            XCTAssertEqual(try readAll(reopened), events, "seed \(seed) \(label)")
        }
        try reopenAndCompare("indexes present", rebuilt: [])

        let victim = segments[1]
        let goodIndex = fs.contents(indexPath(victim))!
        try fs.remove(indexPath(victim))
        try reopenAndCompare("index removed", rebuilt: [victim])
        XCTAssertEqual(fs.contents(indexPath(victim)), goodIndex, "seed \(seed): the rebuilt index is byte-identical")

        fs.flipBit(indexPath(victim), byte: 40, bit: 3)
        try reopenAndCompare("index corrupted", rebuilt: [victim])
        XCTAssertEqual(fs.contents(indexPath(victim)), goodIndex, "seed \(seed)")

        // An index of another length (stale: written for a shorter segment) is not trusted.
        fs.setContents(indexPath(segments[0]), Array(goodIndex.prefix(goodIndex.count - 20)))
        try reopenAndCompare("index truncated", rebuilt: [segments[0]])
        XCTAssertNil(try verify(fs).problem, "seed \(seed)")
    }

    func testStaleIndexOfTheRightSizeIsNotTrusted() throws {
        // A sealed segment rewritten with different blocks of the same total size: the index
        // still parses and matches the size, but its headers are not the segment's.
        let fs = SimulatedFileSystem()
        let options = LogOptions(segmentBytesMax: 600, blockEventsMax: 2)
        let log = try openLog(fs, options, clock: ManualClock(ms: 1000))
        let events = (0..<12).map { Event(type: .issued, ts: Int64($0), token: "tok-\($0 % 10)") }
        try log.append(events)
        XCTAssertGreaterThanOrEqual(log.segments.count, 2)
        let first = log.segments[0]
        try log.close()
        let realIndex = fs.contents(indexPath(first))!

        let other = SimulatedFileSystem()
        let otherLog = try openLog(other, options, clock: ManualClock(ms: 5000))
        try otherLog.append(events)
        try otherLog.close()
        XCTAssertEqual(other.contents(indexPath(first))!.count, realIndex.count)
        XCTAssertNotEqual(other.contents(indexPath(first)), realIndex, "receivedAt differs, so do the headers")
        fs.setContents(indexPath(first), other.contents(indexPath(first))!)

        let reopened = try openLog(fs, options)
        XCTAssertTrue(reopened.recovery.isClean, "\(reopened.recovery)")
        XCTAssertEqual(try readAll(reopened), events)
    }

    func testLocateBlocksBySequenceAndTime() throws {
        let seed = testSeed(0x10CA)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 4096, blockEventsMax: 5))
        let events = try fill(log, seed: seed, commits: 40)
        let blocks = Array(log.blocks)
        let n = UInt64(events.count)
        var rng = SplitMix64(seed: seed)
        for round in 0..<300 {
            let a = UInt64.random(in: 0...(n + 3), using: &rng)
            let b = UInt64.random(in: 0...(n + 3), using: &rng)
            let from: UInt64? = round % 4 == 0 ? nil : min(a, b)
            let to: UInt64? = round % 4 == 1 ? nil : max(a, b)
            let expected = blocks.filter { b in (from.map { b.header.lastSeq >= $0 } ?? true) && (to.map { b.header.firstSeq <= $0 } ?? true) }
            XCTAssertEqual(Array(log.locateBlocks(fromSeq: from, toSeq: to)), expected, "seed \(seed) round \(round): seq \(String(describing: from))...\(String(describing: to))")
            // Every event in the range is inside a located block.
            let located = Array(log.locateBlocks(fromSeq: from, toSeq: to))
            let (lowest, highest) = (max(1, from ?? 1), min(n, to ?? n))
            for seq in lowest...max(lowest, highest) where seq <= highest {
                XCTAssertTrue(located.contains { $0.header.seqRange.contains(seq) }, "seed \(seed) round \(round): seq \(seq) not located")
            }
        }
        let tss = events.map(\.ts)
        let (lo, hi) = (tss.min()!, tss.max()!)
        for round in 0..<300 {
            let x = Int64.random(in: (lo - 100)...(hi + 100), using: &rng)
            let y = Int64.random(in: (lo - 100)...(hi + 100), using: &rng)
            let since: Int64? = round % 4 == 0 ? nil : min(x, y)
            let until: Int64? = round % 4 == 1 ? nil : max(x, y)
            let located = Array(log.locateBlocks(since: since, until: until))
            let expected = blocks.filter { b in (since.map { b.header.maxTs >= $0 } ?? true) && (until.map { b.header.minTs <= $0 } ?? true) }
            XCTAssertEqual(located, expected, "seed \(seed) round \(round)")
            var seq: UInt64 = 0
            for e in events {
                seq += 1
                if (since.map { e.ts >= $0 } ?? true) && (until.map { e.ts <= $0 } ?? true) {
                    XCTAssertTrue(located.contains { $0.header.seqRange.contains(seq) }, "seed \(seed) round \(round): event \(seq) at ts \(e.ts) not located")
                }
            }
            // Both filters at once narrow further.
            let both = Array(log.locateBlocks(fromSeq: n / 2, since: since, until: until))
            XCTAssertEqual(both, expected.filter { $0.header.lastSeq >= n / 2 }, "seed \(seed) round \(round)")
        }
        XCTAssertTrue(log.locateBlocks(fromSeq: n + 1).isEmpty)
    }

    func testPosixFileSystemAppendReopenVerifyAndLock() throws {
        let directory = temporaryDirectory("posix") + "/ledger"
        defer { try? FileManager.default.removeItem(atPath: String(directory.dropLast(7))) }
        let seed = testSeed(0x9051)
        let options = LogOptions(segmentBytesMax: 8192, blockEventsMax: 16)
        var log: SegmentLog? = try SegmentLog.open(directory: directory, options: options)
        let events = try fill(log!, seed: seed, commits: 25)
        XCTAssertGreaterThan(log!.segments.count, 1, "seed \(seed)")
        let chain = log!.chainHash

        // Another writer on the same directory is refused while this one holds the lock.
        XCTAssertThrowsError(try SegmentLog.open(directory: directory, options: options), "seed \(seed)") { error in
            XCTAssertEqual(error as? StorageError, .locked(path: directory), "seed \(seed)")
        }
        let reader = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true))
        XCTAssertEqual(try readAll(reader), events, "seed \(seed)")
        try log!.close()
        log = nil

        let reopened = try SegmentLog.open(directory: directory, options: options)
        XCTAssertTrue(reopened.recovery.isClean, "seed \(seed): \(reopened.recovery)")
        XCTAssertEqual(reopened.chainHash, chain, "seed \(seed)")
        XCTAssertEqual(try readAll(reopened), events, "seed \(seed)")
        let more = try fill(reopened, seed: seed &+ 1, commits: 3)
        XCTAssertEqual(try readAll(reopened), events + more, "seed \(seed)")
        try reopened.close()
        let report = try Verifier(directory: directory).run()
        XCTAssertNil(report.problem, "seed \(seed)")
        XCTAssertEqual(report.events, UInt64(events.count + more.count), "seed \(seed)")
        let names = try PosixFileSystem().listDirectory(directory)
        XCTAssertTrue(names.contains(SegmentLog.lockFileName), "seed \(seed)")
        XCTAssertEqual(names.filter { $0.hasSuffix(".idx") }.count, names.filter { $0.hasSuffix(".seg") }.count - 1, "seed \(seed)")
        // The lock is released by close: a new writer gets in.
        XCTAssertNoThrow(try SegmentLog.open(directory: directory, options: options).close(), "seed \(seed)")
    }
}
