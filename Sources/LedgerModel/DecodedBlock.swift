/// The events of one block in columns: fixed-width arrays plus the block's string table. Decoding
/// makes no per-event allocation; `event(at:)` builds an `Event` only when one is asked for, and
/// filters compare string numbers instead of strings.
public struct DecodedBlock: Sendable {
    public let count: Int
    public let strings: [String]
    public let types: [EventType]
    public let ts: [Int64]
    public let presence: [UInt32]
    /// `count * StringField.count` string numbers; `UInt32.max` where the field is absent.
    public let refs: [UInt32]
    public let exp: [Int64]
    public let status: [Int32]
    public let weight: [Int32]
    /// Event i's attrs are pairs `attrRefs[attrStart[i] ..< attrStart[i + 1]]` (key, value, key, ...).
    public let attrStart: [UInt32]
    public let attrRefs: [UInt32]

    @inline(__always) public func ref(_ index: Int, _ field: StringField) -> UInt32? {
        let r = refs[index * StringField.count + field.rawValue]
        return r == UInt32.max ? nil : r
    }

    @inline(__always) public func string(_ index: Int, _ field: StringField) -> String? {
        ref(index, field).map { strings[Int($0)] }
    }

    /// - Returns: the number of `value` in this block's string table, nil when no event uses it.
    public func stringNumber(of value: String) -> UInt32? {
        strings.firstIndex(of: value).map { UInt32($0) }
    }

    public func event(at i: Int) -> Event {
        var e = Event(type: types[i], ts: ts[i])
        let base = i * StringField.count
        for f in 0..<StringField.count {
            let r = refs[base + f]
            if r != UInt32.max { StringField(rawValue: f)!.set(strings[Int(r)], in: &e) }
        }
        let p = presence[i]
        if p & PresenceBit.exp != 0 { e.exp = exp[i] }
        if p & PresenceBit.status != 0 { e.status = Int(status[i]) }
        if p & PresenceBit.weight != 0 { e.weight = Int(weight[i]) }
        if p & PresenceBit.attrs != 0 {
            var j = Int(attrStart[i])
            let end = Int(attrStart[i + 1])
            while j < end {
                e.attrs[strings[Int(attrRefs[j])]] = strings[Int(attrRefs[j + 1])]
                j += 2
            }
        }
        return e
    }

    public var events: [Event] { (0..<count).map { event(at: $0) } }
}

public enum BlockPayloadDecoder {
    /// Upper bound on events per block a decoder accepts, so a hostile count cannot make it
    /// allocate without bound.
    public static let eventsMax = 1 << 20

