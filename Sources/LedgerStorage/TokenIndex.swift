// The token index: every event naming one token id, without reading the whole ledger.
//
// Per segment, postings (id → the events naming it) come from its `.tix` file when that file is
// valid for the segment as it is now, and otherwise from decoding the segment's blocks (only the
// token references, `BlockPayloadDecoder.tokenKeys`). Blocks past what a file covers, such as the
// tail of the active segment a server is still appending to, are decoded by the reader itself into
// an in-memory table, once: the index remembers how far it got, and the next query decodes only
// blocks committed since. A segment's postings are written back as a `.tix` (temporary file,
// fsync, rename, directory fsync, on a background queue) when it is sealed and, for the active
// segment, each time its in-memory part grows past a threshold, so the next process starts from
// the file. Failing to write never fails a query: the postings stay in memory.
//
// It never runs on a commit path: the caller hands it the list of committed blocks
// (`SegmentLog.blocks`, or a server's published list) and it reads the segment files with file
// handles of its own. A query re-checks every row against the real id (ids are stored as 32-bit
// tags of a keyed hash, so two ids may share a tag; that costs a read, never a wrong answer).
//
// Rows are decoded from per-block row checkpoints (the row decoder's state every
// `checkpointRows` rows, recorded while indexing a block and stored beside the postings), so a
// query walks a few hundred events per row it needs rather than the block up to it. A block whose
// checkpoints cannot answer is walked from its start; a record found damaged is noted and its
// segment re-indexed (and its file rewritten) at the next query.
//
// Thread safety: one lock guards the index's state. `update` and the lookup part of `events`
// take it (the first query after new blocks also decodes those blocks under it); reading and
// decoding the rows a query needs happens outside it, so queries from several threads overlap.
import Dispatch
import Glibc
import LedgerCrypto
import LedgerModel

/// One event found by the token index.
public struct IndexedEvent: Sendable, Equatable {
    public let seq: UInt64
    public let event: Event
    /// When the ledger committed the event's block (epoch ms).
    public let receivedAt: Int64
    /// The ledger's clock at this event: the largest `ts` of events `1...seq`.
    public let clock: Int64

    public init(seq: UInt64, event: Event, receivedAt: Int64, clock: Int64) {
        self.seq = seq; self.event = event; self.receivedAt = receivedAt; self.clock = clock
    }
}

public final class TokenIndex: @unchecked Sendable {
    public struct Stats: Sendable, Equatable {
        /// Events the index covers (every block it was given, once a query or `refresh` ran).
        public var events: UInt64 = 0
        public var segments = 0
        /// Bytes of the segments' postings in `.tix` form (files, or the same bytes held in memory).
        public var imageBytes = 0
        /// Events held only in the in-memory table (not yet in any `.tix` image).
        public var tailEvents = 0
        /// `.tix` files found valid and used, and images built from blocks.
        public var filesLoaded = 0
        public var imagesBuilt = 0
        public var blocksDecoded = 0
        /// Blocks a query decoded from their checkpoints, and from their start (no usable
        /// checkpoint: none recorded, an inherited field it could not resolve, or damage).
        public var checkpointDecodes = 0
        public var fullWalks = 0
        /// Checkpoint records found damaged (each also noted, and its segment re-indexed).
        public var damagedCheckpoints = 0
    }

    public let directory: String
    let fs: any FileSystem
    private let lock = IndexLock()
    private let writer = DispatchQueue(label: "tokenledger.token-index-writer")
    private let pendingWrites = DispatchGroup()

    // Everything below is guarded by `lock`.
    private var writes: Bool
    private var writeFailed = false
    private var writeCounter = 0
    private var blocks: [BlockLocation] = []
    /// Per block: the largest `maxTs` of the blocks before it (the clock entering the block).
    private var clockBefore: [Int64] = []
    private var segments: [SegmentPostings] = []
    /// Segments before this one are sealed and wholly in images: queries only look them up.
    private var settledSegments = 0
    private var handles: [String: any FileHandle] = [:]
    private var noteList: [String] = []
    private var stats = Stats()

