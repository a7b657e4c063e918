// Per-segment index files (FORMAT.md, "Index"): the headers of a sealed segment's blocks with
// their offsets, so opening a large ledger reads one small file per segment instead of seeking
// through every block. Always derived data: a missing, stale or damaged index is rebuilt from the
// segment and never trusted over it.
import LedgerCrypto
import LedgerModel

extension SegmentLog {
    static let indexMagic: [UInt8] = Array("TLINDEX1".utf8)

    static func indexName(forSegment name: String) -> String { String(name.dropLast(4)) + ".idx" }

    func writeIndex(segment: String, size: UInt64, blocks: [BlockLocation]) throws(StorageError) {
        var out = SegmentLog.indexMagic
        put32(UInt32(blocks.count), &out)
        put32(0, &out)
        put64(size, &out)
        for b in blocks {
            put64(b.offset, &out)
            b.header.encode(into: &out)
        }
        let checksum = out.withUnsafeBytes { XXH64.hash($0) }
        put64(checksum, &out)
        let path = joinPath(directory, SegmentLog.indexName(forSegment: segment))
        let temporary = path + ".tmp"
        let handle = try fs.open(temporary, create: true, writable: true)
        try handle.truncate(to: 0)
        try handle.write(at: 0, out)
        try handle.sync()
        handle.close()
        try fs.rename(temporary, to: path)
    }

    /// - Returns: nil when the index is missing, damaged, or does not describe a segment of `size` bytes.
    func readIndex(segment: String, size: UInt64) -> [BlockLocation]? {
        let path = joinPath(directory, SegmentLog.indexName(forSegment: segment))
        guard fs.fileExists(path), let handle = try? fs.open(path, create: false, writable: false),
              let length = try? handle.size(), length >= 32, length < 1 << 30,
              let bytes = try? handle.read(at: 0, count: Int(length)) else { return nil }
        handle.close()
        return bytes.withUnsafeBytes { raw -> [BlockLocation]? in
            guard Array(raw[0..<8]) == SegmentLog.indexMagic,
                  XXH64.hash(UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 8)])) == get64(raw, raw.count - 8),
                  get64(raw, 16) == size else { return nil }
            let count = Int(get32(raw, 8))
            let entrySize = 8 + BlockHeader.size
            guard raw.count == 24 + count * entrySize + 8 else { return nil }
            var locations = [BlockLocation]()
            var expectedOffset = UInt64(SegmentHeader.size)
            for i in 0..<count {
                let at = 24 + i * entrySize
                let offset = get64(raw, at)
                guard offset == expectedOffset,
                      case let .success(h) = BlockHeader.decode(UnsafeRawBufferPointer(rebasing: raw[(at + 8)..<(at + entrySize)])) else { return nil }
                if let previous = locations.last, previous.header.lastSeq + 1 != h.firstSeq { return nil }
                locations.append(BlockLocation(segment: segment, offset: offset, header: h))
                expectedOffset = offset + UInt64(h.totalBytes)
            }
            guard expectedOffset == size, !locations.isEmpty else { return nil }
            return locations
        }
    }
}
