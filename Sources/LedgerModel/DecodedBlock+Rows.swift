// Selective decoding, for the token index: the events at a few rows of a block, or the token ids
// each event names, without building the string table or the columns of every other row.
//
// The whole payload is still walked and checked exactly as `BlockPayloadDecoder.decode` checks
// it (a payload one refuses, the other refuses with the same error at the same offset), for two
// reasons: a requested row may inherit fields from any earlier event of its token, so the
// streams must be followed from the start anyway; and an index is derived data, so reading
// through it must never accept bytes that a full read would refuse. What is saved is the
// expensive part of a full decode: a `String` per table entry and the per-event columns. Strings
// stay byte offsets into the payload until a requested row needs one.
//
// With a block's checkpoint record (recorded by `tokenKeys(_:checkpointEvery:hash:)` as it walks
// the block, kept by the token index), `decode(_:rows:checkpoints:maxTs:token:)` resumes at the
// checkpoint before each needed row instead, and walks only to the next checkpoint, whose recorded
// state the walk must reach exactly (FORMAT.md "Token index", row checkpoints). The payload itself
// was checked against its block's checksum; the record is derived data and is trusted for nothing:
// every offset in it is bound-checked, and whatever does not add up is reported, never followed.

/// The events at some rows of a block, as `DecodedBlock.event(at:)` would give them.
public struct BlockRows: Sendable {
    /// Events in the whole block.
    public let count: Int
    /// Smallest and largest `ts` over the whole block (`Int64.max`/`.min` when it is empty).
    public let minTs: Int64
    public let maxTs: Int64
    /// The rows asked for, ascending.
    public let rows: [Int]
    /// `events[k]` is the event at `rows[k]`.
    public let events: [Event]
    /// `maxTsThrough[k]`: the largest `ts` of the block's events `0...rows[k]` (a running clock).
    public let maxTsThrough: [Int64]
}

/// The token ids a block's events name, as hashes of their UTF-8 text: what a token index stores.
/// An event names the id in its `token` field, and a `refreshed` event also names its `parent`
/// (the token it replaced), as the projection rules do (ARCHITECTURE.md, rule 1).
public struct BlockTokenKeys: Sendable {
    public let count: Int
    public let minTs: Int64
    public let maxTs: Int64
    /// `(rows[k], hashes[k])` in row order; an event naming two ids appears twice, token first.
    public let rows: [UInt32]
    public let hashes: [UInt64]
    /// The block's checkpoint record (FORMAT.md "Token index", checkpoint record) when asked for
    /// with `checkpointEvery` > 0; empty otherwise.
    public let checkpoints: [UInt8]
}

extension BlockPayloadDecoder {
    /// Decodes only the events at `rows` (ascending, distinct, each below the event count).
    /// - Throws: what `decode(_:)` throws for the same payload; also when `rows` is not ascending
    ///   or names an event the block does not have.
    public static func decode(_ payload: UnsafeRawBufferPointer, rows: [Int]) throws(BlockPayloadError) -> BlockRows {
        var walk = try RowWalk(payload)
        try walk.run(rows: rows, keyHash: nil)
        return BlockRows(count: walk.count, minTs: walk.minTs, maxTs: walk.maxTs, rows: rows, events: walk.events,
                         maxTsThrough: walk.maxTsThrough)
    }

    public static func decode(_ payload: [UInt8], rows: [Int]) throws(BlockPayloadError) -> BlockRows {
        let result = payload.withUnsafeBytes { raw in Result { () throws(BlockPayloadError) in try decode(raw, rows: rows) } }
        return try result.get()
    }

    /// The ids each event names (see `BlockTokenKeys`), each hashed once per block with `hash`
    /// over its UTF-8 text (packed strings are unpacked first, so the hash is of the text).
    /// - Throws: what `decode(_:)` throws for the same payload.
    /// With `checkpointEvery` K > 0, also the block's checkpoint record: the decoder state every
    /// K rows, from which `decode(_:rows:checkpoints:…)` resumes.
    public static func tokenKeys(_ payload: UnsafeRawBufferPointer, checkpointEvery: Int = 0,
                                 hash: (UnsafeRawBufferPointer) -> UInt64) throws(BlockPayloadError) -> BlockTokenKeys {
        var walk = try RowWalk(payload)
        try withoutActuallyEscaping(hash) { (hash) throws(BlockPayloadError) in try walk.run(rows: [], keyHash: hash, checkpointEvery: max(0, checkpointEvery)) }
        return BlockTokenKeys(count: walk.count, minTs: walk.minTs, maxTs: walk.maxTs, rows: walk.keyRows, hashes: walk.keyHashes,
                              checkpoints: walk.checkpointRecord)
    }

    public static func tokenKeys(_ payload: [UInt8], checkpointEvery: Int = 0, hash: (UnsafeRawBufferPointer) -> UInt64) throws(BlockPayloadError) -> BlockTokenKeys {
        let result = payload.withUnsafeBytes { raw in Result { () throws(BlockPayloadError) in try tokenKeys(raw, checkpointEvery: checkpointEvery, hash: hash) } }
        return try result.get()
    }
}

/// One pass over a payload. The header and the string table are parsed as the full decoder parses
/// them (same checks, same error offsets); strings are kept as the offsets of their kind bytes.
private struct RowWalk {
    let payload: UnsafeRawBufferPointer
    let count: Int
    var stringStarts: [Int]
    var streams: [ByteCursor]
    /// Payload offset just past the string table (where the stream count is).
    var tableEnd = 0
    var checkpointRecord: [UInt8] = []

