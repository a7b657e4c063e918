// The token index file of one segment (FORMAT.md, "Token index (`.tix`, derived)"): for every
// token id named in the segment's first `blockCount` blocks, the events naming it, as offsets from
// the segment's first sequence number. Derived data: it is trusted only when its checksum, its
// header and the chain hash of the last block it covers all match the segment as it is now, and
// every byte is bounds-checked when read, so a damaged file is found and rebuilt, never followed.
import LedgerCrypto
import LedgerModel

/// Why a token index file was not used (it is then rebuilt from the segment).
struct TokenIndexFileProblem: Error, CustomStringConvertible {
    let description: String
    /// The file is whole but covers blocks the reader does not know of yet (written by a process
    /// that saw more of the ledger): not damage, and worth another look later.
    var ahead = false
    init(_ d: String, ahead: Bool = false) { description = d; self.ahead = ahead }
}

/// A `.tix` file's bytes, checked and ready for lookups.
struct TokenIndexImage {
    static let magic: [UInt8] = Array("TLTOKIX1".utf8)
    static let formatVersion: UInt16 = 2
    static let headerSize = 112
    static let bucketBitsMax = 24

    let bytes: [UInt8]
    let hashKey: UInt64
    let segmentFirstSeq: UInt64
    let coveredEvents: UInt64
    let coveredBytes: UInt64
    let blockCount: Int
    let keyCount: Int
    let lastChainHash: Digest32
    let bucketBits: Int
    /// Where the data area starts in `bytes`, and its length.
    let dataStart: Int
    let dataBytes: Int
    /// Where the checkpoint directory (`blockCount` + 1 u64) starts, and the checkpoint data after it.
    let checkpointDirectoryStart: Int
    let checkpointDataStart: Int

    static func fileName(forSegment name: String) -> String { String(name.dropLast(4)) + ".tix" }