    /// Decodes a payload produced by `BlockPayloadEncoder`.
    /// - Throws: `BlockPayloadError` naming the payload offset of the first inconsistency.
    public static func decode(_ payload: UnsafeRawBufferPointer) throws(BlockPayloadError) -> DecodedBlock {
        var c = ByteCursor(payload)
        func fail(_ reason: String) -> BlockPayloadError { BlockPayloadError(offset: c.offset, reason: reason) }

        guard let eventCount64 = c.varint(), eventCount64 <= UInt64(eventsMax) else { throw fail("bad event count") }
        let n = Int(eventCount64)
        guard let stringCount64 = c.varint(), stringCount64 <= UInt64(payload.count) else { throw fail("bad string count") }
        var strings = [String]()
        strings.reserveCapacity(Int(stringCount64))
        for _ in 0..<Int(stringCount64) {
            guard let kind = c.byte() else { throw fail("string table truncated") }
            switch kind {
            case StringKind.raw:
                guard let length = c.varint(), length <= UInt64(c.remaining), let bytes = c.bytes(Int(length)) else {
                    throw fail("string length runs past the payload")
                }
                strings.append(String(decoding: bytes, as: UTF8.self))
            case StringKind.uuid:
                guard let bytes = c.bytes(16) else { throw fail("string table truncated") }
                strings.append(StringPacking.unpackUUID(bytes))
            case StringKind.sha256Fingerprint:
                guard let bytes = c.bytes(32) else { throw fail("string table truncated") }
                strings.append(StringPacking.unpackFingerprint(bytes))
            case StringKind.base64URL128:
                guard let bytes = c.bytes(16) else { throw fail("string table truncated") }
                strings.append(StringPacking.unpackBase64URL128(bytes))
            default:
                throw fail("unknown string kind \(kind)")
            }
        }
        guard let streamCount = c.varint(), streamCount == UInt64(PayloadStream.count) else {
            throw fail("expected \(PayloadStream.count) streams")
        }
        var streams = [ByteCursor]()
        streams.reserveCapacity(PayloadStream.count)
        var lengths = [Int]()
        for _ in 0..<PayloadStream.count {
            guard let length = c.varint(), length <= UInt64(payload.count) else { throw fail("bad stream length") }
            lengths.append(Int(length))
        }
        // Every event has exactly one type byte. Checking that here bounds the columns below by
        // the payload's size: a forged count cannot make a few bytes allocate a hundred megabytes.
        guard lengths[PayloadStream.types] == n else {
            throw fail("\(n) events but \(lengths[PayloadStream.types]) type bytes")
        }
        var start = c.offset
        for length in lengths {
            guard length <= payload.count - start else { throw fail("streams run past the payload") }
            streams.append(ByteCursor(payload, offset: start, end: start + length))
            start += length
        }
        guard start == payload.count else {
            throw BlockPayloadError(offset: start, reason: "\(payload.count - start) bytes after the last stream")
        }

        let stringCount = UInt32(strings.count)
        var types = [EventType](repeating: .validated, count: n)
        var ts = [Int64](repeating: 0, count: n)
        var presenceColumn = [UInt32](repeating: 0, count: n)
        var refs = [UInt32](repeating: UInt32.max, count: n * StringField.count)
        var exp = [Int64](repeating: 0, count: n)
        var status = [Int32](repeating: 0, count: n)
        var weight = [Int32](repeating: 0, count: n)
        var attrStart = [UInt32](repeating: 0, count: n + 1)
        var attrRefs = [UInt32]()
        var lastEventOfToken = [Int32](repeating: 0, count: strings.count)

        // The hot loop works on raw pointers into preallocated columns: array subscripts with
        // uniqueness and bounds checks per field were most of the decode time.
        let cursors = UnsafeMutableBufferPointer<ByteCursor>.allocate(capacity: PayloadStream.count)
        _ = cursors.initialize(from: streams)
        defer { cursors.deallocate() }
        func streamError(_ stream: Int, _ reason: String) -> BlockPayloadError {
            BlockPayloadError(offset: cursors[stream].offset, reason: "stream \(stream): \(reason)")
        }
        try types.withUnsafeMutableBufferPointer { (typesOut) throws(BlockPayloadError) in
        try ts.withUnsafeMutableBufferPointer { (tsOut) throws(BlockPayloadError) in
        try presenceColumn.withUnsafeMutableBufferPointer { (presenceOut) throws(BlockPayloadError) in
        try refs.withUnsafeMutableBufferPointer { (refsOut) throws(BlockPayloadError) in
        try lastEventOfToken.withUnsafeMutableBufferPointer { (lastOfToken) throws(BlockPayloadError) in
            var previousTs: Int64 = 0
            for i in 0..<n {
                guard let rawType = cursors[PayloadStream.types].byte(), let type = EventType(rawValue: rawType) else {
                    throw streamError(PayloadStream.types, "event \(i): missing or unknown type")
                }
                typesOut[i] = type
                guard let p64 = cursors[PayloadStream.presence].varint(), p64 <= UInt64(PresenceBit.all) else {
                    throw streamError(PayloadStream.presence, "event \(i): bad presence bits")
                }
                let p = UInt32(p64)
                presenceOut[i] = p
                let base = i * StringField.count
                var inherit: UInt32 = 0
                var previousBase = -1
                if p & 1 != 0 {
                    guard let tokenRef = cursors[PayloadStream.firstString].varint(), tokenRef < UInt64(stringCount) else {
                        throw streamError(PayloadStream.firstString, "event \(i): bad token reference")
                    }
                    refsOut[base] = UInt32(tokenRef)
                    let previous = Int(lastOfToken[Int(tokenRef)]) - 1
                    if previous >= 0 {
                        guard let inh = cursors[PayloadStream.inherit].varint(), inh & ~UInt64(p) == 0, inh & 1 == 0 else {
                            throw streamError(PayloadStream.inherit, "event \(i): bad inherit bits")
                        }
                        inherit = UInt32(inh)
                        previousBase = previous * StringField.count
                    }
                    lastOfToken[Int(tokenRef)] = Int32(i + 1)
                }
                var fields = p & 0x1FFFE
                while fields != 0 {
                    let f = fields.trailingZeroBitCount
                    let bit = UInt32(1) << UInt32(f)
                    fields &= fields - 1
                    if inherit & bit != 0 {
                        let r = refsOut[previousBase + f]
                        guard r != UInt32.max else { throw streamError(PayloadStream.inherit, "event \(i): inherits an absent field") }
                        refsOut[base + f] = r
                    } else {
                        guard let r = cursors[PayloadStream.firstString + f].varint(), r < UInt64(stringCount) else {
                            throw streamError(PayloadStream.firstString + f, "event \(i): bad string reference")
                        }
                        refsOut[base + f] = UInt32(truncatingIfNeeded: r)
                    }
                }
                guard let delta = cursors[PayloadStream.ts].varint() else { throw streamError(PayloadStream.ts, "event \(i): truncated") }
                let t = previousTs &+ unzigzag(delta)
                tsOut[i] = t
                previousTs = t
                if p & (PresenceBit.exp | PresenceBit.status | PresenceBit.weight | PresenceBit.attrs) != 0 {
                    if p & PresenceBit.exp != 0 {
                        guard let d = cursors[PayloadStream.exp].varint() else { throw streamError(PayloadStream.exp, "event \(i): truncated") }
                        exp[i] = t &+ unzigzag(d)
                    }
                    if p & PresenceBit.status != 0 {
                        guard let v = cursors[PayloadStream.status].varint(), v <= UInt64(PayloadLimits.statusMax) else { throw streamError(PayloadStream.status, "event \(i): bad status") }
                        status[i] = Int32(v)
                    }
                    if p & PresenceBit.weight != 0 {
                        guard let w = cursors[PayloadStream.weight].varint(), w <= UInt64(PayloadLimits.weightMax) else { throw streamError(PayloadStream.weight, "event \(i): bad weight") }
                        weight[i] = Int32(w)
                    }
                    if p & PresenceBit.attrs != 0 {
                        guard let pairs = cursors[PayloadStream.attrs].varint(), pairs >= 1, pairs <= UInt64(PayloadLimits.attrsPerEventMax) else {
                            throw streamError(PayloadStream.attrs, "event \(i): bad attribute count")
                        }
                        for _ in 0..<(Int(pairs) * 2) {
                            guard let r = cursors[PayloadStream.attrs].varint(), r < UInt64(stringCount) else {
                                throw streamError(PayloadStream.attrs, "event \(i): bad attribute reference")
                            }
                            attrRefs.append(UInt32(r))
                        }
                    }
                }
                attrStart[i + 1] = UInt32(attrRefs.count)
            }
        }
        }
        }
        }
        }
        for index in 0..<PayloadStream.count where !cursors[index].isAtEnd {
            throw streamError(index, "\(cursors[index].remaining) unread bytes")
        }
        return DecodedBlock(count: n, strings: strings, types: types, ts: ts, presence: presenceColumn, refs: refs,
                            exp: exp, status: status, weight: weight, attrStart: attrStart, attrRefs: attrRefs)
    }

    public static func decode(_ payload: [UInt8]) throws(BlockPayloadError) -> DecodedBlock {
        let result = payload.withUnsafeBytes { raw in Result { () throws(BlockPayloadError) in try decode(raw) } }
        return try result.get()
    }
}
