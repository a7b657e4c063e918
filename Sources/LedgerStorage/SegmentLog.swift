// The append-only, hash-chained segment log (FORMAT.md).
//
// Threading model: a SegmentLog has one owner. All calls on one instance must come from one
// thread at a time (the server wraps it in its writer thread); nothing here locks. Another
// process is kept out by an exclusive lock on DIR/LOCK while the log is open for writing.
//
// Fault model: a write may land partially and the process may die at any byte; an fsync may fail.
// An append is acknowledged (returns) only after the bytes it wrote are durable under the chosen
// policy. A failed write is rolled back to the last acknowledged length; a failed fsync stops the
// log (the page cache can no longer be trusted), and it must be reopened, which recovers.
import LedgerCrypto
import LedgerModel

public enum FsyncPolicy: Equatable, Sendable, CustomStringConvertible {
    /// fsync before every acknowledgement (the default): an acknowledged event survives power loss.
    case always
    /// fsync at most every `ms` milliseconds; an acknowledgement may precede durability by that much.
    case interval(ms: Int)
    /// Leave write-back to the OS; survives a process crash, not power loss.
    case never

    public var description: String {
        switch self {
        case .always: "always"
        case let .interval(ms): "interval:\(ms)ms"
        case .never: "never"
        }
    }

    /// Parses `always`, `never`, `interval` (1000 ms) or `interval:MS`.
    public init?(parsing text: String) {
        switch text {
        case "always": self = .always
        case "never": self = .never
        case "interval": self = .interval(ms: 1000)
        default:
            guard text.hasPrefix("interval:") else { return nil }
            var digits = text.dropFirst("interval:".count)
            if digits.hasSuffix("ms") { digits = digits.dropLast(2) }
            guard let ms = Int(digits), ms > 0 else { return nil }
            self = .interval(ms: ms)
        }
    }
}

public struct LogOptions: Sendable {
    /// A segment is rolled once it reaches this size.
    public var segmentBytesMax: UInt64 = 64 << 20
    /// Events per block when the log splits a batch itself.
    public var blockEventsMax: Int = 16384
    public var fsync: FsyncPolicy = .always
    /// Open without the write lock and without repairing anything (replay, verify, digest).
    public var readOnly: Bool = false
    /// Prepare each next segment ahead, as a zero-filled synced file, so that commits overwrite
    /// allocated blocks instead of growing the file (FORMAT.md, "Preallocated space"): a
    /// commit's fdatasync then writes no inode. Costs a segment's size of disk ahead, written
    /// in the background; for servers, not for one-shot commands.
    public var preallocate: Bool = false

    public init(segmentBytesMax: UInt64 = 64 << 20, blockEventsMax: Int = 16384, fsync: FsyncPolicy = .always, readOnly: Bool = false,
                preallocate: Bool = false) {
        self.segmentBytesMax = segmentBytesMax; self.blockEventsMax = blockEventsMax; self.fsync = fsync; self.readOnly = readOnly
        self.preallocate = preallocate
    }
}

/// Where one block lives.
public struct BlockLocation: Sendable, Equatable {
    public let segment: String
    public let offset: UInt64
    public let header: BlockHeader
}

public struct AppendResult: Sendable, Equatable {
    public let firstSeq: UInt64
    public let lastSeq: UInt64
    public let chainHash: Digest32
    /// True when the events were fsynced before this returned.
    public let durable: Bool
}

public final class SegmentLog: @unchecked Sendable {
    public let directory: String
    public let options: LogOptions
    let fs: any FileSystem
    let clock: any Clock

    /// Every readable block in sequence order (the in-memory sparse index).
    public internal(set) var blocks: [BlockLocation] = []
    /// Segment file names in order.
    public internal(set) var segments: [String] = []
    public internal(set) var lastSeq: UInt64 = 0
    public internal(set) var chainHash: Digest32 = .zero
    public internal(set) var recovery = RecoveryReport()
    /// Why appends are refused, if they are.
    public internal(set) var failure: StorageError?

