// The token index (TokenIndex.swift, FORMAT.md "Token index"): its answers equal a brute-force
// scan over ledgers of several segments and small blocks; damaged, truncated, foreign and stale
// `.tix` files are found and rebuilt with the same answers; an index fed blocks as they are
// appended answers as a fresh one does; paging; unknown ids; ids that share a hash. The row
// decoder is also compared with the full decoder on realistic (workload) blocks here.
import Foundation
import LedgerCrypto
import LedgerModel
@testable import LedgerStorage
import LedgerWorkload
import Synchronization
import XCTest

final class TokenIndexTests: XCTestCase {
    /// What the index must answer for `id`: every event naming it as token, or as the parent of a refresh.
    func bruteForce(_ log: SegmentLog, _ id: String) throws -> [IndexedEvent] {
        try bruteForceAll(log)[id] ?? []
    }

    /// The brute-force answers for every id, from one scan of every block.
    func bruteForceAll(_ log: SegmentLog) throws -> [String: [IndexedEvent]] {
        var out = [String: [IndexedEvent]]()
        var clock = Int64.min
        for location in log.locateBlocks() {
            let block = try log.readBlock(location)
            for i in 0..<block.count {
                clock = max(clock, block.ts[i])
                let e = block.event(at: i)
                let found = IndexedEvent(seq: location.header.firstSeq + UInt64(i), event: e, receivedAt: location.header.receivedAt, clock: clock)
                if let t = e.token { out[t, default: []].append(found) }
                if e.type == .refreshed, let p = e.parent, p != e.token { out[p, default: []].append(found) }
            }
        }
        return out
    }

    /// Every id the ledger names (as the index defines naming), by how many events name it.
    func ids(_ log: SegmentLog) throws -> [String: Int] {
        var out = [String: Int]()
        for location in log.locateBlocks() {
            for e in try log.readBlock(location).events {
                if let t = e.token { out[t, default: 0] += 1 }
                if e.type == .refreshed, let p = e.parent, p != e.token { out[p, default: 0] += 1 }
            }
        }
        return out
    }

    func fill(_ log: SegmentLog, _ factory: inout EventFactory, commits: Int, eventsMax: Int = 40) throws {
        for _ in 0..<commits { try log.append(factory.events(factory.int(1...eventsMax))) }
    }

    func tixPaths(_ fs: SimulatedFileSystem) -> [String] {
        fs.allFiles.filter { $0.hasPrefix(ledgerDirectory + "/") && $0.hasSuffix(".tix") }.sorted()
    }

    func assertAnswers(_ index: TokenIndex, _ log: SegmentLog, ids: some Sequence<String>, _ context: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let answers = try bruteForceAll(log)
        for id in ids {
            let got = try index.events(token: id)
            let want = answers[id] ?? []
            XCTAssertEqual(got, want, "\(context): token \(id.debugDescription)", file: file, line: line)
        }
    }

    func testAnswersEqualABruteForceScanOverSeveralSegments() throws {
        let seed = testSeed(0x71C5)
        for round in 0..<4 {
            let fs = SimulatedFileSystem()
            let log = try openLog(fs, LogOptions(segmentBytesMax: 6000, blockEventsMax: 9, fsync: .never))
            var factory = EventFactory(seed: seed &+ UInt64(round), extremeValues: round == 3)
            try fill(log, &factory, commits: 60)
            let context = "seed \(seed), round \(round)"
            XCTAssertGreaterThan(log.segments.count, 3, "\(context): test setup: several segments")
            let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            index.update(blocks: log.blocks)
            let all = try ids(log)
            try assertAnswers(index, log, ids: all.keys.sorted(), context)
            XCTAssertEqual(try index.events(token: "no such token"), [], context)
            XCTAssertEqual(try index.events(token: ""), try bruteForce(log, ""), context)
            index.waitForWrites()
            XCTAssertTrue(index.notes.isEmpty, "\(context): \(index.notes)")
            // Every sealed segment got its file; a new index uses them all and decodes nothing
            // but what the active segment's files do not cover.
            let sealed = log.segments.dropLast()
            XCTAssertEqual(Set(tixPaths(fs)).isSuperset(of: sealed.map { segmentPath(TokenIndexImage.fileName(forSegment: $0)) }), true, context)
            let reopened = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            reopened.update(blocks: log.blocks)
            try assertAnswers(reopened, log, ids: all.keys.sorted().prefix(300), "\(context), from the files")
            let stats = reopened.statistics
            XCTAssertGreaterThanOrEqual(stats.filesLoaded, sealed.count, context)
            XCTAssertEqual(stats.blocksDecoded, log.blocks.filter { $0.segment == log.segments.last! }.count, "\(context): only the active segment is decoded")
        }
    }

