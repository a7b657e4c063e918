// The dense binary encoding of a block of events (FORMAT.md, "Block payload").
//
// It is canonical: the bytes are a pure function of the event sequence (strings are numbered in
// first-use order, streams are in fixed order), so the same events always hash the same and the
// chain hash can be taken over these bytes. It is dense: every distinct string is stored once per
// block; events refer to it by number; fields an event shares with the previous event of the same
// token are not repeated; and each field lives in its own stream, so the LZ4 pass that follows
// sees long runs of alike bytes.

/// String-valued event fields, in stream and presence-bit order. Never reorder: the order is
/// part of the on-disk format.
public enum StringField: Int, CaseIterable, Sendable {
    case token, tokenType, sub, clientID, iss, aud, scope, parent, gateway, release, track, route,
         method, clientIP, requestID, reason, marker

    public static let count = 17

    @inline(__always) public func value(in event: Event) -> String? {
        switch self {
        case .token: event.token
        case .tokenType: event.tokenType
        case .sub: event.sub
        case .clientID: event.clientID
        case .iss: event.iss
        case .aud: event.aud
        case .scope: event.scope
        case .parent: event.parent
        case .gateway: event.gateway
        case .release: event.release
        case .track: event.track
        case .route: event.route
        case .method: event.method
        case .clientIP: event.clientIP
        case .requestID: event.requestID
        case .reason: event.reason
        case .marker: event.marker
        }
    }

    @inline(__always) public func set(_ value: String?, in event: inout Event) {
        switch self {
        case .token: event.token = value
        case .tokenType: event.tokenType = value
        case .sub: event.sub = value
        case .clientID: event.clientID = value
        case .iss: event.iss = value
        case .aud: event.aud = value
        case .scope: event.scope = value
        case .parent: event.parent = value
        case .gateway: event.gateway = value
        case .release: event.release = value
        case .track: event.track = value
        case .route: event.route = value
        case .method: event.method = value
        case .clientIP: event.clientIP = value
        case .requestID: event.requestID = value
        case .reason: event.reason = value
        case .marker: event.marker = value
        }
    }
}

/// Presence bits beyond the 17 string fields.
public enum PresenceBit {
    public static let exp: UInt32 = 1 << 17
    public static let status: UInt32 = 1 << 18
    public static let weight: UInt32 = 1 << 19
    public static let attrs: UInt32 = 1 << 20
    public static let all: UInt32 = (1 << 21) - 1
}

/// Value ranges the payload decoder accepts. The encoder records (`invalidEvent`) any event
/// outside them, so a block is refused before it is stored rather than found unreadable later.
public enum PayloadLimits {
    public static let statusMax = 999
    public static let weightMax = 100
    public static let attrsPerEventMax = 1024
}

public struct BlockPayloadError: Error, CustomStringConvertible, Sendable, Equatable {
    public let offset: Int
    public let reason: String
    public init(offset: Int, reason: String) { self.offset = offset; self.reason = reason }
    public var description: String { "payload byte \(offset): \(reason)" }
}

/// Stream numbers inside a payload (FORMAT.md).
enum PayloadStream {
    static let types = 0
    static let presence = 1
    static let inherit = 2
    static let ts = 3
    static let firstString = 4
    static let exp = firstString + StringField.count   // 21
    static let status = exp + 1                        // 22
    static let weight = exp + 2                        // 23
    static let attrs = exp + 3                         // 24
    static let count = exp + 4                         // 25
}

/// String table entry kinds: common token-id shapes are stored as their bytes, not their text.
enum StringKind {
    static let raw: UInt8 = 0
    static let uuid: UInt8 = 1            // 36-char lowercase 8-4-4-4-12 hex -> 16 bytes
    static let sha256Fingerprint: UInt8 = 2 // "sha256:" + 64 lowercase hex -> 32 bytes
    static let base64URL128: UInt8 = 3    // 22 canonical base64url chars -> 16 bytes
}