    var minTs = Int64.max
    var maxTs = Int64.min
    var events: [Event] = []
    var maxTsThrough: [Int64] = []
    var keyRows: [UInt32] = []
    var keyHashes: [UInt64] = []

    init(_ payload: UnsafeRawBufferPointer) throws(BlockPayloadError) {
        self.payload = payload
        var c = ByteCursor(payload)
        func fail(_ reason: String) -> BlockPayloadError { BlockPayloadError(offset: c.offset, reason: reason) }

        guard let eventCount64 = c.varint(), eventCount64 <= UInt64(BlockPayloadDecoder.eventsMax) else { throw fail("bad event count") }
        let n = Int(eventCount64)
        guard let stringCount64 = c.varint(), stringCount64 <= UInt64(payload.count) else { throw fail("bad string count") }
        var starts = [Int]()
        starts.reserveCapacity(Int(stringCount64))
        for _ in 0..<Int(stringCount64) {
            let start = c.offset
            guard let kind = c.byte() else { throw fail("string table truncated") }
            switch kind {
            case StringKind.raw:
                guard let length = c.varint(), length <= UInt64(c.remaining), c.bytes(Int(length)) != nil else {
                    throw fail("string length runs past the payload")
                }
            case StringKind.uuid, StringKind.base64URL128:
                guard c.bytes(16) != nil else { throw fail("string table truncated") }
            case StringKind.sha256Fingerprint:
                guard c.bytes(32) != nil else { throw fail("string table truncated") }
            default:
                throw fail("unknown string kind \(kind)")
            }
            starts.append(start)
        }
        let tableEnd = c.offset
        guard let streamCount = c.varint(), streamCount == UInt64(PayloadStream.count) else {
            throw fail("expected \(PayloadStream.count) streams")
        }
        var lengths = [Int]()
        for _ in 0..<PayloadStream.count {
            guard let length = c.varint(), length <= UInt64(payload.count) else { throw fail("bad stream length") }
            lengths.append(Int(length))
        }
        guard lengths[PayloadStream.types] == n else {
            throw fail("\(n) events but \(lengths[PayloadStream.types]) type bytes")
        }
        var cursors = [ByteCursor]()
        cursors.reserveCapacity(PayloadStream.count)
        var start = c.offset
        for length in lengths {
            guard length <= payload.count - start else { throw fail("streams run past the payload") }
            cursors.append(ByteCursor(payload, offset: start, end: start + length))
            start += length
        }
        guard start == payload.count else {
            throw BlockPayloadError(offset: start, reason: "\(payload.count - start) bytes after the last stream")
        }
        count = n
        stringStarts = starts
        streams = cursors
        self.tableEnd = tableEnd
    }