    func testWorkloadLedgerAndItsBusiestTokens() throws {
        let seed = testSeed(0x3011)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 64 << 10, blockEventsMax: 500, fsync: .never))
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 30000))
        var batch = [Event]()
        while let e = generator.next() {
            batch.append(e)
            if batch.count == 2000 { try log.append(batch); batch.removeAll() }
        }
        if !batch.isEmpty { try log.append(batch) }
        let context = "workload seed \(seed)"
        XCTAssertGreaterThan(log.segments.count, 2, "\(context): test setup")
        let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        index.update(blocks: log.blocks)
        let all = try ids(log)
        let busiest = all.sorted { $0.value > $1.value }.prefix(10).map(\.key)
        var rng = SplitMix64(seed: seed)
        let sample = all.keys.sorted().filter { _ in rng.next() % 40 == 0 }
        XCTAssertGreaterThan(sample.count, 50, context)
        try assertAnswers(index, log, ids: busiest + sample, context)
    }

    func testRowDecoderEqualsTheFullDecoderOnWorkloadBlocks() throws {
        let seed = testSeed(0x80C4)
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 20000))
        var rng = SplitMix64(seed: seed)
        var events = [Event]()
        while let e = generator.next() { events.append(e) }
        var start = 0
        var blocks = 0
        while start < events.count {
            let end = min(events.count, start + Int(rng.next() % 3000) + 1)
            var encoder = BlockPayloadEncoder(expectedEvents: end - start)
            for e in events[start..<end] { encoder.append(e) }
            let payload = encoder.finish()
            let full = try BlockPayloadDecoder.decode(payload)
            let rows = (0..<full.count).filter { _ in rng.next() % 7 == 0 }
            let selected = try BlockPayloadDecoder.decode(payload, rows: rows)
            XCTAssertEqual(selected.events, rows.map { full.event(at: $0) }, "seed \(seed), block at event \(start)")
            XCTAssertEqual(selected.events, rows.map { events[start + $0] }, "seed \(seed), block at event \(start)")
            start = end
            blocks += 1
        }
        XCTAssertGreaterThan(blocks, 5)
    }

    func testIncrementalUpdatesAnswerAsAFreshIndex() throws {
        let seed = testSeed(0x1C4E)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 5000, blockEventsMax: 6, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        let live = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        // Small, so the active segment's in-memory part is written out (a prefix file) often.
        live.activeFlushEvents = 25
        var checkedRounds = 0
        for round in 0..<25 {
            try fill(log, &factory, commits: 3, eventsMax: 15)
            live.update(blocks: log.blocks)
            let all = try ids(log)
            var rng = SplitMix64(seed: seed &+ UInt64(round))
            let sample = all.keys.sorted().filter { _ in rng.next() % 4 == 0 }
            let context = "seed \(seed), round \(round)"
            try assertAnswers(live, log, ids: sample, "\(context), incremental")
            live.waitForWrites()
            let fresh = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            fresh.update(blocks: log.blocks)
            for id in sample { XCTAssertEqual(try fresh.events(token: id), try live.events(token: id), "\(context): fresh vs incremental, \(id)") }
            if fresh.statistics.filesLoaded > 0 { checkedRounds += 1 }
            XCTAssertTrue(live.notes.isEmpty && fresh.notes.isEmpty, "\(context): \(live.notes) \(fresh.notes)")
        }
        XCTAssertGreaterThan(log.segments.count, 3, "seed \(seed): test setup")
        XCTAssertGreaterThan(checkedRounds, 10, "seed \(seed): fresh indexes started from files")
        // The active segment's prefix file: a fresh index loads it and decodes only the blocks after it.
        let active = log.segments.last!
        let activePath = segmentPath(TokenIndexImage.fileName(forSegment: active))
        if fs.fileExists(activePath) {
            let fresh = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            fresh.update(blocks: log.blocks)
            try fresh.refresh()
            XCTAssertLessThan(fresh.statistics.blocksDecoded, log.blocks.filter { $0.segment == active }.count, "seed \(seed)")
        }
    }

    func testPagingByFromSeqAndLimit() throws {
        let seed = testSeed(0x9A6E)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 8000, blockEventsMax: 11, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        try fill(log, &factory, commits: 50)
        let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        index.update(blocks: log.blocks)
        let busiest = try ids(log).sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(5).map(\.key)
        for id in busiest {
            let all = try index.events(token: id)
            let c = "seed \(seed), token \(id)"
            XCTAssertGreaterThan(all.count, 10, "\(c): test setup")
            for pageSize in [1, 3, 7] {
                var pages = [IndexedEvent]()
                var next: UInt64 = 0
                while true {
                    let page = try index.events(token: id, fromSeq: next, limit: pageSize)
                    XCTAssertLessThanOrEqual(page.count, pageSize, c)
                    pages += page
                    guard page.count == pageSize, let last = page.last else { break }
                    next = last.seq + 1
                }
                XCTAssertEqual(pages, all, "\(c): pages of \(pageSize)")
            }
            let middle = all[all.count / 2].seq
            XCTAssertEqual(try index.events(token: id, fromSeq: middle), all.filter { $0.seq >= middle }, c)
            XCTAssertEqual(try index.events(token: id, fromSeq: log.lastSeq + 1), [], c)
            XCTAssertEqual(try index.events(token: id, limit: 0), [], c)
            XCTAssertEqual(try index.events(token: id, asParent: false), all.filter { $0.event.token == id }, c)
        }
    }

    /// Damaged, truncated, foreign, garbage and stale files: noticed, not trusted, rebuilt, and
    /// the answers stay those of the blocks.
    func testBadIndexFilesAreDetectedAndRebuilt() throws {
        let seed = testSeed(0xDA3A)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 6000, blockEventsMax: 8, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        try fill(log, &factory, commits: 50)
        let first = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        first.update(blocks: log.blocks)
        try first.refresh()
        first.waitForWrites()
        let files = tixPaths(fs)
        XCTAssertGreaterThanOrEqual(files.count, 3, "seed \(seed): test setup")
        let good = fs.snapshot()
        let all = try ids(log).keys.sorted()
        var rng = SplitMix64(seed: seed)

        // Another ledger's file for a segment of the same name: a foreign (stale) file.
        let otherFS = SimulatedFileSystem()
        let other = try openLog(otherFS, LogOptions(segmentBytesMax: 6000, blockEventsMax: 8, fsync: .never))
        var otherFactory = EventFactory(seed: seed ^ 0xFFFF, extremeValues: false)
        try fill(other, &otherFactory, commits: 50)
        let otherIndex = TokenIndex(directory: ledgerDirectory, fileSystem: otherFS)
        otherIndex.update(blocks: other.blocks)
        try otherIndex.refresh()
        otherIndex.waitForWrites()

        func resealChecksum(_ bytes: inout [UInt8]) {
            let sum = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<($0.count - 8)])) }
            for k in 0..<8 { bytes[bytes.count - 8 + k] = UInt8(truncatingIfNeeded: sum >> (8 * UInt64(k))) }
        }
        let damages: [(String, ([UInt8]) -> [UInt8]?)] = [
            ("a flipped bit", { b in var b = b; b[Int(rng.next() % UInt64(b.count))] ^= 1 << UInt8(rng.next() % 8); return b }),
            ("truncated", { b in Array(b.prefix(Int(rng.next() % UInt64(b.count)))) }),
            ("empty", { _ in [] }),
            ("garbage", { b in (0..<b.count).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }),
            ("another ledger's", { _ in otherFS.contents(files[0]) }),
            ("another segment's", { _ in fs.contents(files[1]) }),
            ("a future version", { b in var b = b; b[8] = 9; resealChecksum(&b); return b }),
            // Checksum made to match: the damage is only found when the entries are read.
            ("damaged data, checksum resealed", { b in
                var b = b
                let dataStart = TokenIndexImage.headerSize + ((1 << Int(b[12])) + 1) * 8
                guard dataStart < b.count - 8 else { return nil }
                for k in dataStart..<(b.count - 8) { b[k] = 0xFF }
                resealChecksum(&b)
                return b
            }),
        ]
        for (what, damage) in damages {
            for target in files.prefix(3) where target != files[1] || what != "another segment's" {
                let restored = SimulatedFileSystem.from(good)
                guard let bad = damage(good[target]!) else { continue }
                restored.setContents(target, bad)
                let c = "seed \(seed): \(what) \(target)"
                let log2 = try openLog(restored, LogOptions(segmentBytesMax: 6000, blockEventsMax: 8, fsync: .never, readOnly: true))
                let index = TokenIndex(directory: ledgerDirectory, fileSystem: restored)
                index.update(blocks: log2.blocks)
                let sample = all.filter { _ in rng.next() % 3 == 0 }
                try assertAnswers(index, log2, ids: sample, c)
                index.waitForWrites()
                XCTAssertTrue(index.notes.contains { $0.contains(target) }, "\(c): noted: \(index.notes)")
                // Rewritten: a new index trusts every file and decodes only the active segment.
                let again = TokenIndex(directory: ledgerDirectory, fileSystem: restored)
                again.update(blocks: log2.blocks)
                try assertAnswers(again, log2, ids: sample.prefix(40), "\(c), after the rebuild")
                XCTAssertTrue(again.notes.isEmpty, "\(c): \(again.notes)")
                XCTAssertEqual(again.statistics.filesLoaded, files.count, "\(c): every file, the rebuilt one included, is used")
            }
        }
    }

    /// After the ledger is cut and written again, files describing the old blocks are stale.
    func testFilesOfACutLedgerAreStale() throws {
        let seed = testSeed(0x57A1)
        let fs = SimulatedFileSystem()
        var factory = EventFactory(seed: seed, extremeValues: false)
        var log = try openLog(fs, LogOptions(segmentBytesMax: 6000, blockEventsMax: 8, fsync: .never))
        try fill(log, &factory, commits: 20)
        let before = fs.snapshot()
        try fill(log, &factory, commits: 30)
        let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        index.activeFlushEvents = 10
        index.update(blocks: log.blocks)
        try index.refresh()
        index.waitForWrites()
        let oldFiles = fs.snapshot().filter { $0.key.hasSuffix(".tix") }
        // The same directory with the older segments, the newer index files, then new events.
        try log.close()
        let cut = SimulatedFileSystem.from(before)
        for (path, bytes) in oldFiles { cut.setContents(path, bytes) }
        log = try openLog(cut, LogOptions(segmentBytesMax: 6000, blockEventsMax: 8, fsync: .never))
        var other = EventFactory(seed: seed ^ 0x5555, extremeValues: false)
        try fill(log, &other, commits: 30)
        let fresh = TokenIndex(directory: ledgerDirectory, fileSystem: cut)
        fresh.update(blocks: log.blocks)
        let all = try ids(log).keys.sorted()
        try assertAnswers(fresh, log, ids: all, "seed \(seed)")
        // Whatever it found stale it rebuilt: a third index trusts every sealed segment's file.
        fresh.waitForWrites()
        let third = TokenIndex(directory: ledgerDirectory, fileSystem: cut)
        third.update(blocks: log.blocks)
        try third.refresh()
        XCTAssertGreaterThanOrEqual(third.statistics.filesLoaded, log.segments.count - 1, "seed \(seed)")
        XCTAssertTrue(third.notes.isEmpty, "seed \(seed): \(third.notes)")
        // Told about a list that does not extend the one it had (a cut), an index starts over.
        let k = log.blocks.count / 2
        fresh.update(blocks: log.blocks.prefix(k))
        let lastSeq = log.blocks[k - 1].header.lastSeq
        let answers = try bruteForceAll(log)
        for id in all.prefix(150) {
            XCTAssertEqual(try fresh.events(token: id), (answers[id] ?? []).filter { $0.seq <= lastSeq }, "seed \(seed), after a cut: \(id)")
        }
    }

    func testIdsSharingATagStillGetOnlyTheirEvents() throws {
        let seed = testSeed(0xC011)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 5000, blockEventsMax: 10, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        try fill(log, &factory, commits: 30)
        let all = try ids(log).keys.sorted()
        let hashes: [(String, @Sendable (UnsafeRawBufferPointer, UInt64) -> UInt64)] = [
            ("one tag for every id", { _, _ in 0x1234_5678_0000_0000 }),
            ("sixteen tags", { bytes, key in (XXH64.hash(bytes, seed: key) & 0xF) << 32 }),
            ("tags differing only in low bits", { bytes, key in (XXH64.hash(bytes, seed: key) & 0xFFFF_FFFF) | 0xFFFF_FFF0_0000_0000 }),
        ]
        for (what, hash) in hashes {
            for path in tixPaths(fs) { try fs.remove(path) }
            let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            index.hash = hash
            index.update(blocks: log.blocks)
            try assertAnswers(index, log, ids: all, "seed \(seed): \(what)")
            index.waitForWrites()
            let reopened = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
            reopened.hash = hash
            reopened.update(blocks: log.blocks)
            try assertAnswers(reopened, log, ids: all.prefix(60), "seed \(seed): \(what), from the files")
            XCTAssertGreaterThan(reopened.statistics.filesLoaded, 0, "seed \(seed): \(what)")
        }
    }

    /// Nowhere to write (a full or read-only disk): queries still answer; the failure is noted once.
    func testFailingWritesNeverFailAQuery() throws {
        let seed = testSeed(0x4E0)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 5000, blockEventsMax: 10, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        try fill(log, &factory, commits: 40)
        fs.noSpaceAfterBytes = 0
        let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        index.update(blocks: log.blocks)
        let all = try ids(log).keys.sorted()
        try assertAnswers(index, log, ids: all, "seed \(seed)")
        index.waitForWrites()
        XCTAssertEqual(index.notes.filter { $0.contains("could not write") }.count, 1, "seed \(seed): \(index.notes)")
        XCTAssertTrue(tixPaths(fs).isEmpty, "seed \(seed): \(tixPaths(fs))")
        XCTAssertTrue(fs.allFiles.filter { $0.hasSuffix(".tmp") }.isEmpty, "seed \(seed): temporary files left: \(fs.allFiles)")
        fs.noSpaceAfterBytes = nil
        let readOnly = TokenIndex(directory: ledgerDirectory, fileSystem: fs, writesFiles: false)
        readOnly.update(blocks: log.blocks)
        try assertAnswers(readOnly, log, ids: all.prefix(50), "seed \(seed), writesFiles false")
        readOnly.waitForWrites()
        XCTAssertTrue(tixPaths(fs).isEmpty, "seed \(seed)")
    }

    /// Several threads querying while another feeds new blocks: every answer is a prefix-consistent
    /// brute-force answer for the blocks known at some point.
    func testConcurrentQueriesWhileBlocksArrive() throws {
        let seed = testSeed(0xC0C0)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 5000, blockEventsMax: 10, fsync: .never))
        var factory = EventFactory(seed: seed, extremeValues: false)
        try fill(log, &factory, commits: 20)
        let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs)
        index.activeFlushEvents = 40
        index.update(blocks: log.blocks)
        let early = Array(try ids(log).keys.sorted().prefix(30))
        var staged = [[BlockLocation]]()
        for _ in 0..<10 { try fill(log, &factory, commits: 5); staged.append(log.blocks) }
        let stages = staged
        let answers = try bruteForceAll(log)
        let finalAnswers = early.map { answers[$0] ?? [] }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            if worker == 0 {
                for s in stages { index.update(blocks: s) }
                return
            }
            for _ in 0..<5 {
                for (k, id) in early.enumerated() {
                    do {
                        let got = try index.events(token: id)
                        // Whatever was known then: a prefix of the final answer.
                        if Array(finalAnswers[k].prefix(got.count)) != got { failures.withLock { $0.append("\(id): not a prefix") } }
                    } catch { failures.withLock { $0.append("\(id): \(error)") } }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [], "seed \(seed)")
        for (k, id) in early.enumerated() { XCTAssertEqual(try index.events(token: id), finalAnswers[k], "seed \(seed): \(id)") }
    }

    // MARK: Row checkpoints

    /// Answers equal brute force whatever the checkpoint interval (none, every row, a few rows,
    /// the default, more than a block), from memory and from the files; blocks are really decoded
    /// from their checkpoints.
    func testCheckpointIntervalsAnswerAsBruteForce() throws {
        let seed = testSeed(0xC9E0)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 96 << 10, blockEventsMax: 300, fsync: .never))
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 12000))
        var batch = [Event]()
        while let e = generator.next() {
            batch.append(e)
            if batch.count == 700 { try log.append(batch); batch.removeAll() }
        }
        if !batch.isEmpty { try log.append(batch) }
        let all = try ids(log)
        var rng = SplitMix64(seed: seed)
        let busiest = all.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(15).map(\.key)
        let sample = busiest + all.keys.sorted().filter { _ in rng.next() % 25 == 0 }
        XCTAssertGreaterThan(log.segments.count, 2, "seed \(seed): test setup")
        for k in [0, 1, 5, 64, 256, 100_000] {
            for path in tixPaths(fs) { try fs.remove(path) }
            let c = "seed \(seed), K \(k)"
            let index = TokenIndex(directory: ledgerDirectory, fileSystem: fs, checkpointRows: k)
            index.update(blocks: log.blocks)
            try assertAnswers(index, log, ids: sample, c)
            let st = index.statistics
            if k == 0 { XCTAssertEqual(st.checkpointDecodes, 0, c) } else { XCTAssertGreaterThan(st.checkpointDecodes, st.fullWalks, c) }
            XCTAssertEqual(st.damagedCheckpoints, 0, c)
            index.waitForWrites()
            let reopened = TokenIndex(directory: ledgerDirectory, fileSystem: fs, checkpointRows: 7)
            reopened.update(blocks: log.blocks)
            try assertAnswers(reopened, log, ids: sample, "\(c), from the files")
            // Paging starts inside blocks: rows before from_seq still serve inheritance.
            for id in busiest.prefix(4) {
                let everything = try reopened.events(token: id)
                for cut in everything.map(\.seq).filter({ _ in rng.next() % 3 == 0 }) {
                    XCTAssertEqual(try reopened.events(token: id, fromSeq: cut, limit: 3), Array(everything.filter { $0.seq >= cut }.prefix(3)), "\(c): \(id) from \(cut)")
                }
            }
            XCTAssertEqual(reopened.statistics.damagedCheckpoints, 0, c)
            XCTAssertTrue(reopened.notes.isEmpty && index.notes.isEmpty, "\(c): \(reopened.notes) \(index.notes)")
            if k > 0 { XCTAssertGreaterThan(reopened.statistics.checkpointDecodes, 0, c) }
        }
    }

    /// The checkpoint area of a `.tix` damaged (and the file checksum made to match, so only the
    /// decoder's checks can find it), over many random rounds: queries never trap, answers stay
    /// those of the blocks, and damage that was found is noted and the file rewritten.
    func testDamagedCheckpointBytesGiveTheSameAnswers() throws {
        let seed = testSeed(0xDC17)
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 96 << 10, blockEventsMax: 300, fsync: .never))
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 8000))
        var batch = [Event]()
        while let e = generator.next() {
            batch.append(e)
            if batch.count == 500 { try log.append(batch); batch.removeAll() }
        }
        if !batch.isEmpty { try log.append(batch) }
        let first = TokenIndex(directory: ledgerDirectory, fileSystem: fs, checkpointRows: 16)
        first.update(blocks: log.blocks)
        try first.refresh()
        first.waitForWrites()
        let files = tixPaths(fs)
        XCTAssertGreaterThanOrEqual(files.count, 2, "seed \(seed): test setup")
        let good = fs.snapshot()
        let answers = try bruteForceAll(log)
        let all = answers.keys.sorted()
        var rng = SplitMix64(seed: seed)
        var found = 0
        for round in 0..<50 {
            let target = files[Int(rng.next() % UInt64(files.count))]
            var b = good[target]!
            // The checkpoint area: after the header, the bucket directory and the data.
            let dataBytes = b.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: 88, as: UInt64.self)) }
            let blockCount = b.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: 48, as: UInt32.self)) }
            let dataStart = TokenIndexImage.headerSize + ((1 << Int(b[12])) + 1) * 8
            let recordsStart = dataStart + dataBytes + (blockCount + 1) * 8
            let lo = round % 4 == 0 ? dataStart + dataBytes : recordsStart
            guard lo < b.count - 8 else { continue }
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = lo + Int(rng.next() % UInt64(b.count - 8 - lo))
                switch rng.next() % 3 {
                case 0: b[at] ^= 1 << UInt8(rng.next() % 8)
                case 1: b[at] = UInt8(truncatingIfNeeded: rng.next())
                default: for i in at..<min(b.count - 8, at + 6) { b[i] = 0 }
                }
            }
            let sum = b.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<($0.count - 8)])) }
            for k in 0..<8 { b[b.count - 8 + k] = UInt8(truncatingIfNeeded: sum >> (8 * UInt64(k))) }
            let restored = SimulatedFileSystem.from(good)
            restored.setContents(target, b)
            let c = "seed \(seed), round \(round), \(target)"
            let index = TokenIndex(directory: ledgerDirectory, fileSystem: restored)
            index.update(blocks: log.blocks)
            for id in all where rng.next() % 6 == 0 {
                XCTAssertEqual(try index.events(token: id), answers[id] ?? [], "\(c): \(id)")
            }
            index.waitForWrites()
            if index.statistics.damagedCheckpoints > 0 {
                found += 1
                XCTAssertTrue(index.notes.contains { $0.contains(target) }, "\(c): \(index.notes)")
            }
        }
        XCTAssertGreaterThan(found, 12, "seed \(seed): test setup: damage found by the decoder")
    }
}