    /// The 32-bit tag an id is stored under: the top half of its keyed hash.
    @inline(__always) static func tag(_ hash: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: hash >> 32) }

    static func hash(_ utf8: UnsafeRawBufferPointer, key: UInt64) -> UInt64 { XXH64.hash(utf8, seed: key) }

    static func hash(_ id: String, key: UInt64) -> UInt64 {
        var copy = id
        return copy.withUTF8 { hash(UnsafeRawBufferPointer($0), key: key) }
    }

    /// Parses and checks a file against the blocks of its segment as the ledger has them now.
    /// - Parameter blocks: the segment's blocks, in order (the file must cover a prefix of them).
    init(bytes: [UInt8], segmentFirstSeq expectedFirstSeq: UInt64, blocks: ArraySlice<BlockLocation>) throws(TokenIndexFileProblem) {
        let h = TokenIndexImage.headerSize
        guard bytes.count >= h + 4 + 8 else { throw .init("\(bytes.count) bytes, shorter than a header") }
        let parsed = bytes.withUnsafeBytes { raw -> Result<(UInt64, UInt64, UInt64, UInt64, Int, Int, Digest32, Int, Int, Int), TokenIndexFileProblem> in
            guard Array(raw[0..<8]) == TokenIndexImage.magic else { return .failure(.init("not a token index (magic)")) }
            let version = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
            guard version == TokenIndexImage.formatVersion else { return .failure(.init("format version \(version), this build reads \(TokenIndexImage.formatVersion)")) }
            guard UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 10, as: UInt16.self)) == UInt16(h) else { return .failure(.init("header size")) }
            let stored = get64(raw, raw.count - 8)
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 8)])) == stored else { return .failure(.init("checksum mismatch")) }
            let bits = Int(raw[12])
            guard bits <= TokenIndexImage.bucketBitsMax, raw[13] == 0, raw[14] == 0, raw[15] == 0 else { return .failure(.init("bucket bits")) }
            let key = get64(raw, 16), firstSeq = get64(raw, 24), events = get64(raw, 32), coveredBytes = get64(raw, 40)
            let blockCount = Int(get32(raw, 48)), keyCount = Int(get32(raw, 52))
            let chainHash = Digest32(raw[56..<88])!
            let dataBytes = get64(raw, 88)
            let checkpointBytes = get64(raw, 96)
            guard get64(raw, 104) == 0 else { return .failure(.init("reserved header bytes")) }
            let directoryBytes = ((1 << bits) + 1) * 8
            let checkpointDirectoryBytes = (UInt64(blockCount) + 1) * 8
            guard dataBytes <= UInt64(raw.count), checkpointBytes <= UInt64(raw.count),
                  UInt64(h + directoryBytes) + dataBytes + checkpointDirectoryBytes + checkpointBytes + 8 == UInt64(raw.count) else {
                return .failure(.init("sizes do not add up to the file's \(raw.count) bytes"))
            }
            // The checkpoint directory: record starts, non-decreasing from 0 to the checkpoint size.
            let cpDirectory = h + directoryBytes + Int(dataBytes)
            var previousRecord: UInt64 = 0
            for b in 0...blockCount {
                let start = get64(raw, cpDirectory + b * 8)
                guard start >= previousRecord, start <= checkpointBytes, b > 0 || start == 0 else { return .failure(.init("checkpoint directory entry \(b)")) }
                previousRecord = start
            }
            guard previousRecord == checkpointBytes else { return .failure(.init("checkpoint directory does not end at the checkpoint size")) }
            // The directory: bucket starts, non-decreasing from 0 to the data size.
            var previous: UInt64 = 0
            for b in 0...(1 << bits) {
                let start = get64(raw, h + b * 8)
                guard start >= previous, start <= dataBytes, b > 0 || start == 0 else { return .failure(.init("bucket directory entry \(b)")) }
                previous = start
            }
            guard previous == dataBytes else { return .failure(.init("bucket directory does not end at the data size")) }
            return .success((key, firstSeq, events, coveredBytes, blockCount, keyCount, chainHash, bits, Int(dataBytes), cpDirectory))
        }
        let (key, firstSeq, events, coveredBytes, blockCount, keyCount, chainHash, bits, dataBytes, cpDirectory): (UInt64, UInt64, UInt64, UInt64, Int, Int, Digest32, Int, Int, Int)
        switch parsed {
        case let .success(v): (key, firstSeq, events, coveredBytes, blockCount, keyCount, chainHash, bits, dataBytes, cpDirectory) = v
        case let .failure(p): throw p
        }
        guard firstSeq == expectedFirstSeq else { throw .init("describes the segment starting at seq \(firstSeq)") }
        // Stale unless it covers a prefix of the blocks the ledger has now, ending at the same
        // block with the same chain hash (which pins every byte before it).
        guard blockCount >= 1 else { throw .init("covers no block") }
        guard blockCount <= blocks.count else { throw .init("covers \(blockCount) blocks, \(blocks.count) known", ahead: true) }
        let last = blocks[blocks.startIndex + blockCount - 1]
        guard last.header.chainHash == chainHash, last.offset + UInt64(last.header.totalBytes) == coveredBytes,
              last.header.lastSeq - firstSeq + 1 == events else {
            throw .init("stale: its last block (seq \(firstSeq + events - 1), byte \(coveredBytes)) is not the segment's")
        }
        self.bytes = bytes
        self.hashKey = key
        self.segmentFirstSeq = firstSeq
        self.coveredEvents = events
        self.coveredBytes = coveredBytes
        self.blockCount = blockCount
        self.keyCount = keyCount
        self.lastChainHash = chainHash
        self.bucketBits = bits
        self.dataStart = h + ((1 << bits) + 1) * 8
        self.dataBytes = dataBytes
        self.checkpointDirectoryStart = cpDirectory
        self.checkpointDataStart = cpDirectory + (blockCount + 1) * 8
    }

    /// Block `b`'s (from the segment's first) checkpoint record: the bytes
    /// `BlockPayloadDecoder.tokenKeys(_:checkpointEvery:hash:)` gave, unchecked (the decoder
    /// checks it against the payload). Empty for a block past the file.
    func checkpoints(block b: Int) -> ArraySlice<UInt8> {
        guard b >= 0, b < blockCount else { return [] }
        return bytes.withUnsafeBytes { raw in
            let start = Int(get64(raw, checkpointDirectoryStart + b * 8)), end = Int(get64(raw, checkpointDirectoryStart + b * 8 + 8))
            return bytes[(checkpointDataStart + start)..<(checkpointDataStart + end)]
        }
    }

    /// The directory's range of bucket `b` in `bytes` (checked on load to lie in the data area).
    @inline(__always) private func bucketRange(_ raw: UnsafeRawBufferPointer, _ b: Int) -> (Int, Int) {
        let directory = TokenIndexImage.headerSize + b * 8
        return (dataStart + Int(get64(raw, directory)), dataStart + Int(get64(raw, directory + 8)))
    }

    /// Reads one entry's head (tag delta and postings length) and moves past it.
    @inline(__always) private func entryHead(_ c: inout ByteCursor, first: Bool) -> (delta: UInt64, length: Int)? {
        guard let delta = c.varint(), first || delta >= 1, let length = c.varint(), length <= UInt64(c.remaining) else { return nil }
        return (delta, Int(length))
    }

    /// Postings: the first offset, then each gap minus one; every offset below the events covered.
    private func postings(_ raw: UnsafeRawBufferPointer, from start: Int, length: Int, into out: inout [UInt64]) -> Bool {
        var c = ByteCursor(raw, offset: start, end: start + length)
        var previous: UInt64? = nil
        while !c.isAtEnd {
            guard let v = c.varint() else { return false }
            var offset = v
            if let previous {
                let (gap, o1) = v.addingReportingOverflow(1)
                let (sum, o2) = previous.addingReportingOverflow(gap)
                guard !o1, !o2 else { return false }
                offset = sum
            }
            guard offset < coveredEvents else { return false }
            out.append(offset)
            previous = offset
        }
        return true
    }

    /// The event offsets (seq − segment first seq) stored under `tag`, ascending.
    func lookup(_ tag: UInt32) throws(TokenIndexFileProblem) -> [UInt64] {
        var out = [UInt64]()
        let problem = bytes.withUnsafeBytes { raw -> TokenIndexFileProblem? in
            let b = bucketBits == 0 ? 0 : Int(tag >> UInt32(32 - bucketBits))
            let (start, end) = bucketRange(raw, b)
            var c = ByteCursor(raw, offset: start, end: end)
            var current = UInt64(b) << UInt64(32 - bucketBits)
            var first = true
            while !c.isAtEnd {
                guard let (delta, length) = entryHead(&c, first: first) else { return .init("entry at data byte \(c.offset - dataStart) is malformed") }
                first = false
                current &+= delta
                guard current <= UInt64(UInt32.max) else { return .init("tag past 32 bits at data byte \(c.offset - dataStart)") }
                if current > UInt64(tag) { return nil }
                if current == UInt64(tag) {
                    return postings(raw, from: c.offset, length: length, into: &out) ? nil : .init("postings at data byte \(c.offset - dataStart) are malformed")
                }
                c.offset += length
            }
            return nil
        }
        if let problem { throw problem }
        return out
    }

    /// Every (tag, offsets) in the file, for merging it into a larger one.
    func forEachEntry(_ body: (UInt32, [UInt64]) -> Void) throws(TokenIndexFileProblem) {
        let problem = bytes.withUnsafeBytes { raw -> TokenIndexFileProblem? in
            var offsets = [UInt64]()
            for b in 0..<(1 << bucketBits) {
                let (start, end) = bucketRange(raw, b)
                var c = ByteCursor(raw, offset: start, end: end)
                var current = UInt64(b) << UInt64(32 - bucketBits)
                var first = true
                while !c.isAtEnd {
                    guard let (delta, length) = entryHead(&c, first: first) else { return .init("entry at data byte \(c.offset - dataStart) is malformed") }
                    first = false
                    current &+= delta
                    guard current <= UInt64(UInt32.max), bucketBits == 0 || current >> UInt64(32 - bucketBits) == UInt64(b) else {
                        return .init("tag outside its bucket at data byte \(c.offset - dataStart)")
                    }
                    offsets.removeAll(keepingCapacity: true)
                    guard postings(raw, from: c.offset, length: length, into: &offsets) else { return .init("postings at data byte \(c.offset - dataStart) are malformed") }
                    c.offset += length
                    body(UInt32(current), offsets)
                }
            }
            return nil
        }
        if let problem { throw problem }
    }
}

