import LedgerCrypto
import LedgerModel

/// The fixed 128-byte header in front of every block's stored payload (FORMAT.md, "Block").
public struct BlockHeader: Equatable, Sendable {
    public static let size = 128
    public static let magic: UInt32 = 0x4B42_4C54 // "TLBK" in file order
    public static let formatVersion: UInt16 = 1

    public enum Codec: UInt8, Sendable { case none = 0, lz4 = 1 }

    public var formatVersion: UInt16 = BlockHeader.formatVersion
    public var codec: Codec
    public var firstSeq: UInt64
    public var eventCount: UInt32
    public var storedBytes: UInt32
    public var rawBytes: UInt32
    public var minTs: Int64
    public var maxTs: Int64
    public var receivedAt: Int64
    public var payloadChecksum: UInt64
    public var chainHash: Digest32

    public var lastSeq: UInt64 { firstSeq + UInt64(eventCount) - 1 }
    public var totalBytes: Int { BlockHeader.size + Int(storedBytes) }
    public var seqRange: ClosedRange<UInt64> { firstSeq...lastSeq }

    public init(codec: Codec, firstSeq: UInt64, eventCount: UInt32, storedBytes: UInt32, rawBytes: UInt32,
                minTs: Int64, maxTs: Int64, receivedAt: Int64, payloadChecksum: UInt64, chainHash: Digest32) {
        self.codec = codec; self.firstSeq = firstSeq; self.eventCount = eventCount; self.storedBytes = storedBytes
        self.rawBytes = rawBytes; self.minTs = minTs; self.maxTs = maxTs; self.receivedAt = receivedAt
        self.payloadChecksum = payloadChecksum; self.chainHash = chainHash
    }

    public func encode(into out: inout [UInt8]) {
        let start = out.count
        out.reserveCapacity(start + BlockHeader.size)
        put32(BlockHeader.magic, &out)
        put16(formatVersion, &out)
        out.append(codec.rawValue)
        out.append(0) // flags
        put64(firstSeq, &out)
        put32(eventCount, &out)
        put32(storedBytes, &out)
        put32(rawBytes, &out)
        put32(0, &out) // reserved
        put64(UInt64(bitPattern: minTs), &out)
        put64(UInt64(bitPattern: maxTs), &out)
        put64(UInt64(bitPattern: receivedAt), &out)
        put64(payloadChecksum, &out)
        out.append(contentsOf: chainHash.array)
        out.append(contentsOf: [UInt8](repeating: 0, count: 24)) // reserved
        let checksum = out.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[start..<(start + 120)])) }
        put64(checksum, &out)
    }

    /// The header fields the chain hash covers: the content, not how it is stored (codec,
    /// stored size and payload checksum may change without changing history).
    func canonicalFields() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(48)
        put32(BlockHeader.magic, &out)
        put16(formatVersion, &out)
        put16(0, &out)
        put64(firstSeq, &out)
        put32(eventCount, &out)
        put32(rawBytes, &out)
        put64(UInt64(bitPattern: minTs), &out)
        put64(UInt64(bitPattern: maxTs), &out)
        put64(UInt64(bitPattern: receivedAt), &out)
        return out
    }

    /// Parses and checks a header.
    /// - Returns: the header, or the reason it is not a valid one.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<BlockHeader, HeaderProblem> {
        guard bytes.count >= size else { return .failure(.truncated) }
        guard get32(bytes, 0) == magic else { return .failure(.badMagic) }
        let checksum = XXH64.hash(UnsafeRawBufferPointer(rebasing: bytes[0..<120]))
        guard checksum == get64(bytes, 120) else { return .failure(.badChecksum) }
        let version = get16(bytes, 4)
        guard version == formatVersion else { return .failure(.unsupportedVersion(version)) }
        guard let codec = Codec(rawValue: bytes[6]) else { return .failure(.invalid("unknown codec \(bytes[6])")) }
        var h = BlockHeader(codec: codec, firstSeq: get64(bytes, 8), eventCount: get32(bytes, 16), storedBytes: get32(bytes, 20),
                            rawBytes: get32(bytes, 24), minTs: Int64(bitPattern: get64(bytes, 32)),
                            maxTs: Int64(bitPattern: get64(bytes, 40)), receivedAt: Int64(bitPattern: get64(bytes, 48)),
                            payloadChecksum: get64(bytes, 56), chainHash: Digest32(UnsafeRawBufferPointer(rebasing: bytes[64..<96]))!)
        h.formatVersion = version
        guard h.eventCount > 0, h.firstSeq > 0, h.firstSeq <= UInt64.max - UInt64(h.eventCount) else {
            return .failure(.invalid("bad sequence range"))
        }
        guard h.eventCount <= UInt32(BlockPayloadDecoder.eventsMax), h.rawBytes <= UInt32(BlockLimits.rawBytesMax),
              h.storedBytes <= UInt32(LZ4.compressBound(BlockLimits.rawBytesMax)) else {
            return .failure(.invalid("sizes beyond the format's limits"))
        }
        return .success(h)
    }

    public enum HeaderProblem: Error, Equatable, Sendable, CustomStringConvertible {
        case truncated, badMagic, badChecksum, unsupportedVersion(UInt16), invalid(String)
        public var description: String {
            switch self {
            case .truncated: "block header truncated"
            case .badMagic: "no block header magic"
            case .badChecksum: "block header checksum mismatch"
            case let .unsupportedVersion(v): "unsupported block format version \(v)"
            case let .invalid(reason): "invalid block header: \(reason)"
            }
        }
    }
}

