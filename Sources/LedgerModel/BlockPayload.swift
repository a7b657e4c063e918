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

/// Builds the payload of one block. Feed events in sequence order, then `finish()`.
public struct BlockPayloadEncoder {
    private var interner: StringInterner
    private var lastWords = [StringRepresentation](repeating: .none, count: StringField.count + 1)
    private var lastIDs = [UInt32](repeating: UInt32.max, count: StringField.count + 1)
    private let streams: StreamBuffers
    /// Per event, the reference of each string field (UInt32.max when absent).
    private var refs: [UInt32] = []
    /// Per string id: the last event (index + 1, 0 = none) whose token was that string.
    private var lastEventOfToken: [Int32] = []
    private var previousTs: Int64 = 0
    public private(set) var count = 0
    public private(set) var minTs: Int64 = .max
    public private(set) var maxTs: Int64 = .min
    /// Why the payload must not be stored: the first event with a value the decoder refuses
    /// (nil when every event is encodable).
    public private(set) var invalidEvent: String?

    /// The columns of a `DecodedBlock`, kept as events are appended when asked for, so a server
    /// can hand its projection and subscribers the block it just encoded without decoding it
    /// again or holding an `Event` per event.
    private var columns: Columns?
    private struct Columns {
        var types: [EventType] = []
        var ts: [Int64] = []
        var presence: [UInt32] = []
        var exp: [Int64] = []
        var status: [Int32] = []
        var weight: [Int32] = []
        var attrStart: [UInt32] = [0]
        var attrRefs: [UInt32] = []

        init(capacity: Int) {
            types.reserveCapacity(capacity); ts.reserveCapacity(capacity); presence.reserveCapacity(capacity)
            exp.reserveCapacity(capacity); status.reserveCapacity(capacity); weight.reserveCapacity(capacity)
            attrStart.reserveCapacity(capacity + 1)
        }
    }

    /// - Parameter keepColumns: also build the `DecodedBlock` of these events (`decodedBlock()`).
    public init(expectedEvents: Int = 4096, keepColumns: Bool = false) {
        interner = StringInterner(capacity: max(64, expectedEvents / 2))
        streams = StreamBuffers(streams: PayloadStream.count, initialCapacity: expectedEvents)
        refs.reserveCapacity(expectedEvents * StringField.count)
        if keepColumns { columns = Columns(capacity: expectedEvents) }
    }

    /// The events appended so far as a decoded block: equal to decoding `finish()`'s payload.
    /// Only for an encoder made with `keepColumns`.
    public func decodedBlock() -> DecodedBlock {
        guard let c = columns else { preconditionFailure("decodedBlock() needs an encoder made with keepColumns") }
        return DecodedBlock(count: count, strings: interner.strings, types: c.types, ts: c.ts, presence: c.presence, refs: refs,
                            exp: c.exp, status: c.status, weight: c.weight, attrStart: c.attrStart, attrRefs: c.attrRefs)
    }

    @inline(__always) private mutating func intern(_ value: String, field: Int) -> UInt32 {
        // A field usually repeats a recent value. The cache holds the raw words of the string the
        // interner stores (alive as long as this encoder), so equal words are the same string:
        // a small string by content, a large one by identity. No hashing, no retain.
        let words = StringRepresentation(value)
        let cachedID = lastIDs[field]
        if cachedID != UInt32.max && words == lastWords[field] { return cachedID }
        let (id, isNew) = interner.intern(value)
        if isNew { lastEventOfToken.append(0) }
        lastWords[field] = interner.representations[Int(id)]
        lastIDs[field] = id
        return id
    }