/// Builds a `.tix` image from (tag, event offset) pairs.
struct TokenIndexBuilder {
    var tags: [UInt32] = []
    var offsets: [UInt64] = []

    /// Pairs must come so that, for each tag, offsets ascend (they may repeat: an event naming the
    /// same id twice); tags may come in any order.
    mutating func add(_ tag: UInt32, _ offset: UInt64) {
        tags.append(tag)
        offsets.append(offset)
    }

    var isEmpty: Bool { tags.isEmpty }

    /// Stable LSD radix sort by tag (two 16-bit passes): offsets stay ascending within a tag.
    private func sorted() -> (tags: [UInt32], offsets: [UInt64]) {
        var srcTags = tags, srcOffsets = offsets
        var dstTags = [UInt32](repeating: 0, count: tags.count), dstOffsets = [UInt64](repeating: 0, count: tags.count)
        var counts = [Int](repeating: 0, count: 1 << 16)
        for shift in [UInt32(0), 16] {
            for i in counts.indices { counts[i] = 0 }
            for t in srcTags { counts[Int((t >> shift) & 0xFFFF)] += 1 }
            var sum = 0
            for i in counts.indices { let c = counts[i]; counts[i] = sum; sum += c }
            for i in srcTags.indices {
                let d = Int((srcTags[i] >> shift) & 0xFFFF)
                dstTags[counts[d]] = srcTags[i]
                dstOffsets[counts[d]] = srcOffsets[i]
                counts[d] += 1
            }
            swap(&srcTags, &dstTags)
            swap(&srcOffsets, &dstOffsets)
        }
        return (srcTags, srcOffsets)
    }