    /// Walks every event. Rows in `rows` become `events`; with `keyHash`, every named id is
    /// recorded in `keyRows`/`keyHashes`.
    mutating func run(rows: [Int], keyHash: ((UnsafeRawBufferPointer) -> UInt64)?, checkpointEvery: Int = 0) throws(BlockPayloadError) {
        let n = count
        for (k, row) in rows.enumerated() where row < 0 || row >= n || (k > 0 && rows[k - 1] >= row) {
            throw BlockPayloadError(offset: 0, reason: "row \(row) asked for: rows must be ascending and below the block's \(n) events")
        }
        events.reserveCapacity(rows.count)
        maxTsThrough.reserveCapacity(rows.count)
        let stringCount = UInt64(stringStarts.count)
        let fieldCount = StringField.count
        // Per token (string number + 1; 0 = not seen yet) the slot holding the string numbers of
        // its latest event, which is all an inheriting event can refer to. Slots are made only
        // for strings used as tokens, so memory follows the events, not a forged string count.
        // Raw buffers: array writes with uniqueness checks per field were most of the walk.
        // At most one slot per event with a token, and per distinct string.
        let slotsMax = min(n, stringStarts.count)
        let slotOf = UnsafeMutableBufferPointer<Int32>.allocate(capacity: stringStarts.count)
        slotOf.initialize(repeating: 0)
        let slotPresence = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(1, slotsMax))
        let slotRefs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(1, slotsMax * fieldCount))
        let loose = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: fieldCount)
        loose.initialize(repeating: UInt32.max)
        defer { slotOf.deallocate(); slotPresence.deallocate(); slotRefs.deallocate(); loose.deallocate() }
        var slotCount = 0
        var hashOf = keyHash == nil ? [] : [UInt64](repeating: 0, count: stringStarts.count)
        var hashed = keyHash == nil ? [] : [Bool](repeating: false, count: stringStarts.count)
        var strings = [Int: String]()
        var attrPairs = [UInt32]()

        let cursors = UnsafeMutableBufferPointer<ByteCursor>.allocate(capacity: PayloadStream.count)
        _ = cursors.initialize(from: streams)
        defer { cursors.deallocate() }
        func streamError(_ stream: Int, _ reason: String) -> BlockPayloadError {
            BlockPayloadError(offset: cursors[stream].offset, reason: "stream \(stream): \(reason)")
        }

        // Checkpoints (`checkpointEvery` > 0): strings used so far (the table is in first-use
        // order, so string s is used before an event iff s < used), which strings were first used
        // as a token, the strings first used otherwise and only later as a token (exceptions),
        // and the state every K rows. A payload where the resumed decoder's rule for "this event
        // has an inherit entry" would not hold (not in first-use order) gets no checkpoints.
        let tracking = checkpointEvery > 0
        let stringTotal = stringStarts.count
        var used = 0
        var canonical = tracking
        let firstAsToken = UnsafeMutableBufferPointer<Bool>.allocate(capacity: tracking ? max(1, stringTotal) : 1)
        firstAsToken.initialize(repeating: false)
        defer { firstAsToken.deallocate() }
        var exceptions = [(UInt32, UInt32)]()
        var checkpointBytes = [UInt8]()
        var lastCursor = (0..<PayloadStream.count).map { cursors[$0].offset }
        var lastCheckpointMax: Int64 = 0
        var lastUsed = 0
        @inline(__always) func use(_ r: UInt64, token: Bool) {
            if r == UInt64(used) {
                if token { firstAsToken[used] = true }
                used += 1
            } else if r > UInt64(used) {
                canonical = false
            }
        }

        var nextWanted = 0
        var previousTs: Int64 = 0
        var runningMax = Int64.min
        for i in 0..<n {
            let usedAtStart = used
            let wanted = nextWanted < rows.count && rows[nextWanted] == i
            guard let rawType = cursors[PayloadStream.types].byte(), let type = EventType(rawValue: rawType) else {
                throw streamError(PayloadStream.types, "event \(i): missing or unknown type")
            }
            guard let p64 = cursors[PayloadStream.presence].varint(), p64 <= UInt64(PresenceBit.all) else {
                throw streamError(PayloadStream.presence, "event \(i): bad presence bits")
            }
            let p = UInt32(p64)
            var inherit: UInt32 = 0
            var previousPresence: UInt32 = 0
            var slotBase = -1
            var tokenRef: UInt32 = UInt32.max
            if p & 1 != 0 {
                guard let ref = cursors[PayloadStream.firstString].varint(), ref < stringCount else {
                    throw streamError(PayloadStream.firstString, "event \(i): bad token reference")
                }
                tokenRef = UInt32(ref)
                let slot = Int(slotOf[Int(ref)]) - 1
                if tracking && canonical {
                    let s = Int(ref)
                    use(ref, token: true)
                    if s >= usedAtStart {
                        if slot >= 0 { canonical = false }
                    } else if !firstAsToken[s] {
                        if slot < 0 { exceptions.append((UInt32(s), UInt32(i))) }
                    } else if slot < 0 {
                        canonical = false
                    }
                }
                if slot >= 0 {
                    guard let inh = cursors[PayloadStream.inherit].varint(), inh & ~UInt64(p) == 0, inh & 1 == 0 else {
                        throw streamError(PayloadStream.inherit, "event \(i): bad inherit bits")
                    }
                    inherit = UInt32(inh)
                    previousPresence = slotPresence[slot]
                    slotBase = slot * fieldCount
                } else {
                    slotOf[Int(ref)] = Int32(slotCount + 1)
                    slotBase = slotCount * fieldCount
                    slotPresence[slotCount] = 0
                    // Only fields present in this event are read back before being written.
                    slotCount += 1
                }
                slotRefs[slotBase] = tokenRef
            }
            var fields = p & 0x1FFFE
            while fields != 0 {
                let f = fields.trailingZeroBitCount
                let bit = UInt32(1) << UInt32(f)
                fields &= fields - 1
                if inherit & bit != 0 {
                    // The value is already in the token's slot: the previous event left it there.
                    guard previousPresence & bit != 0 else { throw streamError(PayloadStream.inherit, "event \(i): inherits an absent field") }
                } else {
                    guard let r = cursors[PayloadStream.firstString + f].varint(), r < stringCount else {
                        throw streamError(PayloadStream.firstString + f, "event \(i): bad string reference")
                    }
                    if tracking { use(r, token: false) }
                    if slotBase >= 0 { slotRefs[slotBase + f] = UInt32(truncatingIfNeeded: r) } else { loose[f] = UInt32(truncatingIfNeeded: r) }
                }
            }
            if slotBase >= 0 { slotPresence[slotBase / fieldCount] = p }
            guard let delta = cursors[PayloadStream.ts].varint() else { throw streamError(PayloadStream.ts, "event \(i): truncated") }
            let t = previousTs &+ unzigzag(delta)
            previousTs = t
            if t < minTs { minTs = t }
            if t > maxTs { maxTs = t }
            runningMax = max(runningMax, t)
            var exp: Int64 = 0, status: Int32 = 0, weight: Int32 = 0
            if wanted { attrPairs.removeAll(keepingCapacity: true) }
            if p & (PresenceBit.exp | PresenceBit.status | PresenceBit.weight | PresenceBit.attrs) != 0 {
                if p & PresenceBit.exp != 0 {
                    guard let d = cursors[PayloadStream.exp].varint() else { throw streamError(PayloadStream.exp, "event \(i): truncated") }
                    exp = t &+ unzigzag(d)
                }
                if p & PresenceBit.status != 0 {
                    guard let v = cursors[PayloadStream.status].varint(), v <= UInt64(PayloadLimits.statusMax) else { throw streamError(PayloadStream.status, "event \(i): bad status") }
                    status = Int32(v)
                }
                if p & PresenceBit.weight != 0 {
                    guard let w = cursors[PayloadStream.weight].varint(), w <= UInt64(PayloadLimits.weightMax) else { throw streamError(PayloadStream.weight, "event \(i): bad weight") }
                    weight = Int32(w)
                }
                if p & PresenceBit.attrs != 0 {
                    guard let pairs = cursors[PayloadStream.attrs].varint(), pairs >= 1, pairs <= UInt64(PayloadLimits.attrsPerEventMax) else {
                        throw streamError(PayloadStream.attrs, "event \(i): bad attribute count")
                    }
                    for _ in 0..<(Int(pairs) * 2) {
                        guard let r = cursors[PayloadStream.attrs].varint(), r < stringCount else {
                            throw streamError(PayloadStream.attrs, "event \(i): bad attribute reference")
                        }
                        if tracking { use(r, token: false) }
                        if wanted { attrPairs.append(UInt32(r)) }
                    }
                }
            }

            if let keyHash {
                func key(_ ref: UInt32) -> UInt64 {
                    let s = Int(ref)
                    if !hashed[s] {
                        hashOf[s] = withText(s, keyHash)
                        hashed[s] = true
                    }
                    return hashOf[s]
                }
                if tokenRef != UInt32.max {
                    keyRows.append(UInt32(i))
                    keyHashes.append(key(tokenRef))
                }
                if type == .refreshed && p & (1 << UInt32(StringField.parent.rawValue)) != 0 {
                    let parentRef = slotBase >= 0 ? slotRefs[slotBase + StringField.parent.rawValue] : loose[StringField.parent.rawValue]
                    keyRows.append(UInt32(i))
                    keyHashes.append(key(parentRef))
                }
            }

            if wanted {
                nextWanted += 1
                var e = Event(type: type, ts: t)
                var present = p & 0x1FFFF
                while present != 0 {
                    let f = present.trailingZeroBitCount
                    present &= present - 1
                    let ref = slotBase >= 0 ? slotRefs[slotBase + f] : loose[f]
                    StringField(rawValue: f)!.set(string(Int(ref), &strings), in: &e)
                }
                if p & PresenceBit.exp != 0 { e.exp = exp }
                if p & PresenceBit.status != 0 { e.status = Int(status) }
                if p & PresenceBit.weight != 0 { e.weight = Int(weight) }
                var j = 0
                while j + 1 < attrPairs.count {
                    e.attrs[string(Int(attrPairs[j]), &strings)] = string(Int(attrPairs[j + 1]), &strings)
                    j += 2
                }
                events.append(e)
                maxTsThrough.append(runningMax)
            }
            if tracking && canonical && ((i + 1) % checkpointEvery == 0 || i + 1 == n) {
                for st in 1..<PayloadStream.count {
                    appendVarint(UInt64(cursors[st].offset - lastCursor[st]), to: &checkpointBytes)
                    lastCursor[st] = cursors[st].offset
                }
                // The running max is a chain of deltas (its end is the header's max_ts); ts hangs
                // off it, so a wrong value in either is found by a check or by the walk.
                appendVarint(zigzag(runningMax &- lastCheckpointMax), to: &checkpointBytes)
                appendVarint(UInt64(bitPattern: runningMax &- previousTs), to: &checkpointBytes)
                appendVarint(UInt64(used - lastUsed), to: &checkpointBytes)
                lastCheckpointMax = runningMax
                lastUsed = used
            }
        }
        for index in 0..<PayloadStream.count where !cursors[index].isAtEnd {
            throw streamError(index, "\(cursors[index].remaining) unread bytes")
        }
        if tracking {
            var record = [UInt8]()
            appendVarint(UInt64(n), to: &record)
            appendVarint(UInt64(stringTotal), to: &record)
            if canonical && used == stringTotal && n > 0 {
                let every = CheckpointRecord.stringsPerMark
                appendVarint(UInt64(checkpointEvery), to: &record)
                appendVarint(UInt64(every), to: &record)
                appendVarint(UInt64(tableEnd), to: &record)
                exceptions.sort { $0.0 < $1.0 }
                appendVarint(UInt64(exceptions.count), to: &record)
                var previous: UInt32 = 0
                for (s, row) in exceptions {
                    appendVarint(UInt64(s - previous), to: &record)
                    appendVarint(UInt64(row), to: &record)
                    previous = s
                }
                var previousMark = 0
                for s in stride(from: 0, to: stringTotal, by: every) {
                    appendVarint(UInt64(stringStarts[s] - previousMark), to: &record)
                    previousMark = stringStarts[s]
                }
                record += checkpointBytes
            } else {
                appendVarint(0, to: &record)
            }
            checkpointRecord = record
        }
    }

    /// String `s` of the table as text; each is built once per walk.
    private func string(_ s: Int, _ cache: inout [Int: String]) -> String {
        if let known = cache[s] { return known }
        let text = withText(s) { String(decoding: $0, as: UTF8.self) }
        cache[s] = text
        return text
    }

    /// Calls `body` with the UTF-8 text of string `s` (already checked by `init`).
    private func withText<T>(_ s: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        withStringText(payload, at: stringStarts[s], end: payload.count, body)!
    }
}