/// The encoder's per-block state, all in raw memory reached through one pointer: the hot loop
/// then has no array uniqueness or bounds checks, no retains and no exclusivity checks (the
/// state is not a class property). `EncoderStorage` owns it.
struct EncoderState {
    var interner: StringInterner
    /// Per string field (and attrs, at `StringField.count`): the last string number it used.
    var lastIDs: UnsafeMutablePointer<UInt32>
    /// Per event, the reference of each string field (UInt32.max when absent).
    var refs: RawVec<UInt32>
    /// Per string id: the last event (index + 1, 0 = none) whose token was that string.
    var lastEventOfToken: RawVec<Int32>
    var streams: UnsafeMutablePointer<RawVec<UInt8>>
    /// The columns of a `DecodedBlock`, kept as events are appended when asked for, so a server
    /// can hand its projection and subscribers the block it just encoded without decoding it
    /// again or holding an `Event` per event.
    let keepColumns: Bool
    var types: RawVec<UInt8>
    var ts: RawVec<Int64>
    var presence: RawVec<UInt32>
    var exp: RawVec<Int64>
    var status: RawVec<Int32>
    var weight: RawVec<Int32>
    var attrStart: RawVec<UInt32>
    var attrRefs: RawVec<UInt32>

    init(expectedEvents: Int, keepColumns: Bool) {
        interner = StringInterner(capacity: max(64, expectedEvents / 2))
        lastIDs = .allocate(capacity: StringField.count + 1)
        lastIDs.initialize(repeating: UInt32.max, count: StringField.count + 1)
        refs = RawVec(capacity: expectedEvents * StringField.count)
        lastEventOfToken = RawVec(capacity: max(64, expectedEvents / 2))
        streams = .allocate(capacity: PayloadStream.count)
        for i in 0..<PayloadStream.count { (streams + i).initialize(to: RawVec(capacity: max(64, expectedEvents))) }
        self.keepColumns = keepColumns
        let c = keepColumns ? expectedEvents : 0
        types = RawVec(capacity: c); ts = RawVec(capacity: c); presence = RawVec(capacity: c); exp = RawVec(capacity: c)
        status = RawVec(capacity: c); weight = RawVec(capacity: c); attrStart = RawVec(capacity: c + 1); attrRefs = RawVec(capacity: 0)
        if keepColumns { attrStart.append(0) }
    }

    func deallocate() {
        interner.deallocate()
        lastIDs.deallocate()
        refs.deallocate()
        lastEventOfToken.deallocate()
        for i in 0..<PayloadStream.count { streams[i].deallocate() }
        streams.deallocate()
        types.deallocate(); ts.deallocate(); presence.deallocate(); exp.deallocate()
        status.deallocate(); weight.deallocate(); attrStart.deallocate(); attrRefs.deallocate()
    }
}

final class EncoderStorage {
    let state: UnsafeMutablePointer<EncoderState>

    init(expectedEvents: Int, keepColumns: Bool) {
        state = .allocate(capacity: 1)
        state.initialize(to: EncoderState(expectedEvents: expectedEvents, keepColumns: keepColumns))
    }

    deinit {
        state.pointee.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }
}

/// Builds the payload of one block. Feed events in sequence order, then `finish()`.
/// Copies of an encoder share its block state (as they always shared its streams): keep one.
public struct BlockPayloadEncoder {
    private let storage: EncoderStorage
    /// `storage.state`, kept here so the hot path never touches the class.
    private let s: UnsafeMutablePointer<EncoderState>
    private var previousTs: Int64 = 0
    public private(set) var count = 0
    public private(set) var minTs: Int64 = .max
    public private(set) var maxTs: Int64 = .min
    /// Why the payload must not be stored: the first event with a value the decoder refuses
    /// (nil when every event is encodable).
    public private(set) var invalidEvent: String?

    /// - Parameter keepColumns: also build the `DecodedBlock` of these events (`decodedBlock()`).
    public init(expectedEvents: Int = 4096, keepColumns: Bool = false) {
        storage = EncoderStorage(expectedEvents: max(1, expectedEvents), keepColumns: keepColumns)
        s = storage.state
    }

    /// The events appended so far as a decoded block: equal to decoding `finish()`'s payload.
    /// Only for an encoder made with `keepColumns`.
    public func decodedBlock() -> DecodedBlock {
        let c = s.pointee
        guard c.keepColumns else { preconditionFailure("decodedBlock() needs an encoder made with keepColumns") }
        let types = UnsafeBufferPointer(start: c.types.base, count: c.types.count).map { EventType(rawValue: $0) ?? .validated }
        return withExtendedLifetime(storage) {
            DecodedBlock(count: count, strings: c.interner.strings, types: types, ts: c.ts.array, presence: c.presence.array,
                         refs: c.refs.array, exp: c.exp.array, status: c.status.array, weight: c.weight.array,
                         attrStart: c.attrStart.array, attrRefs: c.attrRefs.array)
        }
    }

