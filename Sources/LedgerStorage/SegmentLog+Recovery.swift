// Opening a log: scan, validate, cut a torn tail, report damage (FORMAT.md, "Recovery").
//
// Decision table, per position in the scan:
//
//   what is found                                   | last block of last segment | anywhere else
//   ------------------------------------------------+----------------------------+------------------------------
//   clean end of file                               | done                       | next segment
//   fewer bytes left than a block header            | torn tail: cut             | damage
//   header unreadable, no valid header after it     | torn tail: cut             | damage up to next segment
//   header unreadable, a valid header after it      | damage (range to it)       | damage (range to it)
//   header valid, payload runs past end of file     | torn tail: cut             | damage
//   header valid, payload checksum mismatch         | torn tail: cut (also when  | damage (the block's range)
//                                                   | only unreadable bytes come |
//                                                   | after it: a zero-filled    |
//                                                   | multi-block commit)        |
//   header valid, sequence gap or overlap           | damage                     | damage
//   segment header unreadable                       | cut if ≤ header size       | damage
//
// Only the last segment can hold a torn tail: the log syncs a segment before it creates the next.
// A cut copies the bytes to DIR/quarantine/ before truncating: nothing is ever deleted unseen.
// Damage makes the log read-only; nothing is cut while any damage is present.
import LedgerCrypto
import LedgerModel

public struct TailCut: Sendable, Equatable, CustomStringConvertible {
    public let segment: String
    public let offset: UInt64
    public let bytes: UInt64
    /// The sequence range of the cut block when its header was readable.
    public let seqRange: ClosedRange<UInt64>?
    /// The first sequence number the cut would have held.
    public let expectedSeq: UInt64
    public let reason: String
    public internal(set) var quarantinePath: String?
    public internal(set) var applied: Bool

    public var description: String {
        let range = seqRange.map { "seq \($0.lowerBound)-\($0.upperBound)" } ?? "from seq \(expectedSeq), header unreadable"
        let action = applied ? "cut" : "found (not cut: opened read-only)"
        return "torn tail \(action): \(bytes) bytes at \(segment) offset \(offset) (\(range)): \(reason)"
            + (quarantinePath.map { "; bytes kept in \($0)" } ?? "")
    }
}

public struct Damage: Sendable, Equatable, CustomStringConvertible {
    public let segment: String
    public let offset: UInt64
    public let firstSeq: UInt64
    /// nil when the end of the damaged range is unknown.
    public let lastSeq: UInt64?
    public let reason: String

    public var description: String {
        let range = lastSeq.map { firstSeq == $0 ? "seq \(firstSeq)" : "seq \(firstSeq)-\($0)" } ?? "seq \(firstSeq) onwards"
        return "damage at \(segment) offset \(offset) (\(range)): \(reason)"
    }
}

public struct RecoveryReport: Sendable, Equatable, CustomStringConvertible {
    public var tailCut: TailCut?
    public var damage: [Damage] = []
    /// Segment index files that were missing or stale and were rebuilt from the segments.
    public var indexesRebuilt: [String] = []

    public var isClean: Bool { tailCut == nil && damage.isEmpty }

    public var description: String {
        var lines = [String]()
        if let tailCut { lines.append(tailCut.description) }
        lines += damage.map(\.description)
        return lines.isEmpty ? "clean" : lines.joined(separator: "\n")
    }
}

extension SegmentLog {
    public static let lockFileName = "LOCK"
    public static let quarantineDirectory = "quarantine"

    /// Opens (creating if needed, unless read-only) the log in `directory` and recovers it.
    /// - Throws: when the directory cannot be used at all; damage does not throw, it makes the
    ///   log read-only and is listed in `recovery`.
    public static func open(directory: String, options: LogOptions = LogOptions(), fileSystem: any FileSystem = PosixFileSystem(),
                            clock: any Clock = SystemClock()) throws(StorageError) -> SegmentLog {
        let log = SegmentLog(directory: directory, options: options, fs: fileSystem, clock: clock)
        if options.readOnly {
            guard fileSystem.fileExists(directory) else { throw .io(operation: "open ledger", path: directory, errno: 2) }
        } else {
            try fileSystem.createDirectory(directory)
            guard let lock = try fileSystem.lock(joinPath(directory, lockFileName)) else { throw .locked(path: directory) }
            log.lockHandle = lock
        }
        try log.recover()
        if options.preallocate && !options.readOnly && log.recovery.damage.isEmpty {
            log.preparer = SegmentPreparer(fs: fileSystem, directory: directory, bytes: options.segmentBytesMax, record: log.preparations)
            log.preparer!.start()
        }
        return log
    }