/// Calls `body` with the UTF-8 text of the string whose kind byte is at `offset`; nil when the
/// string is malformed or runs past `end` (never reads outside `payload`).
func withStringText<T>(_ payload: UnsafeRawBufferPointer, at offset: Int, end: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T? {
    guard offset >= 0, end <= payload.count, offset < end else { return nil }
    var c = ByteCursor(payload, offset: offset, end: end)
    guard let kind = c.byte() else { return nil }
    switch kind {
    case StringKind.uuid:
        guard let packed = c.bytes(16) else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: StringPacking.uuidTextBytes) { out in
            StringPacking.unpackUUID(packed, into: out.baseAddress!)
            return body(UnsafeRawBufferPointer(out))
        }
    case StringKind.sha256Fingerprint:
        guard let packed = c.bytes(32) else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: StringPacking.fingerprintTextBytes) { out in
            StringPacking.unpackFingerprint(packed, into: out.baseAddress!)
            return body(UnsafeRawBufferPointer(out))
        }
    case StringKind.base64URL128:
        guard let packed = c.bytes(16) else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: StringPacking.base64URL128TextBytes) { out in
            StringPacking.unpackBase64URL128(packed, into: out.baseAddress!)
            return body(UnsafeRawBufferPointer(out))
        }
    case StringKind.raw:
        guard let length = c.varint(), length <= UInt64(c.remaining), let bytes = c.bytes(Int(length)) else { return nil }
        return body(bytes)
    default:
        return nil
    }
}

