// Crash recovery: a write torn at any byte of the last block, a tail that reads back as zeros,
// and seeded power losses after unsynced appends. Recovery must cut exactly the unfinished
// block, keep its bytes in quarantine, and leave a log that verifies and keeps chaining.
import LedgerCrypto
import LedgerModel
@testable import LedgerStorage
import XCTest

final class TornTailTests: XCTestCase {
    struct Fixture {
        var files: [String: [UInt8]]
        var events: [Event]
        var last: BlockLocation
        var previousLastSeq: UInt64
        var previousChain: Digest32
    }

    /// A ledger whose last block holds a few events, so every offset in it is a quick reopen.
    func makeFixture(seed: UInt64, segmentBytesMax: UInt64 = 64 << 20) throws -> Fixture {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: segmentBytesMax, blockEventsMax: 8))
        var factory = EventFactory(seed: seed, extremeValues: false)
        var events = [Event]()
        for _ in 0..<4 { let batch = factory.events(8); try log.append(batch); events += batch }
        let previousLastSeq = log.lastSeq
        let previousChain = log.chainHash
        // The last commit must be one block: a marker ends its block, so the tail has none.
        var tail = [Event]()
        while tail.count < 3 { tail += factory.events(1).filter { !$0.type.isMarker } }
        try log.append(tail)
        events += tail
        let last = log.blocks.last!
        try log.close()
        return Fixture(files: fs.snapshot(), events: events, last: last, previousLastSeq: previousLastSeq, previousChain: previousChain)
    }

    enum Damage: CustomStringConvertible {
        case truncate, zeroFill
        var description: String { self == .truncate ? "truncated" : "zero-filled" }
    }

    func testTornLastBlockAtEveryOffset() throws {
        let seed = testSeed(0x7042)
        for segmentBytesMax: UInt64 in [64 << 20, 1] {
            // With 1-byte segments the last block is alone in its own segment.
            let fixture = try makeFixture(seed: seed, segmentBytesMax: segmentBytesMax)
            for damage in [Damage.truncate, .zeroFill] {
                for cut in 0..<fixture.last.header.totalBytes {
                    try checkTornTail(fixture, damage: damage, at: cut, context: "seed \(seed) segmentBytesMax \(segmentBytesMax) \(damage) at +\(cut)")
                }
            }
        }
    }

    func checkTornTail(_ fixture: Fixture, damage: Damage, at cut: Int, context: String) throws {
        var files = fixture.files
        let path = segmentPath(fixture.last.segment)
        let original = files[path]!
        let blockStart = Int(fixture.last.offset)
        let blockEnd = blockStart + fixture.last.header.totalBytes
        XCTAssertEqual(blockEnd, original.count, context)
        var damaged = original
        switch damage {
        case .truncate: damaged.removeLast(original.count - (blockStart + cut))
        case .zeroFill: for i in (blockStart + cut)..<blockEnd { damaged[i] = 0 }
        }
        files[path] = damaged
        let fs = SimulatedFileSystem.from(files)

        let log = try openLog(fs, LogOptions(blockEventsMax: 8))
        let recovery = log.recovery
        XCTAssertTrue(recovery.damage.isEmpty, "\(context): \(recovery)")
        XCTAssertFalse(log.isReadOnly, context)
        if damaged == Array(original.prefix(blockStart)) || damaged == original {
            // Nothing of the block was written, or the zeros were already there: nothing to cut.
            XCTAssertNil(recovery.tailCut, "\(context): \(recovery)")
            XCTAssertEqual(log.lastSeq, damaged == original ? fixture.last.header.lastSeq : fixture.previousLastSeq, context)
        } else if damaged[blockStart...].allSatisfy({ $0 == 0 }) {
            // Only zeros where the block began: what preallocated space looks like (FORMAT.md).
            // Nothing to cut; the next commit overwrites them.
            XCTAssertNil(recovery.tailCut, "\(context): \(recovery)")
            XCTAssertEqual(log.lastSeq, fixture.previousLastSeq, context)
            XCTAssertEqual(log.chainHash, fixture.previousChain, context)
            XCTAssertEqual(fs.size(path), original.count, "\(context): the zeros stay")
        } else {
            guard let tail = recovery.tailCut else { return XCTFail("\(context): no tail cut reported: \(recovery)") }
            let cutBytes = Array(damaged[blockStart...])
            XCTAssertEqual(tail.segment, fixture.last.segment, context)
            XCTAssertEqual(tail.offset, UInt64(blockStart), context)
            XCTAssertEqual(tail.bytes, UInt64(cutBytes.count), context)
            XCTAssertEqual(tail.expectedSeq, fixture.previousLastSeq + 1, context)
            XCTAssertTrue(tail.applied, context)
            let headerReadable = cutBytes.count >= BlockHeader.size && Array(cutBytes.prefix(BlockHeader.size)) == Array(original[blockStart..<(blockStart + BlockHeader.size)])
            XCTAssertEqual(tail.seqRange, headerReadable ? fixture.last.header.seqRange : nil, context)
            XCTAssertEqual(tail.quarantinePath.flatMap { fs.contents($0) }, cutBytes, "\(context): quarantine must hold the cut bytes")
            XCTAssertEqual(log.lastSeq, fixture.previousLastSeq, context)
            XCTAssertEqual(log.chainHash, fixture.previousChain, context)
            if blockStart == SegmentHeader.size {
                // The segment held only the torn block; it stays as the (empty) active segment.
                XCTAssertEqual(fs.size(path), SegmentHeader.size, context)
            } else {
                XCTAssertEqual(fs.size(path), blockStart, context)
            }
        }
        XCTAssertNil(try verify(fs).problem, context)
        let kept = Int(log.lastSeq)
        XCTAssertEqual(try readAll(log), Array(fixture.events.prefix(kept)), context)

        let more = [Event(type: .validated, ts: 5, token: "after-\(cut)"), Event(type: .revoked, ts: 6, token: "after-\(cut)", reason: "r")]
        let result = try log.append(more)
        XCTAssertEqual(result.firstSeq, UInt64(kept + 1), context)
        XCTAssertEqual(try readAll(log), Array(fixture.events.prefix(kept)) + more, context)
        let report = try verify(fs)
        XCTAssertNil(report.problem, context)
        XCTAssertEqual(report.chainHash, log.chainHash, context)
        try log.close()
    }

    func testTornSegmentHeaderOfANewSegmentIsCut() throws {
        let seed: UInt64 = 3
        let fixture = try makeFixture(seed: seed, segmentBytesMax: 1)
        let path = segmentPath(fixture.last.segment)
        for length in 0...SegmentHeader.size {
            var files = fixture.files
            files[path] = Array(files[path]!.prefix(length))
            if length == SegmentHeader.size { files[path]![5] ^= 1 }
            let fs = SimulatedFileSystem.from(files)
            let context = "seed \(seed): segment header of \(length) bytes"
            let before = try verify(fs)
            if length < SegmentHeader.size {
                XCTAssertNil(before.problem, context)
                XCTAssertEqual(before.tornTailBytes, UInt64(length), context)
                XCTAssertEqual(before.lastSeq, fixture.previousLastSeq, context)
            } else {
                XCTAssertEqual(before.problem?.segment, fixture.last.segment, "\(context): a complete but damaged header is reported")
            }
            let log = try openLog(fs)
            XCTAssertTrue(log.recovery.damage.isEmpty, "\(context): \(log.recovery)")
            XCTAssertEqual(log.recovery.tailCut?.offset, 0, context)
            XCTAssertEqual(log.recovery.tailCut?.bytes, UInt64(length), context)
            XCTAssertNil(log.recovery.tailCut?.seqRange, context)
            XCTAssertNil(fs.contents(path), "\(context): the torn segment file is removed")
            XCTAssertEqual(log.lastSeq, fixture.previousLastSeq, context)
            XCTAssertEqual(log.chainHash, fixture.previousChain, context)
            try log.append([Event(type: .issued, ts: 1, token: "x")])
            XCTAssertEqual(log.lastSeq, fixture.previousLastSeq + 1, context)
            XCTAssertNil(try verify(fs).problem, context)
        }
    }

    func testATailCutTwiceAtTheSameOffsetKeepsBothCopies() throws {
        let seed: UInt64 = 6
        let fixture = try makeFixture(seed: seed)
        var files = fixture.files
        let path = segmentPath(fixture.last.segment)
        files[path]!.removeLast(7)
        let fs = SimulatedFileSystem.from(files)
        let first = try openLog(fs)
        let firstCopy = try XCTUnwrap(first.recovery.tailCut?.quarantinePath, "seed \(seed)")
        let firstBytes = fs.contents(firstCopy)
        try first.append(fixture.events.suffix(3))
        try first.close()
        var again = fs.contents(path)!
        again.removeLast(9)
        fs.setContents(path, again)
        let second = try openLog(fs)
        let secondCopy = try XCTUnwrap(second.recovery.tailCut?.quarantinePath, "seed \(seed)")
        XCTAssertEqual(second.recovery.tailCut?.offset, fixture.last.offset, "seed \(seed)")
        XCTAssertNotEqual(secondCopy, firstCopy, "seed \(seed)")
        XCTAssertEqual(fs.contents(firstCopy), firstBytes, "seed \(seed): the first quarantined copy is kept")
        XCTAssertEqual(fs.contents(secondCopy)?.count, fixture.last.header.totalBytes - 9, "seed \(seed)")
    }

    func testReadOnlyOpenReportsButDoesNotCut() throws {
        let seed: UInt64 = 4
        let fixture = try makeFixture(seed: seed)
        var files = fixture.files
        let path = segmentPath(fixture.last.segment)
        files[path]!.removeLast(5)
        let fs = SimulatedFileSystem.from(files)
        let log = try openLog(fs, LogOptions(readOnly: true))
        XCTAssertEqual(log.recovery.tailCut?.applied, false, "seed \(seed)")
        XCTAssertEqual(log.recovery.tailCut?.seqRange, fixture.last.header.seqRange, "seed \(seed)")
        XCTAssertEqual(fs.contents(path), files[path], "seed \(seed): read-only opens change nothing")
        XCTAssertEqual(log.lastSeq, fixture.previousLastSeq, "seed \(seed)")
        XCTAssertEqual(try readAll(log), Array(fixture.events.prefix(Int(fixture.previousLastSeq))), "seed \(seed)")
        XCTAssertEqual(try verify(fs).tornTailBytes, UInt64(fixture.last.header.totalBytes - 5), "seed \(seed)")
    }

    /// A multi-block commit torn by power loss, read back as zeros from the tear on (the file
    /// size made it to disk, the data did not): every block of it is unacknowledged tail.
    func testZeroFilledMultiBlockCommitIsATornTail() throws {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(blockEventsMax: 2))
        let seed: UInt64 = 9
        var factory = EventFactory(seed: seed, extremeValues: false)
        let kept = factory.events(6)
        try log.append(kept)
        let acknowledged = log.blocks.count
        let chain = log.chainHash
        try log.append(factory.events(6))
        let torn = log.blocks[acknowledged]
        try log.close()
        let path = segmentPath(torn.segment)
        var files = fs.snapshot()
        for i in (Int(torn.offset) + BlockHeader.size + 3)..<files[path]!.count { files[path]![i] = 0 }
        let damaged = SimulatedFileSystem.from(files)
        let reopened = try openLog(damaged)
        XCTAssertTrue(reopened.recovery.damage.isEmpty, "seed \(seed): \(reopened.recovery)")
        XCTAssertEqual(reopened.recovery.tailCut?.offset, torn.offset, "seed \(seed)")
        XCTAssertEqual(reopened.recovery.tailCut?.seqRange, torn.header.seqRange, "seed \(seed)")
        XCTAssertEqual(reopened.lastSeq, 6, "seed \(seed)")
        XCTAssertEqual(reopened.chainHash, chain, "seed \(seed)")
        XCTAssertEqual(try readAll(reopened), kept, "seed \(seed)")
        XCTAssertNil(try verify(damaged).problem, "seed \(seed)")
    }

    func testCrashIsReproducibleFromItsSeed() throws {
        // Same writes and same seed give the same surviving bytes in every run, or a failing
        // seed could not be replayed. Many files with unsynced writes share the seed's draws.
        func crashed(_ seed: UInt64) throws -> [String: [UInt8]] {
            let fs = SimulatedFileSystem()
            try fs.createDirectory("/d")
            for i in 0..<12 {
                let handle = try fs.open("/d/file\(i)", create: true, writable: true)
                if i % 3 == 0 { try handle.write(at: 0, [UInt8](repeating: 1, count: 10)); try handle.sync() }
                for w in 0..<4 { try handle.write(at: UInt64(10 + 20 * w), [UInt8](repeating: UInt8(w + 2), count: 20)) }
            }
            fs.crash(seed: seed)
            return fs.snapshot()
        }
        var all = [UInt8]()
        for seed in UInt64(0)..<20 {
            let files = try crashed(seed)
            XCTAssertEqual(try crashed(seed), files, "seed \(seed)")
            for path in files.keys.sorted() { all += Array(path.utf8) + [0] + files[path]! + [0] }
        }
        // Pinned across runs: dictionary iteration order changes from process to process.
        XCTAssertEqual(SHA256.hash(all).hex, "0ad871f35a2f5de84738aebd880216ab3902a406b17275f36ff72a9f6ec37184")
    }

    func testCrashAfterUnsyncedAppendsKeepsEverythingSynced() throws {
        let base = testSeed(0xC4A5)
        for round in 0..<300 {
            try crashRounds(seed: base &+ UInt64(round))
        }
    }

    /// The same with segments prepared ahead: torn writes land on preallocated zeros, a roll
    /// may have renamed a prepared file in without its header surviving.
    func testCrashWithPreallocatedSegmentsKeepsEverythingSynced() throws {
        let base = testSeed(0xC4A6)
        for round in 0..<200 {
            try crashRounds(seed: base &+ UInt64(round), preallocate: true)
        }
    }

    /// Several lives of one ledger: appends (some synced), a power loss, recovery, and on again,
    /// sometimes crashing right after a recovery that cut something.
    func crashRounds(seed: UInt64, preallocate: Bool = false) throws {
        var rng = SplitMix64(seed: seed)
        var factory = EventFactory(seed: seed, extremeValues: false)
        let fs = SimulatedFileSystem()
        let options = LogOptions(segmentBytesMax: UInt64.random(in: 300...3000, using: &rng), blockEventsMax: 4, fsync: .never,
                                 preallocate: preallocate)
        var log: SegmentLog? = try openLog(fs, options)
        // What the log holds in order; everything up to `synced` is durable.
        var history = [Event]()
        var synced = 0
        for life in 0..<3 {
            let context = "seed \(seed) life \(life)"
            for _ in 0..<Int.random(in: 0...10, using: &rng) {
                let batch = factory.events(Int.random(in: 1...9, using: &rng))
                let result = try log!.append(batch)
                XCTAssertFalse(result.durable, "\(context): fsync never does not claim durability")
                XCTAssertEqual(result.firstSeq, UInt64(history.count + 1), context)
                history += batch
                if Int.random(in: 0..<4, using: &rng) == 0 {
                    try log!.sync()
                    synced = history.count
                }
            }
            // The preparer's thread finishes first, so that a seed always tears the same writes.
            log!.preparer?.waitUntilIdle()
            fs.crash(seed: seed &+ UInt64(life))
            // The crashed process is gone; its handles must not touch the disk any more.
            log = nil

            log = try openLog(fs, options)
            let recovered = "\(context): \(log!.recovery)"
            XCTAssertTrue(log!.recovery.damage.isEmpty, recovered)
            XCTAssertFalse(log!.isReadOnly, recovered)
            XCTAssertGreaterThanOrEqual(log!.lastSeq, UInt64(synced), "\(recovered): synced events lost")
            XCTAssertLessThanOrEqual(log!.lastSeq, UInt64(history.count), recovered)
            history = Array(history.prefix(Int(log!.lastSeq)))
            XCTAssertEqual(try readAll(log!), history, recovered)
            XCTAssertNil(try verify(fs).problem, recovered)
            if let cut = log!.recovery.tailCut {
                XCTAssertTrue(cut.applied, recovered)
                XCTAssertEqual(cut.quarantinePath.flatMap { fs.contents($0) }?.count, Int(cut.bytes), recovered)
            }
            // Recovery's own writes are durable: what it kept counts as synced from now on.
            synced = history.count
        }
        let more = factory.events(5)
        try log!.append(more)
        XCTAssertEqual(try readAll(log!), history + more, "seed \(seed)")
        XCTAssertNil(try verify(fs).problem, "seed \(seed)")
        try log!.close()
        let again = try openLog(fs, options)
        XCTAssertTrue(again.recovery.isClean, "seed \(seed): \(again.recovery)")
    }
}