    func recover() throws(StorageError) {
        let names = try fs.listDirectory(directory)
        let segmentNames = names.filter { SegmentHeader.firstSeq(fromFileName: $0) != nil }.sorted()
        var report = RecoveryReport()
        var expectedSeq: UInt64 = 1
        var previousChain: Digest32? = .zero
        var pendingCut: (segment: String, handle: any FileHandle, offset: UInt64, cut: TailCut)?
        var keptSegments = [String]()
        var lastSegmentSize: UInt64 = 0
        var lastSegmentFileSize: UInt64 = 0
        /// Where the last segment's preallocated zeros begin, if it has any.
        var preallocatedFrom: UInt64?

        for (i, name) in segmentNames.enumerated() {
            let isLast = i == segmentNames.count - 1
            let nameSeq = SegmentHeader.firstSeq(fromFileName: name)!
            let nextSegmentSeq = isLast ? nil : SegmentHeader.firstSeq(fromFileName: segmentNames[i + 1])
            let path = joinPath(directory, name)
            let handle = try fs.open(path, create: false, writable: !options.readOnly)
            let size = try handle.size()
            let headerBytes = try handle.read(at: 0, count: SegmentHeader.size)
            let header = headerBytes.withUnsafeBytes { SegmentHeader.decode($0) }

            guard case let .success(segmentHeader) = header else {
                let problem: String = if case let .failure(p) = header { p.description } else { "" }
                if isLast, size > UInt64(SegmentHeader.size), try allZero(handle, from: 0, to: size) {
                    // A prepared file renamed in by a roll whose commit never became durable:
                    // preallocated space, nothing was ever acknowledged in it.
                    handle.close()
                    if !options.readOnly { try fs.remove(path); try fs.syncDirectory(directory) }
                    continue
                }
                // A torn header followed by nothing, or only by preallocated zeros.
                let onlyZerosAfterIt = size <= UInt64(SegmentHeader.size) ? true : try allZero(handle, from: UInt64(SegmentHeader.size), to: size)
                if isLast && onlyZerosAfterIt {
                    let bytes = try keptBytes(handle, from: 0, count: size)
                    pendingCut = (name, handle, 0, TailCut(segment: name, offset: 0, bytes: bytes, seqRange: nil, expectedSeq: expectedSeq,
                                                            reason: "segment header incomplete (\(problem))", quarantinePath: nil, applied: false))
                } else {
                    report.damage.append(Damage(segment: name, offset: 0, firstSeq: nameSeq, lastSeq: nextSegmentSeq.map { $0 - 1 },
                                                reason: "segment header: \(problem)"))
                    expectedSeq = nextSegmentSeq ?? expectedSeq
                    previousChain = nil
                    keptSegments.append(name)
                }
                continue
            }
            keptSegments.append(name)
            if segmentHeader.firstSeq != nameSeq {
                report.damage.append(Damage(segment: name, offset: 0, firstSeq: nameSeq, lastSeq: nextSegmentSeq.map { $0 - 1 },
                                            reason: "segment header says it starts at seq \(segmentHeader.firstSeq)"))
            }
            if nameSeq > expectedSeq {
                report.damage.append(Damage(segment: name, offset: 0, firstSeq: expectedSeq, lastSeq: nameSeq - 1,
                                            reason: "events missing before this segment (segment file removed?)"))
                expectedSeq = nameSeq
                previousChain = nil
            } else if nameSeq < expectedSeq {
                report.damage.append(Damage(segment: name, offset: 0, firstSeq: nameSeq, lastSeq: expectedSeq - 1,
                                            reason: "segment overlaps the one before it"))
            }
            if let previousChain, previousChain != segmentHeader.previousChainHash {
                report.damage.append(Damage(segment: name, offset: 0, firstSeq: nameSeq, lastSeq: nil,
                                            reason: "segment's previous chain hash does not match the block before it"))
            }

            var locations: [BlockLocation]? = nil
            if !isLast, let indexed = readIndex(segment: name, size: size), indexed.first?.header.firstSeq == nameSeq,
               try lastHeaderMatches(indexed.last!, handle: handle) {
                locations = indexed
            }
            if let locations {
                blocks += locations
                expectedSeq = locations.last!.header.lastSeq + 1
                previousChain = locations.last!.header.chainHash
            } else {
                let scan = try scanSegment(handle: handle, name: name, size: size, checkPayloads: isLast, isLast: isLast,
                                           expectedSeq: &expectedSeq, previousChain: &previousChain, report: &report)
                blocks += scan.locations
                if !isLast && !options.readOnly && scan.clean && (try? writeIndex(segment: name, size: size, blocks: scan.locations)) != nil {
                    report.indexesRebuilt.append(name)
                }
                if let cut = scan.cut { pendingCut = (name, handle, cut.offset, cut) }
                if let zeros = scan.preallocatedFrom { preallocatedFrom = zeros }
            }
            if isLast { lastSegmentSize = preallocatedFrom ?? size; lastSegmentFileSize = size }
            if isLast && !options.readOnly { activeHandle = handle } else { handle.close() }
        }

        if var cut = pendingCut {
            if report.damage.isEmpty && !options.readOnly {
                try applyCut(&cut.cut, handle: cut.handle)
                if cut.offset == 0 {
                    keptSegments.removeAll { $0 == cut.segment }
                    activeHandle = nil
                    lastSegmentSize = 0
                } else {
                    lastSegmentSize = cut.offset
                }
            }
            report.tailCut = cut.cut
        }
        segments = keptSegments
        if let last = blocks.last {
            lastSeq = last.header.lastSeq
            chainHash = last.header.chainHash
        } else if let first = keptSegments.first, let seq = SegmentHeader.firstSeq(fromFileName: first), seq > 1 {
            lastSeq = seq - 1
        }
        if activeHandle != nil {
            activeSize = lastSegmentSize
            activeAllocated = preallocatedFrom != nil && pendingCut == nil ? lastSegmentFileSize : 0
        }
        if !keptSegments.isEmpty && blocks.isEmpty && activeHandle != nil && report.damage.isEmpty {
            // An empty active segment carries the chain hash of what came before it.
            let header = try activeHandle!.read(at: 0, count: SegmentHeader.size)
            if case let .success(h) = header.withUnsafeBytes({ SegmentHeader.decode($0) }) { chainHash = h.previousChainHash }
        }
        recovery = report
    }