/// The payload offset just past the string whose kind byte is at `offset`, or nil.
func skipString(_ payload: UnsafeRawBufferPointer, at offset: Int, end: Int) -> Int? {
    guard offset >= 0, end <= payload.count, offset < end else { return nil }
    var c = ByteCursor(payload, offset: offset, end: end)
    guard let kind = c.byte() else { return nil }
    switch kind {
    case StringKind.raw:
        guard let length = c.varint(), length <= UInt64(c.remaining) else { return nil }
        return c.offset + Int(length)
    case StringKind.uuid, StringKind.base64URL128: return c.remaining >= 16 ? c.offset + 16 : nil
    case StringKind.sha256Fingerprint: return c.remaining >= 32 ? c.offset + 32 : nil
    default: return nil
    }
}

// MARK: - Resuming from checkpoints

/// What a decode from checkpoints gave.
public enum CheckpointedRows: Sendable {
    case rows(BlockRows)
    /// The checkpoints cannot answer this (the block has none, or a row inherits a field from an
    /// event this walk did not see): decode the block from its start instead. Not damage.
    case unresolvable(String)
    /// The checkpoint record contradicts the payload (or itself): it is damaged. Decode the block
    /// from its start instead, and rebuild the record.
    case damaged(String)
}

/// The layout constants of a block's checkpoint record (FORMAT.md, "Token index").
public enum CheckpointRecord {
    /// A string mark (its payload offset) every this many strings of the table.
    public static let stringsPerMark = 64
    /// Varints per row checkpoint: cursors of streams 1–24, ts, running max, strings used.
    static let fieldsPerCheckpoint = PayloadStream.count - 1 + 3
}

extension BlockPayloadDecoder {
    /// Decodes only the events at `rows` (ascending, below the event count), resuming from the
    /// block's checkpoint record (`tokenKeys(_:checkpointEvery:hash:)`) at the checkpoint before
    /// each needed row, and walking on to the next checkpoint, where the walk's state must equal
    /// the recorded one (so a checkpoint is only trusted once the walk from it has been checked).
    /// Every offset in the record is bound-checked; nothing here traps on any bytes.
    /// - Parameters:
    ///   - maxTs: the block header's largest `ts` (the record's final running maximum must equal it).
    ///   - token: UTF-8 of the id the caller asks for, when `rows` hold every event of the block
    ///     naming it as `token`: such rows may inherit from any earlier one of them. Other rows may
    ///     inherit only from an event walked without a gap since.
    public static func decode(_ payload: UnsafeRawBufferPointer, rows: [Int], checkpoints: UnsafeRawBufferPointer,
                              maxTs: Int64, token: [UInt8]?) -> CheckpointedRows {
        var walk = CheckpointWalk(payload: payload, token: token)
        return walk.run(rows: rows, record: checkpoints, maxTs: maxTs)
    }

    public static func decode(_ payload: [UInt8], rows: [Int], checkpoints: some Collection<UInt8>, maxTs: Int64, token: [UInt8]?) -> CheckpointedRows {
        let record = Array(checkpoints)
        return payload.withUnsafeBytes { p in record.withUnsafeBytes { r in decode(p, rows: rows, checkpoints: r, maxTs: maxTs, token: token) } }
    }
}

private struct CheckpointWalk {
    let payload: UnsafeRawBufferPointer
    let token: [UInt8]?

    var n = 0, stringCount = 0, every = 0, stringsPerMark = 1, tableEnd = 0
    var exceptions: [UInt32: Int] = [:]
    var marks: [Int] = []
    var streamStart = [Int](repeating: 0, count: PayloadStream.count)
    var streamEnd = [Int](repeating: 0, count: PayloadStream.count)
    /// Per checkpoint j (row min(j·K, n); j = 0 is the block's start): cursors of streams 1–24.
    var cursorAt: [Int] = []
    var tsAt: [Int64] = []
    var maxAt: [Int64] = []
    var usedAt: [Int] = []

    var verifiedGroups = Set<Int>()
    var strings: [UInt32: String] = [:]
    var trusted: [UInt32: Bool] = [:]

    init(payload: UnsafeRawBufferPointer, token: [UInt8]?) {
        self.payload = payload
        self.token = token
    }