    /// `intern` for a value still in the NDJSON line (see `NDJSONDecoder.decode(line:lineNumber:into:gateway:)`).
    @inline(__always) private mutating func intern(bytes: UnsafeRawBufferPointer, field: Int) -> UInt32 {
        let cachedID = lastIDs[field]
        if cachedID != UInt32.max && interner.bytesEqual(Int(cachedID), bytes) { return cachedID }
        let (id, isNew) = interner.intern(bytes: bytes)
        if isNew { lastEventOfToken.append(0) }
        lastWords[field] = interner.representations[Int(id)]
        lastIDs[field] = id
        return id
    }

    @inline(__always) private mutating func field(_ f: Int, _ value: String?, _ presence: inout UInt32, _ line: UnsafePointer<UInt8>?, _ slots: UnsafePointer<Int>?) {
        if let slots, let line, slots[2 &* f &+ 1] >= 0 {
            presence |= 1 << UInt32(f)
            refs.append(intern(bytes: UnsafeRawBufferPointer(start: line + slots[2 &* f], count: slots[2 &* f &+ 1]), field: f))
        } else if let value {
            presence |= 1 << UInt32(f)
            refs.append(intern(value, field: f))
        } else {
            refs.append(UInt32.max)
        }
    }

    public mutating func append(_ event: Event) {
        withUnsafePointer(to: event) { append($0, line: nil, slots: nil) }
    }

    /// Appends `event` whose string field f is, where `slots[2f + 1] >= 0`, the `slots[2f + 1]`
    /// bytes of `line` at `slots[2f]` instead of the event's own value (the NDJSON decoder's
    /// direct path: no String per field).
    /// Takes the event by pointer: the direct path builds it in place and a copy (retaining
    /// every field) showed in profiles.
    mutating func append(_ e: UnsafePointer<Event>, line: UnsafePointer<UInt8>?, slots: UnsafePointer<Int>?) {
        let eventIndex = count
        count += 1
        minTs = min(minTs, e.pointee.ts)
        maxTs = max(maxTs, e.pointee.ts)
        streams.appendByte(PayloadStream.types, e.pointee.type.rawValue)

        var presence: UInt32 = 0
        let base = refs.count
        // Unrolled in StringField order: a switch per field showed up in profiles.
        field(0, e.pointee.token, &presence, line, slots); field(1, e.pointee.tokenType, &presence, line, slots)
        field(2, e.pointee.sub, &presence, line, slots); field(3, e.pointee.clientID, &presence, line, slots)
        field(4, e.pointee.iss, &presence, line, slots); field(5, e.pointee.aud, &presence, line, slots)
        field(6, e.pointee.scope, &presence, line, slots); field(7, e.pointee.parent, &presence, line, slots)
        field(8, e.pointee.gateway, &presence, line, slots); field(9, e.pointee.release, &presence, line, slots)
        field(10, e.pointee.track, &presence, line, slots); field(11, e.pointee.route, &presence, line, slots)
        field(12, e.pointee.method, &presence, line, slots); field(13, e.pointee.clientIP, &presence, line, slots)
        field(14, e.pointee.requestID, &presence, line, slots); field(15, e.pointee.reason, &presence, line, slots)
        field(16, e.pointee.marker, &presence, line, slots)
        if e.pointee.exp != nil { presence |= PresenceBit.exp }
        if e.pointee.status != nil { presence |= PresenceBit.status }
        if e.pointee.weight != nil { presence |= PresenceBit.weight }
        if !e.pointee.attrs.isEmpty { presence |= PresenceBit.attrs }
        streams.appendVarint(PayloadStream.presence, UInt64(presence))

        var inherit: UInt32 = 0
        let tokenRef = refs[base]
        if tokenRef != UInt32.max {
            let previous = Int(lastEventOfToken[Int(tokenRef)]) - 1
            if previous >= 0 {
                let previousBase = previous * StringField.count
                for f in 1..<StringField.count where refs[base + f] != UInt32.max && refs[base + f] == refs[previousBase + f] {
                    inherit |= 1 << UInt32(f)
                }
                streams.appendVarint(PayloadStream.inherit, UInt64(inherit))
            }
            lastEventOfToken[Int(tokenRef)] = Int32(eventIndex + 1)
        }
        for f in 0..<StringField.count where refs[base + f] != UInt32.max && inherit & (1 << UInt32(f)) == 0 {
            streams.appendVarint(PayloadStream.firstString + f, UInt64(refs[base + f]))
        }

        streams.appendVarint(PayloadStream.ts, zigzag(e.pointee.ts &- previousTs))
        previousTs = e.pointee.ts
        if let exp = e.pointee.exp { streams.appendVarint(PayloadStream.exp, zigzag(exp &- e.pointee.ts)) }
        if invalidEvent == nil { invalidEvent = BlockPayloadEncoder.problem(e, index: eventIndex) }
        if let status = e.pointee.status { streams.appendVarint(PayloadStream.status, UInt64(truncatingIfNeeded: status)) }
        if let weight = e.pointee.weight { streams.appendVarint(PayloadStream.weight, UInt64(truncatingIfNeeded: weight)) }
        if !e.pointee.attrs.isEmpty {
            streams.appendVarint(PayloadStream.attrs, UInt64(e.pointee.attrs.count))
            for key in e.pointee.attrs.keys.sorted(by: utf8Ascending) {
                let k = intern(key, field: StringField.count)
                let v = intern(e.pointee.attrs[key]!, field: StringField.count)
                streams.appendVarint(PayloadStream.attrs, UInt64(k))
                streams.appendVarint(PayloadStream.attrs, UInt64(v))
                if columns != nil { columns!.attrRefs.append(k); columns!.attrRefs.append(v) }
            }
        }
        if columns != nil {
            columns!.types.append(e.pointee.type)
            columns!.ts.append(e.pointee.ts)
            columns!.presence.append(presence)
            // Absent values are 0, as the decoder leaves them.
            columns!.exp.append(e.pointee.exp ?? 0)
            columns!.status.append(Int32(truncatingIfNeeded: e.pointee.status ?? 0))
            columns!.weight.append(Int32(truncatingIfNeeded: e.pointee.weight ?? 0))
            columns!.attrStart.append(UInt32(columns!.attrRefs.count))
        }
    }