    /// The number of `n` bytes at `p` in the string table. A field usually repeats a recent
    /// value, so the field's last string is checked before hashing.
    @inline(__always) private func intern(_ p: UnsafeRawPointer, _ n: Int, field: Int) -> UInt32 {
        let st = s
        let cachedID = st.pointee.lastIDs[field]
        if cachedID != UInt32.max && st.pointee.interner.bytesEqual(Int(cachedID), p, n) { return cachedID }
        let (id, isNew) = st.pointee.interner.intern(p, n)
        if isNew { st.pointee.lastEventOfToken.append(0) }
        st.pointee.lastIDs[field] = id
        return id
    }

    @inline(__always) private func intern(_ value: String, field: Int) -> UInt32 {
        if let id = value.utf8.withContiguousStorageIfAvailable({ u in
            intern(UnsafeRawPointer(u.baseAddress ?? UnsafePointer(bitPattern: 1)!), u.count, field: field)
        }) { return id }
        var copy = value
        return copy.withUTF8 { u in intern(UnsafeRawPointer(u.baseAddress ?? UnsafePointer(bitPattern: 1)!), u.count, field: field) }
    }

    /// The bytes of slot f (see `append(_:slots:slotBits:eventHasStrings:)`).
    @inline(__always) private func slot(_ slots: UnsafePointer<Int>, _ f: Int) -> UInt32 {
        let n = slots[2 &* f &+ 1]
        guard n > 0, let p = UnsafeRawPointer(bitPattern: slots[2 &* f]) else { return intern(UnsafeRawPointer(bitPattern: 1)!, 0, field: f) }
        return intern(p, n, field: f)
    }

    /// String field f of an event that may hold Strings: the slot's bytes when `slotBits` has
    /// bit f, otherwise the event's own value.
    @inline(__always) private func field(_ f: Int, _ value: String?, _ r: UnsafeMutablePointer<UInt32>, _ presence: inout UInt32,
                                         _ slots: UnsafePointer<Int>?, _ slotBits: UInt32) {
        if slotBits & (1 << UInt32(f)) != 0, let slots {
            presence |= 1 << UInt32(f)
            r[f] = slot(slots, f)
        } else if let value {
            presence |= 1 << UInt32(f)
            r[f] = intern(value, field: f)
        } else {
            r[f] = UInt32.max
        }
    }

    /// The direct path's strings: the fields of `bits`, all in their slots. Its own function so
    /// that the lookups are inlined into this loop (the inliner gives up inside `append`).
    @inline(never)
    private func internSlots(_ r: UnsafeMutablePointer<UInt32>, _ slots: UnsafePointer<Int>, _ bits: UInt32) {
        var bits = bits
        while bits != 0 {
            let f = bits.trailingZeroBitCount
            bits &= bits &- 1
            r[f] = slot(slots, f)
        }
    }

    /// The string fields of an event that may hold Strings (kept out of line: the direct path's
    /// loop is the hot one). - Returns: their presence bits.
    @inline(never)
    private func stringFields(_ e: UnsafePointer<Event>, _ r: UnsafeMutablePointer<UInt32>, _ slots: UnsafePointer<Int>?, _ slotBits: UInt32) -> UInt32 {
        var presence: UInt32 = 0
        // Unrolled in StringField order: a switch per field showed up in profiles.
        field(0, e.pointee.token, r, &presence, slots, slotBits); field(1, e.pointee.tokenType, r, &presence, slots, slotBits)
        field(2, e.pointee.sub, r, &presence, slots, slotBits); field(3, e.pointee.clientID, r, &presence, slots, slotBits)
        field(4, e.pointee.iss, r, &presence, slots, slotBits); field(5, e.pointee.aud, r, &presence, slots, slotBits)
        field(6, e.pointee.scope, r, &presence, slots, slotBits); field(7, e.pointee.parent, r, &presence, slots, slotBits)
        field(8, e.pointee.gateway, r, &presence, slots, slotBits); field(9, e.pointee.release, r, &presence, slots, slotBits)
        field(10, e.pointee.track, r, &presence, slots, slotBits); field(11, e.pointee.route, r, &presence, slots, slotBits)
        field(12, e.pointee.method, r, &presence, slots, slotBits); field(13, e.pointee.clientIP, r, &presence, slots, slotBits)
        field(14, e.pointee.requestID, r, &presence, slots, slotBits); field(15, e.pointee.reason, r, &presence, slots, slotBits)
        field(16, e.pointee.marker, r, &presence, slots, slotBits)
        return presence
    }

    public mutating func append(_ event: Event) {
        withUnsafePointer(to: event) { append($0, slots: nil, slotBits: 0, eventHasStrings: true) }
    }

