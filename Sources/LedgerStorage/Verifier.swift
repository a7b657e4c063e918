// Full verification: every segment header, block header, payload checksum, decompression and
// chain hash, read from the files (never from the index). Chain hashes are checked in parallel:
// block k's hash is recomputed from the hash block k-1's header claims, and that claim is itself
// checked when block k-1 is, so a batch of blocks can be hashed on every core at once.
import Dispatch
import LedgerCrypto
import LedgerModel

public struct VerifyProblem: Sendable, Equatable, CustomStringConvertible {
    public let segment: String
    public let offset: UInt64
    public let firstSeq: UInt64
    public let lastSeq: UInt64?
    public let reason: String

    public var description: String {
        let range = lastSeq.map { $0 == firstSeq ? "seq \(firstSeq)" : "seq \(firstSeq)-\($0)" } ?? "seq \(firstSeq) onwards"
        return "bad block: \(range) in \(segment) at byte offset \(offset): \(reason)"
    }
}

public struct VerifyReport: Sendable {
    public var blocks = 0
    public var events: UInt64 = 0
    public var storedBytes: UInt64 = 0
    public var rawBytes: UInt64 = 0
    public var lastSeq: UInt64 = 0
    public var chainHash: Digest32 = .zero
    /// Chain hash after every block, by last sequence number (filled only when asked for).
    public var problem: VerifyProblem?
    /// Bytes after the last complete block of the last segment (a torn tail recovery would cut).
    public var tornTailBytes: UInt64 = 0
    public var ok: Bool { problem == nil }
}