    struct ScanResult {
        var locations: [BlockLocation] = []
        var cut: TailCut?
        var clean = true
        /// The last segment's data ends here and only zeros follow (preallocated space).
        var preallocatedFrom: UInt64?
    }

    /// Walks a segment's blocks from the header on. Damage goes into `report`; a torn tail is
    /// returned (only ever for the last segment) so the caller decides whether to cut.
    func scanSegment(handle: any FileHandle, name: String, size: UInt64, checkPayloads: Bool, isLast: Bool,
                     expectedSeq: inout UInt64, previousChain: inout Digest32?, report: inout RecoveryReport) throws(StorageError) -> ScanResult {
        var result = ScanResult()
        var offset = UInt64(SegmentHeader.size)
        func tail(_ bytes: UInt64, _ range: ClosedRange<UInt64>?, _ reason: String) throws(StorageError) {
            let kept = try keptBytes(handle, from: offset, count: bytes)
            result.cut = TailCut(segment: name, offset: offset, bytes: kept, seqRange: range, expectedSeq: expectedSeq,
                                 reason: reason, quarantinePath: nil, applied: false)
        }
        func damage(_ first: UInt64, _ last: UInt64?, _ reason: String) {
            report.damage.append(Damage(segment: name, offset: offset, firstSeq: first, lastSeq: last, reason: reason))
            result.clean = false
        }
        while offset < size {
            let remaining = size - offset
            // No block header is all zeros: where one would start, a last segment with only
            // zeros left ends in preallocated space, not in a torn write.
            func zerosFromHere() throws(StorageError) -> Bool {
                guard isLast, try allZero(handle, from: offset, to: size) else { return false }
                result.preallocatedFrom = offset
                return true
            }
            if remaining < UInt64(BlockHeader.size) {
                if try zerosFromHere() { break }
                if isLast { try tail(remaining, nil, "\(remaining) bytes, less than a block header") } else { damage(expectedSeq, nil, "\(remaining) stray bytes at the end of a sealed segment") }
                break
            }
            let headerBytes = try handle.read(at: offset, count: BlockHeader.size)
            switch headerBytes.withUnsafeBytes({ BlockHeader.decode($0) }) {
            case let .failure(problem):
                if try zerosFromHere() { return result }
                if let (nextOffset, next) = try resync(handle: handle, from: offset + 1, size: size) {
                    damage(expectedSeq, next.firstSeq > expectedSeq ? next.firstSeq - 1 : nil, problem.description)
                    offset = nextOffset
                    expectedSeq = next.firstSeq
                    previousChain = nil
                    continue
                }
                if isLast { try tail(remaining, nil, problem.description) } else { damage(expectedSeq, nil, problem.description) }
                return result
            case let .success(header):
                let end = offset + UInt64(header.totalBytes)
                if end > size {
                    if isLast { try tail(remaining, header.seqRange, "block runs \(end - size) bytes past the end of the file") }
                    else { damage(header.firstSeq, header.lastSeq, "block runs past the end of the segment") }
                    return result
                }
                if header.firstSeq != expectedSeq {
                    if header.firstSeq > expectedSeq {
                        damage(expectedSeq, header.firstSeq - 1, "events missing: block starts at seq \(header.firstSeq), expected \(expectedSeq)")
                    } else {
                        damage(header.firstSeq, header.lastSeq, "block repeats or reorders seq \(header.firstSeq), expected \(expectedSeq)")
                    }
                    previousChain = nil
                }
                if checkPayloads {
                    let stored = try handle.read(at: offset + UInt64(BlockHeader.size), count: Int(header.storedBytes))
                    if stored.withUnsafeBytes({ XXH64.hash($0) }) != header.payloadChecksum {
                        // Nothing valid after it: the torn end of the last commit, whose later
                        // blocks (if any) read back as zeros or garbage after a power loss.
                        if isLast, try resync(handle: handle, from: end, size: size) == nil {
                            try tail(remaining, header.seqRange, "payload checksum mismatch with no valid block after it")
                            return result
                        }
                        damage(header.firstSeq, header.lastSeq, "payload checksum mismatch")
                        offset = end
                        expectedSeq = header.lastSeq + 1
                        previousChain = nil
                        continue
                    }
                }
                result.locations.append(BlockLocation(segment: name, offset: offset, header: header))
                expectedSeq = header.lastSeq + 1
                previousChain = header.chainHash
                offset = end
            }
        }
        return result
    }