    var lockHandle: (any FileHandle)?
    var activeHandle: (any FileHandle)?
    var activeSize: UInt64 = 0
    /// The active segment file's size when it holds preallocated zeros past `activeSize`.
    var activeAllocated: UInt64 = 0
    /// Prepares the next segment (with `LogOptions.preallocate`).
    var preparer: SegmentPreparer?
    /// What preparing the next segments has done (all zeros without `LogOptions.preallocate`);
    /// safe to read from any thread.
    public let preparations = PreparationRecord()
    var unsynced: [any FileHandle] = []
    var directoryNeedsSync = false
    var lastSyncNs: UInt64 = 0
    var readHandles: [String: any FileHandle] = [:]
    let hasher = SHA256Hasher()

    public var isReadOnly: Bool { options.readOnly || !recovery.damage.isEmpty }
    public var firstSeq: UInt64 { blocks.first?.header.firstSeq ?? 1 }
    public var totalEventCount: UInt64 { lastSeq }

    init(directory: String, options: LogOptions, fs: any FileSystem, clock: any Clock) {
        self.directory = directory; self.options = options; self.fs = fs; self.clock = clock
    }

    deinit {
        try? close()
    }

    // MARK: Appending

    /// Encodes `events` into blocks of at most `blockEventsMax`, each deployment marker ending
    /// its block (so a marker's chain hash is a block's), and appends them as one commit.
    @discardableResult
    public func append(_ events: [Event]) throws(StorageError) -> AppendResult {
        try append(encoded: try EncodedBlock.blocks(events, blockEventsMax: options.blockEventsMax))
    }

    /// Appends already-encoded blocks as one commit: one fsync for all of them (group commit).
    @discardableResult
    public func append(encoded: [EncodedBlock]) throws(StorageError) -> AppendResult {
        if let failure { throw failure }
        if options.readOnly { throw .readOnly("opened read-only") }
        if !recovery.damage.isEmpty { throw .readOnly("damage found on open: \(recovery.damage[0])") }
        guard !encoded.isEmpty else { return AppendResult(firstSeq: lastSeq + 1, lastSeq: lastSeq, chainHash: chainHash, durable: true) }

        let saved = (segments: segments, activeSize: activeSize, blockCount: blocks.count, lastSeq: lastSeq, chainHash: chainHash,
                     active: activeHandle)
        let receivedAt = clock.nowMs()
        let firstSeq = lastSeq + 1
        do {
            var pending = [UInt8]()
            for block in encoded {
                if activeHandle == nil || activeSize >= options.segmentBytesMax {
                    if !pending.isEmpty { try activeHandle!.write(at: activeSize - UInt64(pending.count), pending); pending.removeAll() }
                    try rollSegment()
                }
                var header = BlockHeader(codec: block.codec, firstSeq: lastSeq + 1, eventCount: UInt32(block.eventCount),
                                         storedBytes: UInt32(block.stored.count), rawBytes: UInt32(block.raw.count),
                                         minTs: block.minTs, maxTs: block.maxTs, receivedAt: receivedAt,
                                         payloadChecksum: block.stored.withUnsafeBytes { XXH64.hash($0) }, chainHash: .zero)
                header.chainHash = block.raw.withUnsafeBytes { computeChainHash(previous: self.chainHash, header: header, rawPayload: $0, hasher: hasher) }
                // Blocks of one commit are written with one pwrite where they share a segment.
                header.encode(into: &pending)
                pending.append(contentsOf: block.stored)
                blocks.append(BlockLocation(segment: segments.last!, offset: activeSize, header: header))
                activeSize += UInt64(header.totalBytes)
                lastSeq = header.lastSeq
                chainHash = header.chainHash
            }
            if !pending.isEmpty { try activeHandle!.write(at: activeSize - UInt64(pending.count), pending) }
            if !unsynced.contains(where: { $0 === activeHandle! }) { unsynced.append(activeHandle!) }
        } catch {
            try rollBack(to: saved.segments, activeSize: saved.activeSize, blockCount: saved.blockCount,
                         lastSeq: saved.lastSeq, chainHash: saved.chainHash, cause: error)
            throw error
        }
        let durable: Bool
        switch options.fsync {
        case .always:
            try syncNow()
            durable = true
        case let .interval(ms):
            if monotonicNanoseconds() - lastSyncNs >= UInt64(ms) * 1_000_000 { try syncNow() }
            durable = unsynced.isEmpty
        case .never:
            durable = false
        }
        return AppendResult(firstSeq: firstSeq, lastSeq: lastSeq, chainHash: chainHash, durable: durable)
    }