    /// Appends `event` whose string field f is, where `slotBits` has bit f, the `slots[2f + 1]`
    /// bytes at address `slots[2f]` instead of the event's own value (the NDJSON decoder's
    /// direct path: no String per field; the bytes are the line's, valid UTF-8). Without `eventHasStrings` the event's string fields
    /// are all nil and are not read.
    /// Takes the event by pointer: the direct path builds it in place and a copy (retaining
    /// every field) showed in profiles.
    mutating func append(_ e: UnsafePointer<Event>, slots: UnsafePointer<Int>?, slotBits: UInt32, eventHasStrings: Bool) {
        let st = s
        let eventIndex = count
        count &+= 1
        let ts = e.pointee.ts
        minTs = min(minTs, ts)
        maxTs = max(maxTs, ts)
        st.pointee.streams[PayloadStream.types].append(e.pointee.type.rawValue)

        var presence: UInt32 = 0
        let r = st.pointee.refs.reserve(StringField.count)
        st.pointee.refs.count &+= StringField.count
        if eventHasStrings || slots == nil {
            presence = stringFields(e, r, slots, slotBits)
        } else if let slots {
            // Every string is in the line: only the present fields are visited, in field order
            // (string numbers are given in first-use order).
            UnsafeMutableRawPointer(r).initializeMemory(as: UInt8.self, repeating: 0xFF, count: StringField.count * 4)
            presence = slotBits & (1 << UInt32(StringField.count) - 1)
            internSlots(r, slots, presence)
        }
        if e.pointee.exp != nil { presence |= PresenceBit.exp }
        if e.pointee.status != nil { presence |= PresenceBit.status }
        if e.pointee.weight != nil { presence |= PresenceBit.weight }
        let hasAttrs = eventHasStrings && !e.pointee.attrs.isEmpty
        if hasAttrs { presence |= PresenceBit.attrs }
        st.pointee.streams[PayloadStream.presence].appendVarint(UInt64(presence))

        var inherit: UInt32 = 0
        let tokenRef = r[0]
        if tokenRef != UInt32.max {
            let previous = Int(st.pointee.lastEventOfToken[Int(tokenRef)]) &- 1
            if previous >= 0 {
                let p = st.pointee.refs.base + previous &* StringField.count
                var f = 1
                while f < StringField.count {
                    if r[f] != UInt32.max && r[f] == p[f] { inherit |= 1 << UInt32(f) }
                    f &+= 1
                }
                st.pointee.streams[PayloadStream.inherit].appendVarint(UInt64(inherit))
            }
            st.pointee.lastEventOfToken[Int(tokenRef)] = Int32(truncatingIfNeeded: eventIndex &+ 1)
        }
        // Fields present and not inherited: presence bits minus inherit bits.
        var written = presence & (1 << UInt32(StringField.count) - 1) & ~inherit
        while written != 0 {
            let f = written.trailingZeroBitCount
            written &= written &- 1
            st.pointee.streams[PayloadStream.firstString &+ f].appendVarint(UInt64(r[f]))
        }

        st.pointee.streams[PayloadStream.ts].appendVarint(zigzag(ts &- previousTs))
        previousTs = ts
        if let exp = e.pointee.exp { st.pointee.streams[PayloadStream.exp].appendVarint(zigzag(exp &- ts)) }
        if invalidEvent == nil, let problem = BlockPayloadEncoder.problem(e, index: eventIndex) { invalidEvent = problem }
        if let status = e.pointee.status { st.pointee.streams[PayloadStream.status].appendVarint(UInt64(truncatingIfNeeded: status)) }
        if let weight = e.pointee.weight { st.pointee.streams[PayloadStream.weight].appendVarint(UInt64(truncatingIfNeeded: weight)) }
        if hasAttrs {
            let attrs = e.pointee.attrs
            st.pointee.streams[PayloadStream.attrs].appendVarint(UInt64(attrs.count))
            for key in attrs.keys.sorted(by: utf8Ascending) {
                let k = intern(key, field: StringField.count)
                let v = intern(attrs[key] ?? "", field: StringField.count)
                st.pointee.streams[PayloadStream.attrs].appendVarint(UInt64(k))
                st.pointee.streams[PayloadStream.attrs].appendVarint(UInt64(v))
                if st.pointee.keepColumns { st.pointee.attrRefs.append(k); st.pointee.attrRefs.append(v) }
            }
        }
        if st.pointee.keepColumns {
            st.pointee.types.append(e.pointee.type.rawValue)
            st.pointee.ts.append(ts)
            st.pointee.presence.append(presence)
            // Absent values are 0, as the decoder leaves them.
            st.pointee.exp.append(e.pointee.exp ?? 0)
            st.pointee.status.append(Int32(truncatingIfNeeded: e.pointee.status ?? 0))
            st.pointee.weight.append(Int32(truncatingIfNeeded: e.pointee.weight ?? 0))
            st.pointee.attrStart.append(UInt32(truncatingIfNeeded: st.pointee.attrRefs.count))
        }
    }