    /// The whole file.
    /// - Parameter checkpoints: per covered block, its checkpoint record (may be empty).
    func build(hashKey: UInt64, segmentFirstSeq: UInt64, coveredEvents: UInt64, coveredBytes: UInt64, blockCount: Int, lastChainHash: Digest32,
               checkpoints: [ArraySlice<UInt8>]) -> [UInt8] {
        precondition(checkpoints.count == blockCount)
        let (tags, offsets) = sorted()
        var keyCount = 0
        for i in tags.indices where i == 0 || tags[i] != tags[i - 1] { keyCount += 1 }
        // About 8 ids per bucket: a byte of directory per id, a short scan per lookup.
        var bits = 0
        while bits < TokenIndexImage.bucketBitsMax && (keyCount >> bits) > 8 { bits += 1 }
        let buckets = 1 << bits

        var data = [UInt8]()
        data.reserveCapacity(tags.count * 3 + keyCount * 4)
        var directory = [UInt64](repeating: 0, count: buckets + 1)
        var bucket = 0
        var previousTag: UInt64 = 0
        var i = 0
        var postings = [UInt8]()
        while i < tags.count {
            let tag = tags[i]
            let b = bits == 0 ? 0 : Int(tag >> UInt32(32 - bits))
            while bucket < b { bucket += 1; directory[bucket] = UInt64(data.count); previousTag = UInt64(bucket) << UInt64(32 - bits) }
            postings.removeAll(keepingCapacity: true)
            var last: UInt64? = nil
            while i < tags.count && tags[i] == tag {
                let o = offsets[i]
                if let l = last {
                    if o != l { appendVarint(o - l - 1, to: &postings) }
                } else {
                    appendVarint(o, to: &postings)
                }
                last = o
                i += 1
            }
            appendVarint(UInt64(tag) - previousTag, to: &data)
            appendVarint(UInt64(postings.count), to: &data)
            data.append(contentsOf: postings)
            previousTag = UInt64(tag)
        }
        while bucket < buckets { bucket += 1; directory[bucket] = UInt64(data.count) }

        var out = TokenIndexImage.magic
        out.reserveCapacity(TokenIndexImage.headerSize + directory.count * 8 + data.count + 8)
        out.append(UInt8(truncatingIfNeeded: TokenIndexImage.formatVersion)); out.append(UInt8(TokenIndexImage.formatVersion >> 8))
        out.append(UInt8(TokenIndexImage.headerSize)); out.append(0)
        out.append(UInt8(bits)); out.append(0); out.append(0); out.append(0)
        put64(hashKey, &out)
        put64(segmentFirstSeq, &out)
        put64(coveredEvents, &out)
        put64(coveredBytes, &out)
        put32(UInt32(blockCount), &out)
        put32(UInt32(keyCount), &out)
        out.append(contentsOf: lastChainHash.array)
        put64(UInt64(data.count), &out)
        let checkpointBytes = checkpoints.reduce(0) { $0 + $1.count }
        put64(UInt64(checkpointBytes), &out)
        put64(0, &out)
        for d in directory { put64(d, &out) }
        out.append(contentsOf: data)
        var recordStart: UInt64 = 0
        put64(0, &out)
        for c in checkpoints { recordStart += UInt64(c.count); put64(recordStart, &out) }
        for c in checkpoints { out.append(contentsOf: c) }
        let checksum = out.withUnsafeBytes { XXH64.hash($0) }
        put64(checksum, &out)
        return out
    }
}