public struct Verifier {
    public let directory: String
    public let fs: any FileSystem
    /// Also decode every payload (structure, counts, time ranges), not only hash it.
    public var decodePayloads = false
    /// Stop after the block that ends at this sequence number (digest checks).
    public var stopAtSeq: UInt64?
    /// Called with (bytes verified, total bytes) now and then.
    public var progress: ((UInt64, UInt64) -> Void)?

    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fs = fileSystem
    }

    /// One block to check. The payload is read by the worker that checks it, so both cores
    /// read, decompress and hash while the calling thread only walks headers.
    struct Item {
        var segment: String
        var handle: any FileHandle
        var offset: UInt64
        var header: BlockHeader
        var previous: Digest32
    }

    public func run() throws(StorageError) -> VerifyReport {
        var report = VerifyReport()
        let names = try fs.listDirectory(directory).filter { SegmentHeader.firstSeq(fromFileName: $0) != nil }.sorted()
        var totalBytes: UInt64 = 0
        var sizes = [UInt64]()
        for name in names {
            let h = try fs.open(joinPath(directory, name), create: false, writable: false)
            let s = try h.size()
            h.close()
            sizes.append(s)
            totalBytes += s
        }
        var doneBytes: UInt64 = 0
        var expectedSeq: UInt64 = 1
        var previous = Digest32.zero
        var batch = [Item]()
        var batchBytes = 0
        let batchBytesMax = 32 << 20

        func fail(_ segment: String, _ offset: UInt64, _ first: UInt64, _ last: UInt64?, _ reason: String) -> VerifyReport {
            var r = report
            r.problem = VerifyProblem(segment: segment, offset: offset, firstSeq: first, lastSeq: last, reason: reason)
            return r
        }

        func flush() -> VerifyProblem? {
            defer { batch.removeAll(keepingCapacity: true); batchBytes = 0 }
            var problems = [VerifyProblem?](repeating: nil, count: batch.count)
            let decode = decodePayloads
            batch.withUnsafeBufferPointer { itemsBuffer in
                problems.withUnsafeMutableBufferPointer { out in
                    // Each iteration writes only its own slot.
                    nonisolated(unsafe) let outBase = out.baseAddress!
                    nonisolated(unsafe) let items = itemsBuffer
                    DispatchQueue.concurrentPerform(iterations: items.count) { i in
                        outBase[i] = Verifier.check(items[i], decode: decode)
                    }
                }
            }
            for (i, p) in problems.enumerated() {
                if let p { return p }
                let item = batch[i]
                report.blocks += 1
                report.events += UInt64(item.header.eventCount)
                report.storedBytes += UInt64(item.header.totalBytes)
                report.rawBytes += UInt64(item.header.rawBytes)
                report.lastSeq = item.header.lastSeq
                report.chainHash = item.header.chainHash
            }
            return nil
        }

        segments: for (index, name) in names.enumerated() {
            let isLast = index == names.count - 1
            let handle = try fs.open(joinPath(directory, name), create: false, writable: false)
            defer { handle.close() }
            let size = sizes[index]
            let nameSeq = SegmentHeader.firstSeq(fromFileName: name)!
            let nextSeq = isLast ? nil : SegmentHeader.firstSeq(fromFileName: names[index + 1]).map { $0 - 1 }
            // Blocks still waiting in the batch come earlier in the log: their problems first.
            if let p = flush() { return fail(p.segment, p.offset, p.firstSeq, p.lastSeq, p.reason) }
            if let stop = stopAtSeq, expectedSeq > stop { break }
            if isLast && (size < UInt64(SegmentHeader.size)
                || (size > UInt64(SegmentHeader.size) && (try? allZero(handle, from: UInt64(SegmentHeader.size), to: size)) == true
                    && segmentHeaderIsTorn(handle))) {
                // A segment created by an append that died before its header was fully written:
                // a torn tail that recovery removes, like a short last block.
                report.tornTailBytes = size
                break
            }
            let segmentHeaderBytes = try handle.read(at: 0, count: SegmentHeader.size)
            let segmentHeader: SegmentHeader
            switch segmentHeaderBytes.withUnsafeBytes({ SegmentHeader.decode($0) }) {
            case .failure where isLast && (try? allZero(handle, from: 0, to: size)) == true:
                // A prepared segment renamed in by a roll that never became durable (FORMAT.md,
                // "Preallocated space"): recovery removes it; nothing was acknowledged in it.
                break segments
            case let .failure(p): return fail(name, 0, nameSeq, nextSeq, "segment header: \(p)")
            case let .success(h): segmentHeader = h
            }
            if nameSeq > expectedSeq {
                // The range that is missing, not the range of the segment after the gap.
                return fail(name, 0, expectedSeq, nameSeq - 1, "events \(expectedSeq)-\(nameSeq - 1) are missing (segment removed?)")
            }
            if nameSeq != expectedSeq || segmentHeader.firstSeq != nameSeq {
                return fail(name, 0, min(expectedSeq, nameSeq), nextSeq, "segment starts at seq \(segmentHeader.firstSeq), expected \(expectedSeq)")
            }
            if segmentHeader.previousChainHash != previous {
                return fail(name, 0, nameSeq, nextSeq, "segment's previous chain hash does not match the end of the segment before it")
            }
            var offset = UInt64(SegmentHeader.size)
            blocks: while offset < size {
                if let stop = stopAtSeq, expectedSeq > stop { break }
                let remaining = size - offset
                // Only zeros left in the last segment: preallocated space, the end of the data.
                func zerosFromHere() -> Bool { isLast && (try? allZero(handle, from: offset, to: size)) == true }
                if remaining < UInt64(BlockHeader.size) {
                    if zerosFromHere() { break }
                    if isLast { report.tornTailBytes = remaining; break }
                    if let p2 = flush() { return fail(p2.segment, p2.offset, p2.firstSeq, p2.lastSeq, p2.reason) }
                    return fail(name, offset, expectedSeq, nextSeq, "\(remaining) stray bytes after the last block")
                }
                let headerBytes = try handle.read(at: offset, count: BlockHeader.size)
                let header: BlockHeader
                switch headerBytes.withUnsafeBytes({ BlockHeader.decode($0) }) {
                case .failure where zerosFromHere():
                    break blocks
                case let .failure(p):
                    if let p2 = flush() { return fail(p2.segment, p2.offset, p2.firstSeq, p2.lastSeq, p2.reason) }
                    var last = nextSeq
                    if let next = try? resyncRange(handle, from: offset + 1, size: size), next > expectedSeq { last = next - 1 }
                    return fail(name, offset, expectedSeq, last, p.description)
                case let .success(h): header = h
                }
                if offset + UInt64(header.totalBytes) > size {
                    if isLast { report.tornTailBytes = remaining; break }
                    if let p2 = flush() { return fail(p2.segment, p2.offset, p2.firstSeq, p2.lastSeq, p2.reason) }
                    return fail(name, offset, header.firstSeq, header.lastSeq, "block runs past the end of the segment")
                }
                if header.firstSeq != expectedSeq {
                    if let p2 = flush() { return fail(p2.segment, p2.offset, p2.firstSeq, p2.lastSeq, p2.reason) }
                    return fail(name, offset, header.firstSeq, header.lastSeq, "block starts at seq \(header.firstSeq), expected \(expectedSeq) (events removed or reordered)")
                }
                batch.append(Item(segment: name, handle: handle, offset: offset, header: header, previous: previous))
                batchBytes += Int(header.storedBytes)
                previous = header.chainHash
                expectedSeq = header.lastSeq + 1
                offset += UInt64(header.totalBytes)
                doneBytes += UInt64(header.totalBytes)
                if batchBytes >= batchBytesMax || batch.count >= 256 {
                    if let p = flush() { return fail(p.segment, p.offset, p.firstSeq, p.lastSeq, p.reason) }
                    progress?(doneBytes, totalBytes)
                }
            }
            doneBytes += UInt64(SegmentHeader.size)
            // Items hold this segment's handle, which closes when this iteration ends.
            if let p = flush() { return fail(p.segment, p.offset, p.firstSeq, p.lastSeq, p.reason) }
        }
        if let p = flush() { return fail(p.segment, p.offset, p.firstSeq, p.lastSeq, p.reason) }
        progress?(totalBytes, totalBytes)
        return report
    }

    static func check(_ item: Item, decode: Bool) -> VerifyProblem? {
        let h = item.header
        func problem(_ reason: String) -> VerifyProblem {
            VerifyProblem(segment: item.segment, offset: item.offset, firstSeq: h.firstSeq, lastSeq: h.lastSeq, reason: reason)
        }
        let stored: [UInt8]
        do { stored = try item.handle.read(at: item.offset + UInt64(BlockHeader.size), count: Int(h.storedBytes)) } catch {
            return problem("cannot read the payload: \(error)")
        }
        guard stored.count == Int(h.storedBytes) else { return problem("payload truncated") }
        let raw: [UInt8]
        switch stored.withUnsafeBytes({ BlockReader.rawPayload(header: h, stored: $0) }) {
        case let .failure(p): return problem(p.description)
        case let .success(r): raw = r
        }
        let hasher = SHA256Hasher()
        let computed = raw.withUnsafeBytes { computeChainHash(previous: item.previous, header: h, rawPayload: $0, hasher: hasher) }
        guard computed == h.chainHash else { return problem("chain hash mismatch (content changed, or a block before it was removed)") }
        if decode, case let .failure(p) = BlockReader.decode(header: h, raw: raw) { return problem(p.description) }
        return nil
    }

    func resyncRange(_ handle: any FileHandle, from: UInt64, size: UInt64) throws(StorageError) -> UInt64? {
        try findNextBlockHeader(handle, from: from, size: size, requireWholeBlock: false)?.1.firstSeq
    }
}

/// Whether a segment's header does not decode (written in part, or not at all).
private func segmentHeaderIsTorn(_ handle: any FileHandle) -> Bool {
    guard let bytes = try? handle.read(at: 0, count: SegmentHeader.size) else { return true }
    if case .success = bytes.withUnsafeBytes({ SegmentHeader.decode($0) }) { return false }
    return true
}