    /// Parses and checks the record against the payload's header; nil when it is fine.
    mutating func parse(_ record: UnsafeRawBufferPointer, maxTs: Int64) -> CheckpointedRows? {
        var r = ByteCursor(record)
        var h = ByteCursor(payload)
        guard let n64 = r.varint(), let s64 = r.varint() else { return .damaged("record header") }
        guard let pn = h.varint(), let ps = h.varint(), pn <= UInt64(BlockPayloadDecoder.eventsMax), ps <= UInt64(payload.count) else {
            return .unresolvable("payload header")
        }
        guard n64 == pn, s64 == ps else { return .damaged("record of \(n64) events, \(s64) strings; the payload has \(pn), \(ps)") }
        n = Int(pn); stringCount = Int(ps)
        guard let k64 = r.varint() else { return .damaged("record header") }
        guard k64 > 0 else { return r.isAtEnd ? .unresolvable("no checkpoints in this block") : .damaged("bytes after an empty record") }
        guard n > 0, k64 <= UInt64(BlockPayloadDecoder.eventsMax) + 1, let g64 = r.varint(), g64 >= 1, g64 <= UInt64(payload.count) + 1,
              let t64 = r.varint(), t64 >= UInt64(h.offset), t64 <= UInt64(payload.count) else { return .damaged("record header") }
        every = Int(k64); stringsPerMark = Int(g64); tableEnd = Int(t64)
        // The stream header, where the record says the string table ends.
        var c = ByteCursor(payload, offset: tableEnd)
        guard let count = c.varint(), count == UInt64(PayloadStream.count) else { return .damaged("no stream header at byte \(tableEnd)") }
        var lengths = [Int]()
        for _ in 0..<PayloadStream.count {
            guard let l = c.varint(), l <= UInt64(payload.count) else { return .damaged("stream header") }
            lengths.append(Int(l))
        }
        var start = c.offset
        for st in 0..<PayloadStream.count {
            guard lengths[st] <= payload.count - start else { return .damaged("stream header") }
            streamStart[st] = start; streamEnd[st] = start + lengths[st]; start += lengths[st]
        }
        guard start == payload.count, lengths[PayloadStream.types] == n else { return .damaged("stream header") }
        // Exceptions: strings first used other than as a token, with the row first naming them as one.
        guard let x64 = r.varint(), x64 <= UInt64(stringCount), x64 <= UInt64(r.remaining) else { return .damaged("exception count") }
        var s: UInt64 = 0
        for k in 0..<Int(x64) {
            guard let d = r.varint(), k == 0 || d >= 1, d < UInt64(stringCount), let row = r.varint(), row < UInt64(n) else { return .damaged("exception \(k)") }
            s += d
            guard s < UInt64(stringCount) else { return .damaged("exception \(k)") }
            exceptions[UInt32(s)] = Int(row)
        }
        // String marks.
        let markCount = stringCount == 0 ? 0 : (stringCount - 1) / stringsPerMark + 1
        guard markCount <= r.remaining else { return .damaged("string marks") }
        marks.reserveCapacity(markCount)
        var offset = 0
        for k in 0..<markCount {
            guard let d = r.varint(), d < UInt64(tableEnd), k == 0 || d >= 1 else { return .damaged("string mark \(k)") }
            offset += Int(d)
            guard offset < tableEnd else { return .damaged("string mark \(k)") }
            marks.append(offset)
        }
        // Row checkpoints, cumulative.
        let m = (n - 1) / every + 1
        let fields = CheckpointRecord.fieldsPerCheckpoint
        guard m <= r.remaining / fields else { return .damaged("\(m) checkpoints do not fit in the record") }
        let streams = PayloadStream.count - 1
        cursorAt = [Int](repeating: 0, count: (m + 1) * streams)
        for st in 1..<PayloadStream.count { cursorAt[st - 1] = streamStart[st] }
        tsAt = [0]; maxAt = [Int64.min]; usedAt = [0]
        tsAt.reserveCapacity(m + 1); maxAt.reserveCapacity(m + 1); usedAt.reserveCapacity(m + 1)
        for j in 1...m {
            for st in 1..<PayloadStream.count {
                let previous = cursorAt[(j - 1) * streams + st - 1]
                guard let d = r.varint(), d <= UInt64(streamEnd[st] - previous) else { return .damaged("checkpoint \(j), stream \(st)") }
                cursorAt[j * streams + st - 1] = previous + Int(d)
            }
            guard let dm = r.varint(), let dt = r.varint(), let du = r.varint(), du <= UInt64(stringCount - usedAt[j - 1]) else {
                return .damaged("checkpoint \(j)")
            }
            let mx = (j == 1 ? 0 : maxAt[j - 1]) &+ unzigzag(dm)
            maxAt.append(mx); tsAt.append(mx &- Int64(bitPattern: dt)); usedAt.append(usedAt[j - 1] + Int(du))
        }
        guard r.isAtEnd else { return .damaged("\(r.remaining) bytes after the last checkpoint") }
        // The last checkpoint is the block's end: every stream read, every string used, the header's max.
        for st in 1..<PayloadStream.count where cursorAt[m * streams + st - 1] != streamEnd[st] {
            return .damaged("the last checkpoint does not end stream \(st)")
        }
        guard usedAt[m] == stringCount, maxAt[m] == maxTs else { return .damaged("the last checkpoint is not the block's end") }
        // Marks are a chain of deltas too: the first is where the table starts, and the last
        // group must end where the table ends.
        if let last = marks.last {
            guard marks[0] == h.offset else { return .damaged("the first string mark is not the table's start") }
            var o = last
            for _ in 0..<(stringCount - (marks.count - 1) * stringsPerMark) {
                guard let next = skipString(payload, at: o, end: tableEnd) else { return .damaged("the last string mark") }
                o = next
            }
            guard o == tableEnd else { return .damaged("the last string mark's group does not end the table") }
            verifiedGroups.insert(marks.count - 1)
        } else if tableEnd != h.offset {
            return .damaged("no strings, but the table does not end where it starts")
        }
        return nil
    }