    /// Why `event` cannot be stored in a block (a value the payload cannot hold), or nil.
    public static func unencodable(_ event: Event) -> String? { problem(event, index: 0).map { String($0.dropFirst("event 0: ".count)) } }

    @inline(__always)
    static func problem(_ e: UnsafePointer<Event>, index: Int) -> String? {
        if let status = e.pointee.status, status < 0 || status > PayloadLimits.statusMax { return problemText(e, index: index) }
        if let weight = e.pointee.weight, weight < 0 || weight > PayloadLimits.weightMax { return problemText(e, index: index) }
        if e.pointee.attrs.count > PayloadLimits.attrsPerEventMax { return problemText(e, index: index) }
        return nil
    }

    @inline(never)
    static func problemText(_ e: UnsafePointer<Event>, index: Int) -> String? {
        if let status = e.pointee.status, !(0...PayloadLimits.statusMax).contains(status) {
            return "event \(index): status \(status) is outside 0...\(PayloadLimits.statusMax)"
        }
        if let weight = e.pointee.weight, !(0...PayloadLimits.weightMax).contains(weight) {
            return "event \(index): weight \(weight) is outside 0...\(PayloadLimits.weightMax)"
        }
        if e.pointee.attrs.count > PayloadLimits.attrsPerEventMax {
            return "event \(index): \(e.pointee.attrs.count) attrs, more than \(PayloadLimits.attrsPerEventMax)"
        }
        return nil
    }

    private static func problem(_ event: Event, index: Int) -> String? {
        withUnsafePointer(to: event) { problem($0, index: index) }
    }

    /// The finished payload bytes. The encoder is spent afterwards.
    public func finish() -> [UInt8] {
        let c = s.pointee
        let stringCount = c.interner.count
        // An upper bound: varints of at most 10 bytes, each string at most kind + length + bytes.
        var total = 40 + PayloadStream.count * 10
        for i in 0..<PayloadStream.count { total += c.streams[i].count }
        for id in 0..<stringCount { total += c.interner.bytes(id).count + 11 }
        return withExtendedLifetime(storage) {
            [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
                let start = buffer.baseAddress!
                var o = start
                writeVarint(UInt64(count), &o)
                writeVarint(UInt64(stringCount), &o)
                for id in 0..<stringCount { BlockPayloadEncoder.putString(c.interner.bytes(id), &o) }
                writeVarint(UInt64(PayloadStream.count), &o)
                for i in 0..<PayloadStream.count { writeVarint(UInt64(c.streams[i].count), &o) }
                for i in 0..<PayloadStream.count {
                    let n = c.streams[i].count
                    if n > 0 { o.update(from: c.streams[i].base, count: n) }
                    o += n
                }
                initialized = o - start
            }
        }
    }

    /// Writes one string table entry; `o` has room for kind + 10-byte length + the bytes.
    @inline(__always) static func putString(_ bytes: UnsafeRawBufferPointer, _ o: inout UnsafeMutablePointer<UInt8>) {
        let n = bytes.count
        if n == 22, StringPacking.packBase64URL128(bytes, into: o + 1) {
            o.pointee = StringKind.base64URL128; o += 17
        } else if n == 36, StringPacking.packUUID(bytes, into: o + 1) {
            o.pointee = StringKind.uuid; o += 17
        } else if n == 71, StringPacking.packFingerprint(bytes, into: o + 1) {
            o.pointee = StringKind.sha256Fingerprint; o += 33
        } else {
            o.pointee = StringKind.raw
            o += 1
            writeVarint(UInt64(n), &o)
            if n > 0 { UnsafeMutableRawPointer(o).copyMemory(from: bytes.baseAddress!, byteCount: n) }
            o += n
        }
    }

    static func appendString(_ value: String, to out: inout [UInt8]) {
        var copy = value
        copy.withUTF8 { u in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: u.count + 11) { buffer in
                var o = buffer.baseAddress!
                putString(UnsafeRawBufferPointer(u), &o)
                out.append(contentsOf: UnsafeBufferPointer(start: buffer.baseAddress!, count: o - buffer.baseAddress!))
            }
        }
    }
}