    /// Makes everything appended so far durable.
    public func sync() throws(StorageError) {
        if let failure { throw failure }
        try syncNow()
    }

    func syncNow() throws(StorageError) {
        do {
            for handle in unsynced { try handle.sync() }
            unsynced.removeAll()
            if directoryNeedsSync {
                try fs.syncDirectory(directory)
                directoryNeedsSync = false
            }
            lastSyncNs = monotonicNanoseconds()
        } catch {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on disk
            // is unknown, so stop rather than acknowledge on top of it.
            failure = .failed("\(error); reopen the ledger to recover")
            throw failure!
        }
    }

    func rollSegment() throws(StorageError) {
        if let active = activeHandle, let name = segments.last {
            // A segment is durable before the next one exists, whatever the fsync policy: a torn
            // write can then only be in the last segment, which is where recovery cuts. (Without
            // this, a crash could leave a sealed segment torn behind a newer one: read-only damage.)
            // Its preallocated zeros go first, so only the last segment ever holds any.
            if activeAllocated > activeSize { try active.truncate(to: activeSize) }
            activeAllocated = 0
            if !unsynced.contains(where: { $0 === active }) { unsynced.append(active) }
            try syncNow()
            do {
                try writeIndex(segment: name, size: activeSize, blocks: blocks.filter { $0.segment == name })
            } catch {
                // The index is optional; an old one left behind must not describe other bytes.
                try? fs.remove(joinPath(directory, SegmentLog.indexName(forSegment: name)))
            }
        }
        let name = SegmentHeader.fileName(firstSeq: lastSeq + 1)
        let path = joinPath(directory, name)
        // A prepared file becomes the segment by rename (the directory sync of this commit
        // makes the name durable); until its header is durable it is all zeros, which
        // recovery removes. Without one, the segment starts empty as before.
        var usedPrepared = false
        if let ready = preparer?.take(), (try? fs.rename(ready, to: path)) != nil { usedPrepared = true }
        let handle = try fs.open(path, create: !usedPrepared, writable: true)
        // Listed before its header is written, so a failed write rolls the new file back too.
        segments.append(name)
        activeHandle = handle
        activeSize = UInt64(SegmentHeader.size)
        activeAllocated = 0
        unsynced.append(handle)
        directoryNeedsSync = true
        if usedPrepared { activeAllocated = try handle.size() } else { try handle.truncate(to: 0) }
        try handle.write(at: 0, SegmentHeader(firstSeq: lastSeq + 1, previousChainHash: chainHash).encode())
        preparer?.start()
    }

    private func rollBack(to savedSegments: [String], activeSize savedSize: UInt64, blockCount: Int, lastSeq savedSeq: UInt64,
                          chainHash savedChain: Digest32, cause: StorageError) throws(StorageError) {
        do {
            for name in segments where !savedSegments.contains(name) {
                unsynced.removeAll { $0.path == joinPath(directory, name) }
                try fs.remove(joinPath(directory, name))
                try fs.remove(joinPath(directory, SegmentLog.indexName(forSegment: name)))
            }
            if let last = savedSegments.last {
                let sealedInThisCommit = segments.last != last
                let handle = sealedInThisCommit ? try fs.open(joinPath(directory, last), create: false, writable: true) : activeHandle!
                if sealedInThisCommit {
                    // Its index describes the blocks being rolled back.
                    try fs.remove(joinPath(directory, SegmentLog.indexName(forSegment: last)))
                }
                try handle.truncate(to: savedSize)
                activeAllocated = 0
                // The roll synced the rolled-back blocks; unsynced, the truncation could be lost
                // and they would come back after a crash although the append failed.
                try handle.sync()
                activeHandle = handle
            } else {
                activeHandle = nil
            }
        } catch {
            failure = .failed("\(cause), and rolling back the partial write failed too: \(error)")
        }
        segments = savedSegments
        activeSize = savedSize
        blocks.removeLast(blocks.count - blockCount)
        lastSeq = savedSeq
        chainHash = savedChain
    }

