// Projection snapshots (FORMAT.md "Snapshots"): the whole projection state at one sequence
// number, stamped with the chain hash of the block holding that sequence number, checksummed,
// LZ4-compressed in chunks. A snapshot is a cache: it is used only when every check passes, and
// the ledger alone can always rebuild it.
import LedgerCrypto
import LedgerModel
import LedgerStorage

public struct SnapshotHeader: Sendable, Equatable {
    public static let magic: UInt32 = 0x4E53_4C54 // "TLSN" in file order
    /// 2: token records carry `scope`. Snapshots of another version are stale (rebuilt).
    public static let formatVersion: UInt16 = 2
    public static let fixedSize = 104
    public static let markerBytesMax = 1024

    public var formatVersion: UInt16 = SnapshotHeader.formatVersion
    /// Last sequence number applied.
    public var seq: UInt64
    /// The block holding `seq`: its last sequence number and chain hash.
    public var blockLastSeq: UInt64
    public var chainHash: Digest32
    /// Largest `ts` applied (the clock at `seq`); `Int64.min` when none.
    public var maxTs: Int64
    /// Identifies the projection options the state was built with.
    public var optionsHash: UInt64
    public var rawBytes: UInt64 = 0
    public var storedBytes: UInt64 = 0
    public var bodyChecksum: UInt64 = 0
    /// Set when taken exactly at a deployment marker.
    public var marker: String?

    public var size: Int { SnapshotHeader.fixedSize + (marker?.utf8.count ?? 0) }

    // Layout (little-endian): magic u32, version u16, marker length u16, seq u64, blockLastSeq
    // u64, chainHash [32], maxTs i64, optionsHash u64, rawBytes u64, storedBytes u64,
    // bodyChecksum u64, headerChecksum u64 (XXH64 of everything before it and of the marker
    // bytes that follow it), then the marker id.
    public func encode() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(size)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        let markerBytes = Array((marker ?? "").utf8)
        put(SnapshotHeader.magic); put(formatVersion); put(UInt16(markerBytes.count))
        put(seq); put(blockLastSeq); out.append(contentsOf: chainHash.array)
        put(maxTs); put(optionsHash); put(rawBytes); put(storedBytes); put(bodyChecksum)
        put(XXH64.hash(out + markerBytes))
        out.append(contentsOf: markerBytes)
        return out
    }

    /// - Returns: the header, or why it is not one.
    public static func decode(_ bytes: [UInt8]) -> Result<SnapshotHeader, SnapshotError> {
        guard bytes.count >= fixedSize else { return .failure(.init(offset: 0, reason: "file shorter than a snapshot header")) }
        func get<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
            var v: T = 0
            withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: bytes[at..<(at + MemoryLayout<T>.size)]) }
            return T(littleEndian: v)
        }
        guard get(0, UInt32.self) == magic else { return .failure(.init(offset: 0, reason: "not a snapshot (bad magic)")) }
        let markerLength = Int(get(6, UInt16.self))
        guard markerLength <= markerBytesMax, bytes.count >= fixedSize + markerLength else {
            return .failure(.init(offset: 6, reason: "bad marker length \(markerLength)"))
        }
        let markerBytes = Array(bytes[fixedSize..<(fixedSize + markerLength)])
        guard XXH64.hash(Array(bytes[0..<(fixedSize - 8)]) + markerBytes) == get(fixedSize - 8, UInt64.self) else {
            return .failure(.init(offset: UInt64(fixedSize - 8), reason: "header checksum mismatch"))
        }
        var h = SnapshotHeader(seq: get(8, UInt64.self), blockLastSeq: get(16, UInt64.self),
                               chainHash: Digest32(bytes[24..<56])!,
                               maxTs: get(56, Int64.self), optionsHash: get(64, UInt64.self),
                               marker: markerLength == 0 ? nil : String(decoding: markerBytes, as: UTF8.self))
        h.formatVersion = get(4, UInt16.self)
        h.rawBytes = get(72, UInt64.self)
        h.storedBytes = get(80, UInt64.self)
        h.bodyChecksum = get(88, UInt64.self)
        return .success(h)
    }
}

public struct SnapshotError: Error, CustomStringConvertible, Sendable, Equatable {
    public let offset: UInt64
    public let reason: String
    public var description: String { "at byte \(offset): \(reason)" }
}