    /// The keyed hash of an id's UTF-8 bytes (a seam for tests, which force collisions with it).
    var hash: @Sendable (UnsafeRawBufferPointer, UInt64) -> UInt64 = { TokenIndexImage.hash($0, key: $1) }
    /// The active segment's in-memory part is written out once it holds this many events (or a
    /// quarter of what the segment's image already covers, whichever is more).
    var activeFlushEvents = 1 << 18
    /// Rows between checkpoints recorded for blocks this index decodes (0: none).
    let checkpointRows: Int

    /// - Parameters:
    ///   - directory: the ledger's data directory (where the `.seg` files are).
    ///   - writesFiles: write `.tix` files; with false the index only reads them.
    ///   - checkpointRows: record the row decoder's state every this many rows of each block it
    ///     indexes (0: none; queries then walk each block from its start). Files written with
    ///     another interval are read as they are.
    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem(), writesFiles: Bool = true, checkpointRows: Int = 256) {
        self.directory = directory
        self.fs = fileSystem
        self.writes = writesFiles
        self.checkpointRows = max(0, checkpointRows)
    }

    deinit {
        pendingWrites.wait()
        for h in handles.values { h.close() }
    }

    /// Problems met so far (a `.tix` that was damaged or stale and rebuilt, a write that failed),
    /// one line each, for the caller to show.
    public var notes: [String] { lock.locked { noteList } }

    public var statistics: Stats {
        lock.locked {
            var s = stats
            s.segments = segments.count
            s.imageBytes = segments.reduce(0) { $0 + ($1.image?.bytes.count ?? 0) }
            s.tailEvents = segments.reduce(0) { $0 + $1.tailEvents }
            s.events = blocks.last.map { $0.header.lastSeq - (blocks.first!.header.firstSeq - 1) } ?? 0
            return s
        }
    }

    /// Tells the index which blocks are committed: the ledger's blocks in sequence order, from the
    /// first. Cheap (no reading); the next query or `refresh` indexes the new ones. A list that
    /// extends the previous one keeps everything indexed so far; any other list (the ledger was
    /// cut by recovery and written again) starts over, re-checking every `.tix` against it.
    public func update(blocks list: some Collection<BlockLocation>) {
        lock.locked {
            let known = blocks.count
            var extends = list.count >= known
            if extends && known > 0 {
                extends = list.first == blocks.first && list[list.index(list.startIndex, offsetBy: known - 1)] == blocks[known - 1]
            }
            if !extends {
                blocks.removeAll(); clockBefore.removeAll(); segments.removeAll(); settledSegments = 0
            }
            for location in list.dropFirst(blocks.count) { append(location) }
        }
    }

    /// Tells the index about blocks committed after those it knows (as `update`, for a caller that
    /// hands over only new blocks): blocks it already has are skipped; the rest must continue the
    /// sequence, and one that does not (a gap) is left out with those after it.
    public func append(blocks more: some Collection<BlockLocation>) {
        lock.locked {
            for location in more {
                if let last = blocks.last {
                    if location.header.lastSeq <= last.header.lastSeq { continue }
                    guard location.header.firstSeq == last.header.lastSeq + 1 else { return }
                }
                append(location)
            }
        }
    }

    /// Indexes every block given so far now, rather than at the next query.
    public func refresh() throws(StorageError) {
        try lock.locked { () throws(StorageError) in try catchUp() }
    }

    /// Waits until every `.tix` write scheduled so far has finished (or failed).
    public func waitForWrites() {
        pendingWrites.wait()
    }

    /// Every event naming `id` (as `token`, or with `asParent` also as the `parent` of a
    /// `refreshed` event, i.e. the refresh that replaced it), seq ascending.
    /// - Parameters:
    ///   - fromSeq: the first sequence number wanted (page on with the last seq returned + 1).
    ///   - limit: at most this many events.
    /// - Throws: `StorageError.corrupt` naming the block when a block the id is in cannot be read.
    public func events(token id: String, fromSeq: UInt64 = 0, limit: Int = .max, asParent: Bool = true) throws(StorageError) -> [IndexedEvent] {
        guard limit > 0 else { return [] }
        let plan = try lock.locked { () throws(StorageError) -> [BlockRead] in
            try catchUp()
            return try candidates(id, fromSeq: fromSeq)
        }
        var out = [IndexedEvent]()
        let utf8 = Array(id.utf8)
        for read in plan {
            let found = try decodeRows(read, id: id, utf8: utf8)
            for (row, event, clock) in found {
                guard event.token == id || (asParent && event.type == .refreshed && event.parent == id) else { continue }
                guard read.location.header.firstSeq + UInt64(row) >= fromSeq else { continue }
                out.append(IndexedEvent(seq: read.location.header.firstSeq + UInt64(row), event: event,
                                        receivedAt: read.location.header.receivedAt, clock: clock))
                if out.count == limit { return out }
            }
        }
        return out
    }

    // MARK: Under the lock

    private func append(_ location: BlockLocation) {
        let before = blocks.isEmpty ? Int64.min : max(clockBefore[blocks.count - 1], blocks[blocks.count - 1].header.maxTs)
        blocks.append(location)
        clockBefore.append(before)
        if let last = segments.last, last.name == location.segment {
            last.end = blocks.count
        } else {
            let nameSeq = SegmentHeader.firstSeq(fromFileName: location.segment) ?? location.header.firstSeq
            segments.append(SegmentPostings(name: location.segment, firstSeq: min(nameSeq, location.header.firstSeq),
                                            start: blocks.count - 1, hashKey: UInt64.random(in: .min ... .max)))
        }
    }

    private func catchUp() throws(StorageError) {
        var i = settledSegments
        while i < segments.count {
            let s = segments[i]
            let sealed = i < segments.count - 1
            try cover(s, sealed: sealed)
            if sealed && s.tailEvents == 0 && s.covered == s.end - s.start && i == settledSegments { settledSegments += 1 }
            i += 1
        }
    }

    /// Brings one segment's postings up to its last known block.
    private func cover(_ s: SegmentPostings, sealed: Bool) throws(StorageError) {
        let known = s.end - s.start
        if s.image == nil && s.covered == 0 && !s.fileChecked { loadFile(s) }
        while s.covered < known {
            let location = blocks[s.start + s.covered]
            let keys = try tokenKeys(location, hashKey: s.hashKey)
            s.tailCheckpoints.append(keys.checkpoints[...])
            let base = location.header.firstSeq - s.firstSeq
            for k in keys.rows.indices {
                let tag = TokenIndexImage.tag(keys.hashes[k])
                let offset = base + UInt64(keys.rows[k])
                // An event naming the same id twice (a refresh whose parent is itself) counts once.
                if s.tail[tag]?.last != offset { s.tail[tag, default: []].append(offset) }
            }
            s.covered += 1
            s.tailEvents += Int(location.header.eventCount)
            stats.blocksDecoded += 1
        }
        s.rebuildPending = false
        let imageEvents = Int(s.image?.coveredEvents ?? 0)
        if s.tailEvents > 0 && (sealed || s.tailEvents >= max(activeFlushEvents, imageEvents / 4)) && !compact(s) {
            try cover(s, sealed: sealed)
        }
    }

    private func loadFile(_ s: SegmentPostings) {
        let name = TokenIndexImage.fileName(forSegment: s.name)
        let path = joinPath(directory, name)
        guard fs.fileExists(path) else { s.fileChecked = true; return }
        let known = blocks[s.start..<s.end]
        do {
            let handle = try fs.open(path, create: false, writable: false)
            defer { handle.close() }
            let size = try handle.size()
            // Postings take a few bytes per event and every event at least one payload byte: this
            // bound keeps a forged size from allocating without limit.
            let rawBytes = known.reduce(UInt64(0)) { $0 + UInt64($1.header.rawBytes) }
            guard size <= (1 << 20) + 64 * rawBytes else { throw TokenIndexFileProblem("\(size) bytes, too large for its segment") }
            let bytes = try handle.read(at: 0, count: Int(size))
            let image = try TokenIndexImage(bytes: bytes, segmentFirstSeq: s.firstSeq, blocks: known)
            s.fileChecked = true
            s.image = image
            s.hashKey = image.hashKey
            s.covered = image.blockCount
            stats.filesLoaded += 1
        } catch let problem as TokenIndexFileProblem where problem.ahead {
            return
        } catch {
            s.fileChecked = true
            noteList.append("token index \(path): \(error); rebuilding it from the segment")
        }
    }

    /// Folds the in-memory part into the segment's image and schedules writing it.
    /// - Returns: false when the old image turned out damaged and the segment must be indexed again.
    private func compact(_ s: SegmentPostings) -> Bool {
        var builder = TokenIndexBuilder()
        if let image = s.image {
            do {
                try image.forEachEntry { tag, offsets in for o in offsets { builder.add(tag, o) } }
            } catch {
                // The image passed its checks but its entries do not decode: start the segment over.
                noteList.append("token index \(joinPath(directory, TokenIndexImage.fileName(forSegment: s.name))): \(error); rebuilding it from the segment")
                s.reset()
                return false
            }
        }
        for (tag, offsets) in s.tail { for o in offsets { builder.add(tag, o) } }
        var checkpoints = [ArraySlice<UInt8>]()
        checkpoints.reserveCapacity(s.covered)
        for b in 0..<(s.image?.blockCount ?? 0) { checkpoints.append(s.image!.checkpoints(block: b)) }
        checkpoints += s.tailCheckpoints
        let last = blocks[s.start + s.covered - 1]
        let bytes = builder.build(hashKey: s.hashKey, segmentFirstSeq: s.firstSeq, coveredEvents: last.header.lastSeq - s.firstSeq + 1,
                                  coveredBytes: last.offset + UInt64(last.header.totalBytes), blockCount: s.covered,
                                  lastChainHash: last.header.chainHash, checkpoints: checkpoints)
        do {
            s.image = try TokenIndexImage(bytes: bytes, segmentFirstSeq: s.firstSeq, blocks: blocks[s.start..<s.end])
        } catch {
            // Cannot happen for bytes built just now; keeping the table keeps the answers right.
            noteList.append("token index for \(s.name): built an image that does not read back (\(error)); kept in memory")
            return true
        }
        s.tail = [:]
        s.tailEvents = 0
        s.tailCheckpoints = []
        stats.imagesBuilt += 1
        if writes && !writeFailed { scheduleWrite(bytes, segment: s.name) }
        return true
    }

    private func scheduleWrite(_ bytes: [UInt8], segment: String) {
        writeCounter += 1
        let name = TokenIndexImage.fileName(forSegment: segment)
        let path = joinPath(directory, name)
        let temporary = joinPath(directory, ".\(name).\(getpid()).\(writeCounter).tmp")
        let fs = self.fs, directory = self.directory
        pendingWrites.enter()
        writer.async { [self] in
            defer { pendingWrites.leave() }
            do {
                let handle = try fs.open(temporary, create: true, writable: true)
                do {
                    try handle.truncate(to: 0)
                    try handle.write(at: 0, bytes)
                    try handle.sync()
                } catch {
                    handle.close()
                    throw error
                }
                handle.close()
                try fs.rename(temporary, to: path)
                try fs.syncDirectory(directory)
            } catch {
                try? fs.remove(temporary)
                lock.locked {
                    // A read-only data directory fails every time: say it once and stop trying.
                    if !writeFailed { noteList.append("could not write token index \(path): \(error); it is kept in memory only") }
                    writeFailed = true
                }
            }
        }
    }

    /// The blocks to read for `id` from `fromSeq` on, each with the rows that may name it.
    private func candidates(_ id: String, fromSeq: UInt64) throws(StorageError) -> [BlockRead] {
        var reads = [BlockRead]()
        var tags = [UInt64: UInt32]()
        var utf8 = Array(id.utf8)
        for s in segments where s.end > s.start && blocks[s.end - 1].header.lastSeq >= fromSeq {
            let tag: UInt32
            if let known = tags[s.hashKey] { tag = known } else {
                tag = TokenIndexImage.tag(utf8.withUnsafeBytes { hash($0, s.hashKey) })
                tags[s.hashKey] = tag
            }
            var offsets = [UInt64]()
            if let image = s.image {
                do { offsets = try image.lookup(tag) } catch {
                    noteList.append("token index \(joinPath(directory, TokenIndexImage.fileName(forSegment: s.name))): \(error); rebuilding it from the segment")
                    s.reset()
                    try cover(s, sealed: s !== segments.last)
                    // A rebuilt image came from the blocks just now; a second failure is a bug.
                    offsets = (try? s.image?.lookup(tag)) ?? []
                }
            }
            offsets += s.tail[tag] ?? []
            // Offsets ascend, and so do the segment's blocks: one forward walk maps them to rows.
            // A block is read with all its candidate rows, those before `fromSeq` too: a row may
            // inherit fields from an earlier event of its token in the block.
            var b = s.start
            var current: BlockRead?
            let imageBlocks = s.image?.blockCount ?? 0
            for offset in offsets {
                let seq = s.firstSeq + offset
                while b < s.end && blocks[b].header.lastSeq < seq { b += 1 }
                guard b < s.end, blocks[b].header.firstSeq <= seq else { continue } // in a block the ledger no longer has
                guard blocks[b].header.lastSeq >= fromSeq else { continue }
                let row = Int(seq - blocks[b].header.firstSeq)
                if current?.blockIndex != b {
                    if let c = current { reads.append(c) }
                    let k = b - s.start
                    let checkpoints = k < imageBlocks ? s.image!.checkpoints(block: k)
                        : k - imageBlocks < s.tailCheckpoints.count ? s.tailCheckpoints[k - imageBlocks] : []
                    current = BlockRead(blockIndex: b, location: blocks[b], clockBefore: clockBefore[b], rows: [], handle: try handle(blocks[b].segment),
                                        checkpoints: checkpoints, segment: s, tag: tag, hashKey: s.hashKey)
                }
                if current!.rows.last != row { current!.rows.append(row) }
            }
            if let c = current { reads.append(c) }
        }
        utf8.removeAll()
        return reads
    }

    private func handle(_ segment: String) throws(StorageError) -> any FileHandle {
        if let h = handles[segment] { return h }
        let h = try fs.open(joinPath(directory, segment), create: false, writable: false)
        handles[segment] = h
        return h
    }

    private func tokenKeys(_ location: BlockLocation, hashKey: UInt64) throws(StorageError) -> BlockTokenKeys {
        let raw = try readRaw(location, handle: try handle(location.segment))
        let hash = self.hash
        let keys: BlockTokenKeys
        do { keys = try BlockPayloadDecoder.tokenKeys(raw, checkpointEvery: checkpointRows) { hash($0, hashKey) } } catch {
            throw corrupt(location, "payload does not decode: \(error)")
        }
        try check(location, count: keys.count, minTs: keys.minTs, maxTs: keys.maxTs)
        return keys
    }

    // MARK: Outside the lock

    private func decodeRows(_ read: BlockRead, id: String, utf8: [UInt8]) throws(StorageError) -> [(Int, Event, Int64)] {
        let raw = try readRaw(read.location, handle: read.handle)
        if !read.checkpoints.isEmpty {
            let resumed = raw.withUnsafeBytes { p in
                read.checkpoints.withUnsafeBytes { r in
                    BlockPayloadDecoder.decode(p, rows: read.rows, checkpoints: r, maxTs: read.location.header.maxTs, token: utf8)
                }
            }
            switch resumed {
            case let .rows(rows):
                // Every row must name the id, or be one of an id sharing its tag (a row naming
                // another id under another tag means the walk went wrong).
                let hash = self.hash
                func tagOf(_ text: String?) -> UInt32? {
                    guard let text else { return nil }
                    let bytes = Array(text.utf8)
                    return TokenIndexImage.tag(bytes.withUnsafeBytes { hash($0, read.hashKey) })
                }
                let stray = rows.events.firstIndex { e in
                    e.token != id && !(e.type == .refreshed && e.parent == id)
                        && tagOf(e.token) != read.tag && !(e.type == .refreshed && tagOf(e.parent) == read.tag)
                }
                if let stray {
                    damaged(read, "row \(rows.rows[stray]) names neither the id nor an id of its tag")
                } else if rows.count == Int(read.location.header.eventCount), rows.minTs >= read.location.header.minTs, rows.maxTs <= read.location.header.maxTs {
                    lock.locked { stats.checkpointDecodes += 1 }
                    return rows.events.indices.map { k in (rows.rows[k], rows.events[k], max(read.clockBefore, rows.maxTsThrough[k])) }
                } else {
                    damaged(read, "rows outside the block header's count or time range")
                }
            case .unresolvable:
                break
            case let .damaged(reason):
                damaged(read, reason)
            }
        }
        lock.locked { stats.fullWalks += 1 }
        let rows: BlockRows
        do { rows = try BlockPayloadDecoder.decode(raw, rows: read.rows) } catch {
            throw corrupt(read.location, "payload does not decode: \(error)")
        }
        try check(read.location, count: rows.count, minTs: rows.minTs, maxTs: rows.maxTs)
        return rows.events.indices.map { k in (rows.rows[k], rows.events[k], max(read.clockBefore, rows.maxTsThrough[k])) }
    }

    /// A checkpoint record contradicted its block: noted, and the segment is indexed again from
    /// its blocks at the next query (which rewrites its file). The answer comes from a full walk.
    private func damaged(_ read: BlockRead, _ reason: String) {
        lock.locked {
            stats.damagedCheckpoints += 1
            guard let i = segments.firstIndex(where: { $0 === read.segment }), !read.segment.rebuildPending else { return }
            noteList.append("token index \(joinPath(directory, TokenIndexImage.fileName(forSegment: read.segment.name))): checkpoints of block seq \(read.location.header.firstSeq)-\(read.location.header.lastSeq) are damaged (\(reason)); rebuilding it from the segment")
            read.segment.reset()
            read.segment.rebuildPending = true
            settledSegments = min(settledSegments, i)
        }
    }

    /// What `BlockReader.decode` checks of a decoded payload against its header.
    private func check(_ location: BlockLocation, count: Int, minTs: Int64, maxTs: Int64) throws(StorageError) {
        guard count == Int(location.header.eventCount) else {
            throw corrupt(location, "header says \(location.header.eventCount) events, payload holds \(count)")
        }
        guard minTs >= location.header.minTs, maxTs <= location.header.maxTs else {
            throw corrupt(location, "events' timestamps fall outside the header's time range")
        }
    }

    private func readRaw(_ location: BlockLocation, handle: any FileHandle) throws(StorageError) -> [UInt8] {
        let stored = try handle.read(at: location.offset + UInt64(BlockHeader.size), count: Int(location.header.storedBytes))
        guard stored.count == Int(location.header.storedBytes) else { throw corrupt(location, "truncated") }
        switch stored.withUnsafeBytes({ BlockReader.rawPayload(header: location.header, stored: $0) }) {
        case let .success(raw): return raw
        case let .failure(problem): throw corrupt(location, "\(problem)")
        }
    }

    private func corrupt(_ location: BlockLocation, _ reason: String) -> StorageError {
        .corrupt(path: joinPath(directory, location.segment), offset: location.offset,
                 reason: "block seq \(location.header.firstSeq)-\(location.header.lastSeq): \(reason)")
    }
}