    /// Why `event` cannot be stored in a block (a value the payload cannot hold), or nil.
    public static func unencodable(_ event: Event) -> String? { problem(event, index: 0).map { String($0.dropFirst("event 0: ".count)) } }

    static func problem(_ e: UnsafePointer<Event>, index: Int) -> String? {
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
        var out = [UInt8]()
        var total = 16
        for i in 0..<PayloadStream.count { total += streams.count(i) }
        let strings = interner.strings
        for s in strings { total += s.utf8.count + 2 }
        out.reserveCapacity(total)
        appendVarint(UInt64(count), to: &out)
        appendVarint(UInt64(strings.count), to: &out)
        for s in strings { BlockPayloadEncoder.appendString(s, to: &out) }
        appendVarint(UInt64(PayloadStream.count), to: &out)
        for i in 0..<PayloadStream.count { appendVarint(UInt64(streams.count(i)), to: &out) }
        for i in 0..<PayloadStream.count { streams.append(stream: i, to: &out) }
        return out
    }

    static func appendString(_ value: String, to out: inout [UInt8]) {
        var copy = value
        copy.withUTF8 { u in
            let bytes = UnsafeRawBufferPointer(u)
            if let packed = StringPacking.uuid(bytes) {
                out.append(StringKind.uuid); out.append(contentsOf: packed)
            } else if let packed = StringPacking.fingerprint(bytes) {
                out.append(StringKind.sha256Fingerprint); out.append(contentsOf: packed)
            } else if let packed = StringPacking.base64URL128(bytes) {
                out.append(StringKind.base64URL128); out.append(contentsOf: packed)
            } else {
                out.append(StringKind.raw)
                appendVarint(UInt64(bytes.count), to: &out)
                out.append(contentsOf: bytes)
            }
        }
    }
}