public enum BlockLimits {
    /// Largest uncompressed payload a block may have (also bounds what a reader allocates).
    public static let rawBytesMax = 64 << 20
}

/// Finds the first offset at or after `from` where a valid block header starts: how recovery and
/// verify find where damage ends (the magic is a hint; only a header checksum makes it a header).
/// - Parameter requireWholeBlock: also require the block's payload to end within the file.
/// - Returns: nil when no valid header follows.
func findNextBlockHeader(_ handle: any FileHandle, from: UInt64, size: UInt64,
                         requireWholeBlock: Bool) throws(StorageError) -> (UInt64, BlockHeader)? {
    guard from < size else { return nil }
    let rest = try handle.read(at: from, count: Int(size - from))
    return rest.withUnsafeBytes { raw -> (UInt64, BlockHeader)? in
        var i = 0
        while i + BlockHeader.size <= raw.count {
            if raw[i] == 0x54 && raw[i + 1] == 0x4C && raw[i + 2] == 0x42 && raw[i + 3] == 0x4B,
               case let .success(h) = BlockHeader.decode(UnsafeRawBufferPointer(rebasing: raw[i..<(i + BlockHeader.size)])),
               !requireWholeBlock || i + h.totalBytes <= raw.count {
                return (from + UInt64(i), h)
            }
            i += 1
        }
        return nil
    }
}

/// Chain hash of a block: SHA-256(previous chain hash ‖ canonical header fields ‖ raw payload).
public func computeChainHash(previous: Digest32, header: BlockHeader, rawPayload: UnsafeRawBufferPointer, hasher: SHA256Hasher) -> Digest32 {
    var prev = previous
    withUnsafeBytes(of: &prev.bytes) { hasher.update($0) }
    hasher.update(header.canonicalFields())
    hasher.update(rawPayload)
    return hasher.finalize()
}

@inline(__always) func put16(_ v: UInt16, _ out: inout [UInt8]) {
    out.append(UInt8(truncatingIfNeeded: v)); out.append(UInt8(truncatingIfNeeded: v >> 8))
}
@inline(__always) func put32(_ v: UInt32, _ out: inout [UInt8]) {
    for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
}
@inline(__always) func put64(_ v: UInt64, _ out: inout [UInt8]) {
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
}
@inline(__always) func get16(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
@inline(__always) func get32(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt32 { UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
@inline(__always) func get64(_ b: UnsafeRawBufferPointer, _ o: Int) -> UInt64 { UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }

/// The 128-byte header at the start of every segment file (FORMAT.md, "Segment").
public struct SegmentHeader: Equatable, Sendable {
    public static let size = 128
    public static let magic: [UInt8] = Array("TLSEGMNT".utf8)
    public static let formatVersion: UInt16 = 1

    public var firstSeq: UInt64
    /// Chain hash of the last block before this segment (all zero for the first segment).
    public var previousChainHash: Digest32

    public init(firstSeq: UInt64, previousChainHash: Digest32) {
        self.firstSeq = firstSeq; self.previousChainHash = previousChainHash
    }

    public func encode() -> [UInt8] {
        var out = SegmentHeader.magic
        put16(SegmentHeader.formatVersion, &out)
        put16(UInt16(SegmentHeader.size), &out)
        put32(0, &out) // flags
        put64(firstSeq, &out)
        out.append(contentsOf: previousChainHash.array)
        out.append(contentsOf: [UInt8](repeating: 0, count: 120 - out.count))
        let checksum = out.withUnsafeBytes { XXH64.hash($0) }
        put64(checksum, &out)
        return out
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<SegmentHeader, BlockHeader.HeaderProblem> {
        guard bytes.count >= size else { return .failure(.truncated) }
        guard Array(bytes[0..<8]) == magic else { return .failure(.badMagic) }
        guard XXH64.hash(UnsafeRawBufferPointer(rebasing: bytes[0..<120])) == get64(bytes, 120) else { return .failure(.badChecksum) }
        let version = get16(bytes, 8)
        guard version == formatVersion else { return .failure(.unsupportedVersion(version)) }
        return .success(SegmentHeader(firstSeq: get64(bytes, 16),
                                      previousChainHash: Digest32(UnsafeRawBufferPointer(rebasing: bytes[24..<56]))!))
    }

    public static func fileName(firstSeq: UInt64) -> String {
        let digits = String(firstSeq)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".seg"
    }

    /// - Returns: the first sequence number a segment file name stands for, nil if it is not one.
    public static func firstSeq(fromFileName name: String) -> UInt64? {
        guard name.hasSuffix(".seg"), name.count == 24 else { return nil }
        let digits = name.dropLast(4)
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(digits)
    }
}