/// One segment's postings: an image (from its `.tix`, or built here) covering its first
/// `image.blockCount` blocks, then an in-memory table for the blocks after, up to `covered`.
private final class SegmentPostings {
    let name: String
    let firstSeq: UInt64
    /// The segment's blocks are `start..<end` in the index's block list.
    let start: Int
    var end: Int
    var hashKey: UInt64
    var image: TokenIndexImage?
    var fileChecked = false
    /// Blocks covered, from the segment's first: the image's, then the table's.
    var covered = 0
    var tail: [UInt32: [UInt64]] = [:]
    var tailEvents = 0
    /// Checkpoint records of the blocks in `tail` (after the image's), in order.
    var tailCheckpoints: [ArraySlice<UInt8>] = []
    /// Reset after damage was found, not yet re-indexed: further damage reports add nothing.
    var rebuildPending = false

    init(name: String, firstSeq: UInt64, start: Int, hashKey: UInt64) {
        self.name = name; self.firstSeq = firstSeq; self.start = start; self.end = start + 1; self.hashKey = hashKey
    }

    /// Forgets everything (a damaged image): the segment is indexed again from its blocks.
    func reset() {
        image = nil
        covered = 0
        tail = [:]
        tailEvents = 0
        tailCheckpoints = []
        fileChecked = true
    }
}

private struct BlockRead {
    let blockIndex: Int
    let location: BlockLocation
    let clockBefore: Int64
    var rows: [Int]
    let handle: any FileHandle
    /// The block's checkpoint record (empty: none), its segment, and the asked id's tag there.
    let checkpoints: ArraySlice<UInt8>
    let segment: SegmentPostings
    let tag: UInt32
    let hashKey: UInt64
}

/// A pthread mutex: held across typed-throwing bodies, which `Synchronization.Mutex` makes awkward.
final class IndexLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }

    func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