    /// An index that parses and has the segment's size may still be stale (written for blocks a
    /// failed commit rolled back, then rewritten with others of the same size). The last block's
    /// chain hash commits to everything before it, so one header read settles it.
    func lastHeaderMatches(_ location: BlockLocation, handle: any FileHandle) throws(StorageError) -> Bool {
        let bytes = try handle.read(at: location.offset, count: BlockHeader.size)
        guard case let .success(header) = bytes.withUnsafeBytes({ BlockHeader.decode($0) }) else { return false }
        return header == location.header
    }

    func resync(handle: any FileHandle, from: UInt64, size: UInt64) throws(StorageError) -> (UInt64, BlockHeader)? {
        try findNextBlockHeader(handle, from: from, size: size, requireWholeBlock: true)
    }

    func applyCut(_ cut: inout TailCut, handle: any FileHandle) throws(StorageError) {
        let quarantine = joinPath(directory, SegmentLog.quarantineDirectory)
        try fs.createDirectory(quarantine)
        let bytes = try handle.read(at: cut.offset, count: Int(cut.bytes))
        // A tail cut again at the same offset (after another crash) must not overwrite the last copy.
        var path = joinPath(quarantine, "\(cut.segment)@\(cut.offset).torn")
        var copies = 1
        while fs.fileExists(path) {
            path = joinPath(quarantine, "\(cut.segment)@\(cut.offset).\(copies).torn")
            copies += 1
        }
        let copy = try fs.open(path, create: true, writable: true)
        try copy.truncate(to: 0)
        try copy.write(at: 0, bytes)
        try copy.sync()
        copy.close()
        try fs.syncDirectory(quarantine)
        if cut.offset == 0 {
            handle.close()
            try fs.remove(handle.path)
        } else {
            try handle.truncate(to: cut.offset)
            try handle.sync()
        }
        try fs.syncDirectory(directory)
        cut.quarantinePath = path
        cut.applied = true
    }
}