    public func close() throws(StorageError) {
        preparer?.stop()
        preparer = nil
        defer {
            activeHandle?.close(); activeHandle = nil
            for (_, h) in readHandles { h.close() }
            readHandles.removeAll()
            lockHandle?.close(); lockHandle = nil
            // Without the lock and the active handle an append would start a new segment that
            // another writer may be racing on.
            if failure == nil { failure = .failed("the ledger is closed") }
        }
        if failure == nil && !options.readOnly && (!unsynced.isEmpty || directoryNeedsSync) { try syncNow() }
    }

    // MARK: Reading

    /// Blocks that may hold events in the given sequence and time ranges (bounds inclusive).
    public func locateBlocks(fromSeq: UInt64? = nil, toSeq: UInt64? = nil, since: Int64? = nil, until: Int64? = nil) -> ArraySlice<BlockLocation> {
        if let fromSeq, let toSeq, fromSeq > toSeq { return [] }
        if let since, let until, since > until { return [] }
        var lower = 0
        if let fromSeq {
            var lo = 0, hi = blocks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if blocks[mid].header.lastSeq < fromSeq { lo = mid + 1 } else { hi = mid }
            }
            lower = lo
        }
        var upper = blocks.count
        if let toSeq {
            var lo = lower, hi = blocks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if blocks[mid].header.firstSeq <= toSeq { lo = mid + 1 } else { hi = mid }
            }
            upper = lo
        }
        guard lower < upper else { return [] }
        let slice = blocks[lower..<upper]
        if since == nil && until == nil { return slice }
        return ArraySlice(slice.filter { b in
            (since.map { b.header.maxTs >= $0 } ?? true) && (until.map { b.header.minTs <= $0 } ?? true)
        })
    }

    func readHandle(_ segment: String) throws(StorageError) -> any FileHandle {
        if let h = readHandles[segment] { return h }
        let h = try fs.open(joinPath(directory, segment), create: false, writable: false)
        readHandles[segment] = h
        return h
    }

    /// Reads a block's stored bytes and checks them.
    /// - Returns: the raw (canonical) payload.
    public func readRawPayload(_ location: BlockLocation) throws(StorageError) -> [UInt8] {
        let handle = try readHandle(location.segment)
        let stored = try handle.read(at: location.offset + UInt64(BlockHeader.size), count: Int(location.header.storedBytes))
        guard stored.count == Int(location.header.storedBytes) else {
            throw .corrupt(path: joinPath(directory, location.segment), offset: location.offset, reason: "block seq \(location.header.firstSeq)-\(location.header.lastSeq) is truncated")
        }
        switch stored.withUnsafeBytes({ BlockReader.rawPayload(header: location.header, stored: $0) }) {
        case let .success(raw): return raw
        case let .failure(problem):
            throw .corrupt(path: joinPath(directory, location.segment), offset: location.offset,
                           reason: "block seq \(location.header.firstSeq)-\(location.header.lastSeq): \(problem)")
        }
    }

    public func readBlock(_ location: BlockLocation) throws(StorageError) -> DecodedBlock {
        let raw = try readRawPayload(location)
        switch BlockReader.decode(header: location.header, raw: raw) {
        case let .success(block): return block
        case let .failure(problem):
            throw .corrupt(path: joinPath(directory, location.segment), offset: location.offset,
                           reason: "block seq \(location.header.firstSeq)-\(location.header.lastSeq): \(problem)")
        }
    }
}