extension ProjectionOptions {
    /// Snapshots built with other options hold other anomalies: they are stale for these.
    public var hash: UInt64 {
        var bytes = [UInt8]()
        withUnsafeBytes(of: rejectionFactor.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: rejectionSamplesMin.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: ProjectionOptions.stableTrack.utf8)
        return XXH64.hash(bytes)
    }
}

// MARK: Body

enum SnapshotBody {
    /// Chunks are compressed independently, so a body of any size stays within LZ4's input limit.
    static let chunkBytes = 16 << 20

    static func encode(_ p: Projection) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(64 + p.records.count * 40)
        func v(_ x: UInt64) { appendVarint(x, to: &out) }
        func z(_ x: Int64) { appendVarint(zigzag(x), to: &out) }
        func ref(_ x: UInt32) { v(x == TokenRecord.none ? 0 : UInt64(x) + 1) }
        func str(_ s: String) { v(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func optStr(_ s: String?) { if let s { v(1); str(s) } else { v(0) } }

        v(p.lastSeq); v(p.maxTs == nil ? 0 : 1); z(p.maxTs ?? 0); v(p.eventCount); v(p.duplicateCreations)
        v(UInt64(p.names.names.count))
        for n in p.names.names { str(n) }
        v(UInt64(p.ids.count))
        for i in 0..<UInt32(p.ids.count) {
            let b = p.ids.bytes(of: i)
            v(UInt64(b.count)); out.append(contentsOf: b)
        }
        v(UInt64(p.records.count))
        var previousCreated: UInt64 = 0
        for i in 0..<UInt32(p.records.count) {
            let r = p.records[i]
            // Records are numbered in first-mention order, so creation seqs and times mostly rise:
            // deltas keep them to a byte or two.
            z(Int64(bitPattern: r.createdSeq &- previousCreated)); previousCreated = r.createdSeq
            z(r.issuedAt)
            let hasExp = r.exp != .max, hasLastSeen = r.lastSeen != .min
            v(UInt64(r.flags) | (hasExp ? 4 : 0) | (hasLastSeen ? 8 : 0))
            if hasExp { z(r.exp &- r.issuedAt) }
            if hasLastSeen { z(r.lastSeen &- r.issuedAt) }
            v(r.revokedSeq)
            if r.revokedSeq != 0 { z(r.revokedAt &- r.issuedAt); ref(r.revokeReason) }
            v(UInt64(r.useCount))
            ref(r.sub); ref(r.client); ref(r.release); ref(r.track); ref(r.tokenType); ref(r.scope); ref(r.parent); ref(r.child)
        }
        v(UInt64(p.counters.count))
        for (k, count) in p.counters.entries {
            v(UInt64(k.type)); ref(k.release); ref(k.track); ref(k.gateway); ref(k.reason); v(count)
        }
        v(UInt64(p.anomalyRecords.count))
        for a in p.anomalyRecords {
            v(a.seq); z(a.ts); v(UInt64(a.kind.rawValue)); ref(a.token); ref(a.release); ref(a.track); ref(a.gateway)
            v(a.rate.bitPattern); v(a.stableRate.bitPattern)
        }
        v(UInt64(p.markerRecords.count))
        for m in p.markerRecords {
            v(m.seq); z(m.ts); v(UInt64(m.type.rawValue)); str(m.marker); optStr(m.release); optStr(m.track)
            v(m.weight.map { UInt64($0) + 1 } ?? 0)
        }
        v(UInt64(p.rejection.count))
        for (key, s) in p.rejection.sorted(by: { $0.key < $1.key }) {
            v(key); v(s.validated); v(s.rejected); v(s.alerted ? 1 : 0)
        }
        v(p.stable.validated); v(p.stable.rejected); v(p.stable.alerted ? 1 : 0)
        return out
    }

    static func decode(_ body: UnsafeRawBufferPointer, options: ProjectionOptions) throws(SnapshotError) -> Projection {
        var c = ByteCursor(body)
        func fail(_ what: String) -> SnapshotError { SnapshotError(offset: UInt64(c.offset), reason: "body: bad \(what)") }
        func v(_ what: String) throws(SnapshotError) -> UInt64 {
            guard let x = c.varint() else { throw fail(what) }
            return x
        }
        func z(_ what: String) throws(SnapshotError) -> Int64 { unzigzag(try v(what)) }
        func count(_ what: String, _ perItemBytesMin: Int = 1) throws(SnapshotError) -> Int {
            let n = try v(what)
            guard n <= UInt64(c.remaining / perItemBytesMin) else { throw fail(what) }
            return Int(n)
        }
        func str(_ what: String) throws(SnapshotError) -> String {
            let n = try v(what)
            guard n <= UInt64(c.remaining), let b = c.bytes(Int(n)) else { throw fail(what) }
            return String(decoding: b, as: UTF8.self)
        }
        func optStr(_ what: String) throws(SnapshotError) -> String? { try v(what) == 0 ? nil : try str(what) }

        let p = Projection(options: options)
        p.lastSeq = try v("seq")
        let hasMaxTs = try v("clock flag")
        let maxTs = try z("clock")
        p.maxTs = hasMaxTs == 0 ? nil : maxTs
        p.eventCount = try v("event count")
        p.duplicateCreations = try v("duplicate count")
        let nameCount = try count("name count")
        var names = NameTable()
        names.names.reserveCapacity(nameCount)
        for _ in 0..<nameCount {
            let s = try str("name")
            names.index[s] = UInt32(names.names.count)
            names.names.append(s)
        }
        guard names.index.count == names.names.count else { throw fail("name table (duplicates)") }
        p.names = names
        guard let stable = names.index[ProjectionOptions.stableTrack] else { throw fail("name table (no stable track)") }
        p.stableName = stable
        let nameLimit = UInt64(names.names.count)

        let idCount = try count("token count")
        p.ids = TokenIDTable(capacity: idCount)
        for _ in 0..<idCount {
            let n = try v("token id length")
            guard n <= UInt64(TokenIDTable.idBytesMax), let b = c.bytes(Int(n)) else { throw fail("token id") }
            p.ids.appendUnindexed(b)
        }
        let recordCount = try count("record count")
        guard recordCount == idCount else { throw fail("record count \(recordCount) for \(idCount) tokens") }
        let tokenLimit = UInt64(idCount)
        func ref(_ what: String, _ limit: UInt64) throws(SnapshotError) -> UInt32 {
            let x = try v(what)
            guard x <= limit else { throw fail(what) }
            return x == 0 ? TokenRecord.none : UInt32(x - 1)
        }
        var previousCreated: UInt64 = 0
        for _ in 0..<recordCount {
            var r = TokenRecord()
            let created = previousCreated &+ UInt64(bitPattern: try z("created seq"))
            guard created <= TokenRecord.seqMask else { throw fail("created seq") }
            r.createdSeq = created; previousCreated = created
            r.issuedAt = try z("issued at")
            let bits = try v("flags")
            guard bits <= 15 else { throw fail("flags") }
            r.flags = UInt8(bits & 3)
            if bits & 4 != 0 { r.exp = r.issuedAt &+ (try z("exp")) }
            if bits & 8 != 0 { r.lastSeen = r.issuedAt &+ (try z("last seen")) }
            r.revokedSeq = try v("revoked seq")
            if r.revokedSeq != 0 {
                r.revokedAt = r.issuedAt &+ (try z("revoked at"))
                r.revokeReason = try ref("revocation reason", nameLimit)
            }
            let uses = try v("use count")
            guard uses <= UInt64(UInt32.max) else { throw fail("use count") }
            r.useCount = UInt32(uses)
            r.sub = try ref("sub", nameLimit); r.client = try ref("client", nameLimit); r.release = try ref("release", nameLimit)
            r.track = try ref("track", nameLimit); r.tokenType = try ref("token type", nameLimit)
            r.scope = try ref("scope", nameLimit)
            r.parent = try ref("parent", tokenLimit); r.child = try ref("child", tokenLimit)
            _ = p.records.append(r)
        }
        let counterCount = try count("counter count")
        for _ in 0..<counterCount {
            let type = try v("counter type")
            guard type <= 255, EventType(rawValue: UInt8(type)) != nil else { throw fail("counter type") }
            let key = CounterKey(type: UInt8(type), release: try ref("counter release", nameLimit), track: try ref("counter track", nameLimit),
                                 gateway: try ref("counter gateway", nameLimit), reason: try ref("counter reason", nameLimit))
            p.counters.add(key, try v("counter value"))
        }
        let anomalyCount = try count("anomaly count")
        p.anomalyRecords.reserveCapacity(anomalyCount)
        for _ in 0..<anomalyCount {
            let seq = try v("anomaly seq"), ts = try z("anomaly ts")
            let k = try v("anomaly kind")
            guard k <= 255, let kind = AnomalyKind(rawValue: UInt8(k)) else { throw fail("anomaly kind") }
            p.anomalyRecords.append(AnomalyRecord(seq: seq, ts: ts, kind: kind, token: try ref("anomaly token", tokenLimit),
                                                  release: try ref("anomaly release", nameLimit), track: try ref("anomaly track", nameLimit),
                                                  gateway: try ref("anomaly gateway", nameLimit),
                                                  rate: Double(bitPattern: try v("rate")), stableRate: Double(bitPattern: try v("stable rate"))))
        }
        let markerCount = try count("marker count")
        for _ in 0..<markerCount {
            let seq = try v("marker seq"), ts = try z("marker ts")
            let t = try v("marker type")
            guard t <= 255, let type = EventType(rawValue: UInt8(t)), type.isMarker else { throw fail("marker type") }
            let id = try str("marker id"), release = try optStr("marker release"), track = try optStr("marker track")
            let w = try v("marker weight")
            guard w <= 101 else { throw fail("marker weight") }
            p.markerRecords.append(MarkerRecord(seq: seq, ts: ts, type: type, marker: id, release: release, track: track,
                                                weight: w == 0 ? nil : Int(w - 1)))
        }
        let statsCount = try count("rejection stats count")
        for _ in 0..<statsCount {
            let key = try v("stats key")
            guard key >> 32 < nameLimit, key & 0xFFFF_FFFF < nameLimit else { throw fail("rejection stats key") }
            p.rejection[key] = RejectionStats(validated: try v("validated"), rejected: try v("rejected"), alerted: try v("alerted") != 0)
        }
        p.stable = RejectionStats(validated: try v("stable validated"), rejected: try v("stable rejected"), alerted: try v("stable alerted") != 0)
        guard c.isAtEnd else { throw SnapshotError(offset: UInt64(c.offset), reason: "body: \(c.remaining) bytes after the end") }
        return p
    }

    /// Chunked LZ4: per chunk, raw length u32 and stored length u32, then the stored bytes.
    static func compress(_ raw: [UInt8]) throws(StorageError) -> [UInt8] {
        var out = [UInt8]()
        var start = 0
        repeat {
            let end = min(raw.count, start + chunkBytes)
            let result = raw.withUnsafeBytes { b in
                Result { () throws(StorageError) in try LZ4.compress(UnsafeRawBufferPointer(rebasing: b[start..<end])) }
            }
            let stored = try result.get()
            withUnsafeBytes(of: UInt32(end - start).littleEndian) { out.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(stored.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: stored)
            start = end
        } while start < raw.count
        return out
    }

    static func decompress(_ stored: [UInt8], rawBytes: UInt64) throws(SnapshotError) -> [UInt8] {
        guard rawBytes <= UInt64(Int.max / 2) else { throw SnapshotError(offset: 0, reason: "raw size \(rawBytes) is not believable") }
        var raw = [UInt8](repeating: 0, count: Int(rawBytes))
        var at = 0, filled = 0
        let ok: SnapshotError? = stored.withUnsafeBytes { s in
            raw.withUnsafeMutableBytes { r in
                while at < s.count {
                    guard s.count - at >= 8 else { return SnapshotError(offset: UInt64(at), reason: "truncated chunk header") }
                    let rawLength = Int(s.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian)
                    let storedLength = Int(s.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self).littleEndian)
                    at += 8
                    guard storedLength <= s.count - at, rawLength <= r.count - filled, rawLength <= chunkBytes else {
                        return SnapshotError(offset: UInt64(at - 8), reason: "chunk lengths run past the body")
                    }
                    let input = UnsafeRawBufferPointer(rebasing: s[at..<(at + storedLength)])
                    let output = UnsafeMutableRawBufferPointer(rebasing: r[filled..<(filled + rawLength)])
                    guard LZ4.decompress(input, into: output) else { return SnapshotError(offset: UInt64(at), reason: "chunk does not decompress") }
                    at += storedLength
                    filled += rawLength
                }
                return filled == r.count ? nil : SnapshotError(offset: UInt64(at), reason: "body is \(filled) bytes, header says \(r.count)")
            }
        }
        if let ok { throw ok }
        return raw
    }
}