    /// String `s`'s text, through its mark; its mark's group is checked to end at the next mark.
    mutating func text(_ s: UInt32) -> String? {
        if let known = strings[s] { return known }
        let i = Int(s)
        guard i < stringCount else { return nil }
        let g = i / stringsPerMark
        if !verifiedGroups.contains(g) {
            var o = marks[g]
            for _ in 0..<min(stringsPerMark, stringCount - g * stringsPerMark) {
                guard let next = skipString(payload, at: o, end: tableEnd) else { return nil }
                o = next
            }
            guard o == (g + 1 < marks.count ? marks[g + 1] : tableEnd) else { return nil }
            verifiedGroups.insert(g)
        }
        var o = marks[g]
        for _ in 0..<(i - g * stringsPerMark) {
            guard let next = skipString(payload, at: o, end: tableEnd) else { return nil }
            o = next
        }
        guard let t = withStringText(payload, at: o, end: tableEnd, { String(decoding: $0, as: UTF8.self) }) else { return nil }
        strings[s] = t
        return t
    }

    mutating func isTrusted(_ s: UInt32) -> Bool {
        guard let token else { return false }
        if let known = trusted[s] { return known }
        guard let t = text(s) else { return false }
        let same = t.utf8.elementsEqual(token)
        trusted[s] = same
        return same
    }

    mutating func run(rows: [Int], record: UnsafeRawBufferPointer, maxTs: Int64) -> CheckpointedRows {
        if let problem = parse(record, maxTs: maxTs) { return problem }
        for (k, row) in rows.enumerated() where row < 0 || row >= n || (k > 0 && rows[k - 1] >= row) {
            return .unresolvable("rows must be ascending and below the block's \(n) events")
        }
        let streams = PayloadStream.count - 1
        let fieldCount = StringField.count
        let stringTotal = UInt64(stringCount)
        // Raw buffers, as in `RowWalk.run`: uniqueness checks per array write were most of a walk.
        // Slots: per string used as a token (slot number + 1; 0 = none), at most one per walked event.
        let walkedMax = Swift.min(n, Set(rows.map { $0 / every }).count * every)
        let cursors = UnsafeMutableBufferPointer<ByteCursor>.allocate(capacity: PayloadStream.count)
        cursors.initialize(repeating: ByteCursor(payload, offset: 0, end: 0))
        let slotOf = UnsafeMutableBufferPointer<Int32>.allocate(capacity: Swift.max(1, stringCount))
        slotOf.initialize(repeating: 0)
        let slotRow = UnsafeMutableBufferPointer<Int>.allocate(capacity: Swift.max(1, walkedMax))
        let slotPresence = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: Swift.max(1, walkedMax))
        let slotKnown = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: Swift.max(1, walkedMax))
        let slotRefs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: Swift.max(1, walkedMax * fieldCount))
        let refs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: fieldCount)
        refs.initialize(repeating: 0)
        defer {
            cursors.deallocate(); slotOf.deallocate(); slotRow.deallocate(); slotPresence.deallocate()
            slotKnown.deallocate(); slotRefs.deallocate(); refs.deallocate()
        }
        var slotCount = 0
        var events = [Event](), throughs = [Int64]()
        events.reserveCapacity(rows.count); throughs.reserveCapacity(rows.count)
        var minTs = Int64.max, maxSeen = Int64.min
        var attrPairs = [UInt32]()

        var next = 0
        var walkedTo = -1
        var runStart = 0
        var used = 0
        var previousTs: Int64 = 0
        var runningMax = Int64.min
        while next < rows.count {
            let j = rows[next] / every
            let lo = j * every, hi = min(lo + every, n)
            if lo != walkedTo {
                cursors[0] = ByteCursor(payload, offset: streamStart[0] + lo, end: streamEnd[0])
                for st in 1..<PayloadStream.count {
                    cursors[st] = ByteCursor(payload, offset: cursorAt[j * streams + st - 1], end: streamEnd[st])
                }
                used = usedAt[j]; previousTs = tsAt[j]; runningMax = maxAt[j]
                runStart = lo
            }
            for i in lo..<hi {
                let wanted = next < rows.count && rows[next] == i
                guard let rawType = cursors[PayloadStream.types].byte(), let type = EventType(rawValue: rawType) else { return .damaged("event \(i): type") }
                guard let p64 = cursors[PayloadStream.presence].varint(), p64 <= UInt64(PresenceBit.all) else { return .damaged("event \(i): presence") }
                let p = UInt32(p64)
                let usedAtStart = used
                var inherit: UInt32 = 0
                var base = -1
                var baseUsable = false
                var known: UInt32 = 0
                var tokenRef = UInt32.max
                if p & 1 != 0 {
                    guard let ref = cursors[PayloadStream.firstString].varint(), ref < stringTotal else { return .damaged("event \(i): token reference") }
                    if ref == UInt64(used) { used += 1 } else if ref > UInt64(used) { return .damaged("event \(i): strings out of first-use order") }
                    tokenRef = UInt32(ref)
                    refs[0] = tokenRef
                    known = 1
                    let s = Int(ref)
                    let hasBase = s < usedAtStart && (exceptions[tokenRef].map { $0 < i } ?? true)
                    if hasBase {
                        guard let inh = cursors[PayloadStream.inherit].varint(), inh & ~UInt64(p) == 0, inh & 1 == 0 else { return .damaged("event \(i): inherit bits") }
                        inherit = UInt32(inh)
                        let k = Int(slotOf[s]) - 1
                        if k >= 0 {
                            base = k
                            baseUsable = slotRow[k] >= runStart || (inherit != 0 && wanted && isTrusted(tokenRef))
                        }
                    }
                }
                var fields = p & 0x1FFFE
                while fields != 0 {
                    let f = fields.trailingZeroBitCount
                    let bit = UInt32(1) << UInt32(f)
                    fields &= fields - 1
                    if inherit & bit != 0 {
                        if baseUsable {
                            guard slotPresence[base] & bit != 0 else { return .damaged("event \(i): inherits an absent field") }
                            if slotKnown[base] & bit != 0 { refs[f] = slotRefs[base * fieldCount + f]; known |= bit }
                        }
                    } else {
                        guard let r = cursors[PayloadStream.firstString + f].varint(), r < stringTotal else { return .damaged("event \(i): string reference") }
                        if r == UInt64(used) { used += 1 } else if r > UInt64(used) { return .damaged("event \(i): strings out of first-use order") }
                        refs[f] = UInt32(r)
                        known |= bit
                    }
                }
                guard let delta = cursors[PayloadStream.ts].varint() else { return .damaged("event \(i): ts") }
                let t = previousTs &+ unzigzag(delta)
                previousTs = t
                runningMax = max(runningMax, t)
                minTs = min(minTs, t); maxSeen = max(maxSeen, t)
                var exp: Int64 = 0, status = 0, weight = 0
                if wanted { attrPairs.removeAll(keepingCapacity: true) }
                if p & PresenceBit.exp != 0 {
                    guard let d = cursors[PayloadStream.exp].varint() else { return .damaged("event \(i): exp") }
                    exp = t &+ unzigzag(d)
                }
                if p & PresenceBit.status != 0 {
                    guard let v = cursors[PayloadStream.status].varint(), v <= UInt64(PayloadLimits.statusMax) else { return .damaged("event \(i): status") }
                    status = Int(v)
                }
                if p & PresenceBit.weight != 0 {
                    guard let w = cursors[PayloadStream.weight].varint(), w <= UInt64(PayloadLimits.weightMax) else { return .damaged("event \(i): weight") }
                    weight = Int(w)
                }
                if p & PresenceBit.attrs != 0 {
                    guard let pairs = cursors[PayloadStream.attrs].varint(), pairs >= 1, pairs <= UInt64(PayloadLimits.attrsPerEventMax) else {
                        return .damaged("event \(i): attribute count")
                    }
                    for _ in 0..<(Int(pairs) * 2) {
                        guard let r = cursors[PayloadStream.attrs].varint(), r < stringTotal else { return .damaged("event \(i): attribute reference") }
                        if r == UInt64(used) { used += 1 } else if r > UInt64(used) { return .damaged("event \(i): strings out of first-use order") }
                        if wanted { attrPairs.append(UInt32(r)) }
                    }
                }
                if tokenRef != UInt32.max {
                    var k = Int(slotOf[Int(tokenRef)]) - 1
                    if k < 0 {
                        guard slotCount < walkedMax else { return .damaged("more tokens than walked events") }
                        k = slotCount
                        slotCount += 1
                        slotOf[Int(tokenRef)] = Int32(k + 1)
                    }
                    slotRow[k] = i; slotPresence[k] = p; slotKnown[k] = known
                    var present = p & 0x1FFFF & known
                    while present != 0 {
                        let f = present.trailingZeroBitCount
                        present &= present - 1
                        slotRefs[k * fieldCount + f] = refs[f]
                    }
                }
                if wanted {
                    next += 1
                    guard known & p & 0x1FFFF == p & 0x1FFFF else {
                        return .unresolvable("row \(i) inherits from an event of its token this walk did not see")
                    }
                    var e = Event(type: type, ts: t)
                    var present = p & 0x1FFFF
                    while present != 0 {
                        let f = present.trailingZeroBitCount
                        present &= present - 1
                        guard let text = text(refs[f]) else { return .damaged("row \(i): string \(refs[f]) is not where the marks say") }
                        StringField(rawValue: f)!.set(text, in: &e)
                    }
                    if p & PresenceBit.exp != 0 { e.exp = exp }
                    if p & PresenceBit.status != 0 { e.status = status }
                    if p & PresenceBit.weight != 0 { e.weight = weight }
                    var a = 0
                    while a + 1 < attrPairs.count {
                        guard let key = text(attrPairs[a]), let value = text(attrPairs[a + 1]) else { return .damaged("row \(i): attribute strings") }
                        e.attrs[key] = value
                        a += 2
                    }
                    events.append(e)
                    throughs.append(runningMax)
                }
            }
            // The walk must arrive exactly at the next checkpoint.
            let jn = j + 1
            guard cursors[0].offset == streamStart[0] + hi, previousTs == tsAt[jn], runningMax == maxAt[jn], used == usedAt[jn] else {
                return .damaged("the walk from checkpoint \(j) does not arrive at checkpoint \(jn)")
            }
            for st in 1..<PayloadStream.count where cursors[st].offset != cursorAt[jn * streams + st - 1] {
                return .damaged("the walk from checkpoint \(j) does not arrive at checkpoint \(jn) (stream \(st))")
            }
            walkedTo = hi
        }
        return .rows(BlockRows(count: n, minTs: minTs, maxTs: maxSeen, rows: rows, events: events, maxTsThrough: throughs))
    }
}
