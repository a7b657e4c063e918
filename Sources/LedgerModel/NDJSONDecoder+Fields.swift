// Maps JSON fields of the v1 schema onto Event: key matching, per-field types and limits,
// attrs, unknown fields and the required-field rules. The rules are documented once, on
// NDJSONDecoder.

import Glibc

/// Top-level fields of the v1 schema; the raw value is the bit in the seen-fields mask.
enum NDJSONField: UInt8, CaseIterable {
    case type, ts, token, tokenType, sub, clientID, iss, aud, scope, exp, parent, gateway, release,
         track, route, method, status, clientIP, requestID, reason, marker, weight, attrs

    var name: String {
        switch self {
        case .type: "type"
        case .ts: "ts"
        case .token: "token"
        case .tokenType: "token_type"
        case .sub: "sub"
        case .clientID: "client_id"
        case .iss: "iss"
        case .aud: "aud"
        case .scope: "scope"
        case .exp: "exp"
        case .parent: "parent"
        case .gateway: "gateway"
        case .release: "release"
        case .track: "track"
        case .route: "route"
        case .method: "method"
        case .status: "status"
        case .clientIP: "client_ip"
        case .requestID: "request_id"
        case .reason: "reason"
        case .marker: "marker"
        case .weight: "weight"
        case .attrs: "attrs"
        }
    }

    @inline(__always) var bit: UInt32 { 1 &<< UInt32(rawValue) }

    static let count: UInt8 = 23

    /// The `StringField` number of one of the string fields (`stringFieldOf` without a table):
    /// the string fields are in the same order, skipping exp (9) and status (16).
    @inline(__always) var stringField: Int {
        let r = Int(rawValue)
        let f = r &- 2 &- (r > 9 ? 1 : 0) &- (r > 16 ? 1 : 0)
        assert(f == Int(NDJSONField.stringFieldOf[r]), "stringField of \(name)")
        return f
    }

    /// The `StringField` number of each field by raw value (-1: not a string field).
    static let stringFieldOf: [Int8] = allCases.map { f -> Int8 in
        switch f {
        case .token: 0
        case .tokenType: 1
        case .sub: 2
        case .clientID: 3
        case .iss: 4
        case .aud: 5
        case .scope: 6
        case .parent: 7
        case .gateway: 8
        case .release: 9
        case .track: 10
        case .route: 11
        case .method: 12
        case .clientIP: 13
        case .requestID: 14
        case .reason: 15
        case .marker: 16
        default: -1
        }
    }

    /// A perfect hash of the field names' packed bytes (see `match(lo:hi:_:)`) into 64 slots,
    /// found offline: one multiply and one compare instead of a switch whose branches the
    /// processor cannot predict from key to key.
    @inline(__always) static func slot(lo: UInt64, hi: UInt64) -> Int {
        Int(truncatingIfNeeded: ((lo &+ hi &* 0x9E37_79B9_7F4A_7C15) &* 0x1792_1E6C_8B8E_8F4F) >> 58)
    }

    /// Per slot: the name's `lo`, then its `hi | rawValue << 56`; unused slots are 0, which no
    /// key of 2 or more bytes packs to. Built from `name`, so it cannot disagree with `match`.
    nonisolated(unsafe) static let keyTable: UnsafePointer<UInt64> = {
        let table = UnsafeMutablePointer<UInt64>.allocate(capacity: 128)
        table.initialize(repeating: 0, count: 128)
        for field in allCases {
            let bytes = Array(field.name.utf8)
            var lo: UInt64 = 0, hi: UInt64 = 0
            for (k, b) in bytes.enumerated() {
                if k < 8 { lo |= UInt64(b) << UInt64(8 * k) } else { hi |= UInt64(b) << UInt64(8 * (k - 8)) }
            }
            let s = slot(lo: lo, hi: hi)
            precondition(table[2 * s] == 0 && match(lo: lo, hi: hi, bytes.count) == field, "field name hash collides")
            table[2 * s] = lo
            table[2 * s + 1] = hi | UInt64(field.rawValue) << 56
        }
        return UnsafePointer(table)
    }()

    /// String fields with no rule beyond the length limit.
    @inline(__always) static var plainStringBits: UInt32 {
        tokenType.bit | sub.bit | clientID.bit | iss.bit | aud.bit | scope.bit | gateway.bit | release.bit
            | track.bit | route.bit | method.bit | clientIP.bit | requestID.bit | reason.bit
    }

    /// Matches a key by length, then by its bytes packed little-endian into one or two words
    /// compared against constants (checked against `name` by a unit test), so no String is built.
    @inline(__always)
    static func match(_ k: UnsafePointer<UInt8>, _ n: Int) -> NDJSONField? {
        guard n >= 2 && n <= 10 else { return nil }
        var lo: UInt64 = 0
        var j = min(n, 8) &- 1
        while j >= 0 {
            lo = lo &<< 8 | UInt64(k[j])
            j &-= 1
        }
        return match(lo: lo, hi: n > 8 ? (n == 10 ? UInt64(k[8]) | UInt64(k[9]) &<< 8 : UInt64(k[8])) : 0, n)
    }

    /// As `match(_:_:)`, for a key whose first eight bytes (zero-padded past its end) are `lo`
    /// and whose ninth and tenth are `hi`, all little-endian.
    @inline(__always)
    static func match(lo: UInt64, hi: UInt64, _ n: Int) -> NDJSONField? {
        switch n {
        case 2: return lo == 0x7374 ? .ts : nil
        case 3:
            switch lo {
            case 0x627573: return .sub
            case 0x737369: return .iss
            case 0x647561: return .aud
            case 0x707865: return .exp
            default: return nil
            }
        case 4: return lo == 0x6570_7974 ? .type : nil
        case 5:
            switch lo {
            case 0x6E_656B_6F74: return .token
            case 0x65_706F_6373: return .scope
            case 0x6B_6361_7274: return .track
            case 0x65_7475_6F72: return .route
            case 0x73_7274_7461: return .attrs
            default: return nil
            }
        case 6:
            switch lo {
            case 0x746E_6572_6170: return .parent
            case 0x646F_6874_656D: return .method
            case 0x7375_7461_7473: return .status
            case 0x6E6F_7361_6572: return .reason
            case 0x7265_6B72_616D: return .marker
            case 0x7468_6769_6577: return .weight
            default: return nil
            }
        case 7:
            switch lo {
            case 0x79_6177_6574_6167: return .gateway
            case 0x65_7361_656C_6572: return .release
            default: return nil
            }
        case 9:
            guard lo == 0x695F_746E_6569_6C63 else { return nil }
            return hi == 0x64 ? .clientID : hi == 0x70 ? .clientIP : nil
        case 10:
            if lo == 0x7974_5F6E_656B_6F74 && hi == 0x6570 { return .tokenType }
            if lo == 0x5F74_7365_7571_6572 && hi == 0x6469 { return .requestID }
            return nil
        default: return nil
        }
    }
}

extension NDJSONParser {
    static var typeNames: String { EventType.allCases.map(\.name).joined(separator: ", ") }
    static var expectedTimestamp: String { "expected an integer (epoch ms) or an RFC 3339 string" }
    static var expectedInteger: String { "expected an integer" }

    /// Fills `event`, which the caller creates empty, so the large struct is built in place
    /// rather than copied out on return.
    mutating func parseEvent(into event: inout Event) throws(EventDecodeError) {
        skipWhitespace()
        guard i < end, p[i] == UInt8(ascii: "{") else { throw expected("'{' (each line holds one JSON object)", at: i) }
        i &+= 1
        var seen: UInt32 = 0

        skipWhitespace()
        if i < end && p[i] == UInt8(ascii: "}") {
            i &+= 1
        } else {
            while true {
                guard i < end, p[i] == UInt8(ascii: "\"") else { throw expected("'\"' to start a field name", at: i) }
                let keyOffset = i
                var code = knownKeyQuickly()
                var key = RawJSONString(start: 0, end: 0, hasEscapes: false)
                if code == Self.needsSlowMatch {
                    key = try scanString()
                    try expectColon()
                    code = knownFieldCode(key)
                    if code == Self.needsSlowMatch { code = try knownFieldSlowly(key)?.rawValue ?? 0xFE }
                } else {
                    try expectColon()
                }
                if code < NDJSONField.count, let field = NDJSONField(rawValue: code) {
                    guard seen & field.bit == 0 else {
                        throw fieldError(field.name, "duplicate field", at: keyOffset)
                    }
                    seen |= field.bit
                    if field.bit & NDJSONField.plainStringBits != 0 && i < end && p[i] == UInt8(ascii: "\"") {
                        // Most fields are plain strings: handled here without a call per field.
                        let valueOffset = i
                        let raw = try scanString()
                        let count = try byteCount(raw)
                        guard count <= limits.fieldBytesMax else {
                            throw fieldError(field.name, "value is \(count) bytes, over the limit of \(limits.fieldBytesMax)", at: valueOffset)
                        }
                        if let slots, !raw.hasEscapes {
                            // Direct path: the encoder takes the bytes from the line.
                            let f = field.stringField
                            slots[2 &* f] = Int(bitPattern: p + raw.start)
                            slots[2 &* f &+ 1] = count
                            slotBits |= 1 &<< UInt32(f)
                        } else {
                            storedReferences = true
                            Self.store(string(raw, count: count), field, in: &event)
                        }
                    } else {
                        try parseValue(of: field, into: &event)
                    }
                } else {
                    storedReferences = true
                    try parseUnknownField(key, keyOffset: keyOffset, into: &event)
                }
                // Usually a bare ',' and the next key's quote.
                if i &+ 1 < end && p[i] == UInt8(ascii: ",") && p[i &+ 1] == UInt8(ascii: "\"") {
                    i &+= 1
                    continue
                }
                skipWhitespace()
                guard i < end else { throw expected("',' or '}'", at: i) }
                if p[i] == UInt8(ascii: ",") {
                    i &+= 1
                    skipWhitespace()
                    continue
                }
                guard p[i] == UInt8(ascii: "}") else { throw expected("',' or '}' after a value", at: i) }
                i &+= 1
                break
            }
        }
        skipWhitespace()
        guard i == end else { throw syntaxError("unexpected \(found(at: i)) after the end of the JSON object", at: i) }

        guard seen & NDJSONField.type.bit != 0 else { throw fieldError("type", "missing (required)", at: nil) }
        guard seen & NDJSONField.ts.bit != 0 else { throw fieldError("ts", "missing (required)", at: nil) }
        if event.type.isMarker {
            guard event.marker != nil || slotBits & (1 << UInt32(StringField.marker.rawValue)) != 0 else {
                throw fieldError("marker", "missing (required on \"\(event.type.name)\" events)", at: nil)
            }
        } else {
            guard event.token != nil || slotBits & (1 << UInt32(StringField.token.rawValue)) != 0 else {
                throw fieldError("token", "missing (required on \"\(event.type.name)\" events)", at: nil)
            }
        }
    }

    @inline(__always) static var needsSlowMatch: UInt8 { 0xFF }

    /// The common case of a key, in one or two loads: a known field name with no escapes or
    /// special bytes, well before the end of the line. Consumes the key and returns the field's
    /// raw value; otherwise consumes nothing and returns `needsSlowMatch` (the general path then
    /// scans the key and reports any problem exactly as it always did).
    @inline(__always)
    mutating func knownKeyQuickly() -> UInt8 {
        guard i &+ 18 <= end else { return Self.needsSlowMatch }
        let w = UnsafeRawPointer(p + (i &+ 1)).loadUnaligned(as: UInt64.self)
        let quotes = Self.zeroBytes(w ^ 0x2222_2222_2222_2222)
        let special = Self.zeroBytes(w ^ 0x5C5C_5C5C_5C5C_5C5C) | ((w &- 0x2020_2020_2020_2020) & ~w & 0x8080_8080_8080_8080)
            | (w & 0x8080_8080_8080_8080)
        let lo: UInt64, hi: UInt64, n: Int
        if quotes != 0 {
            // The lowest flagged byte is exact; bytes above it may be flagged spuriously.
            n = quotes.trailingZeroBitCount >> 3
            let below: UInt64 = (1 &<< UInt64(n &* 8)) &- 1
            // Names are 2...10 bytes; an empty key would pack to an unused slot's 0.
            guard n >= 2, special & below == 0 else { return Self.needsSlowMatch }
            lo = w & below
            hi = 0
        } else {
            guard special == 0 else { return Self.needsSlowMatch }
            // Nine or ten bytes: the quote is the 10th or 11th.
            let w2 = UInt64(UnsafeRawPointer(p + (i &+ 9)).loadUnaligned(as: UInt32.self))
            let quotes2 = Self.zeroBytes(w2 ^ 0x2222_2222)
            let n2 = quotes2.trailingZeroBitCount >> 3
            guard quotes2 != 0, n2 == 1 || n2 == 2 else { return Self.needsSlowMatch }
            let below: UInt64 = (1 &<< UInt64(n2 &* 8)) &- 1
            let special2 = Self.zeroBytes(w2 ^ 0x5C5C_5C5C) | ((w2 &- 0x2020_2020) & ~w2 & 0x8080_8080) | (w2 & 0x8080_8080)
            guard special2 & below == 0 else { return Self.needsSlowMatch }
            lo = w
            hi = w2 & below
            n = 8 &+ n2
        }
        let s = NDJSONField.slot(lo: lo, hi: hi)
        guard keyTable[2 &* s] == lo && keyTable[2 &* s &+ 1] & 0xFFFF == hi else { return Self.needsSlowMatch }
        let code = UInt8(truncatingIfNeeded: keyTable[2 &* s &+ 1] >> 56)
        assert(NDJSONField.match(lo: lo, hi: hi, n)?.rawValue == code)
        i &+= n &+ 2
        return code
    }

    /// The field's raw value, `needsSlowMatch` for a key this cannot judge (escapes, or too near
    /// the end of the line for one load), or any other value for an unknown name. It neither
    /// throws nor unescapes, which keeps the per-key cost to a load, a mask and a switch.
    @inline(__always)
    func knownFieldCode(_ key: RawJSONString) -> UInt8 {
        let n = key.rawCount
        guard n >= 2 && n <= 10 else { return key.hasEscapes ? Self.needsSlowMatch : 0xFE }
        // One unaligned load covers the key (the line goes on past it at least until the closing
        // brace); bytes past the key are masked off.
        guard !key.hasEscapes && key.start &+ 8 <= end else { return Self.needsSlowMatch }
        let word = UnsafeRawPointer(p + key.start).loadUnaligned(as: UInt64.self)
        let field: NDJSONField?
        if n < 8 {
            field = NDJSONField.match(lo: word & (1 &<< UInt64(n &* 8) &- 1), hi: 0, n)
        } else {
            let hi: UInt64 = n == 8 ? 0 : n == 9 ? UInt64(p[key.start &+ 8]) : UInt64(p[key.start &+ 8]) | UInt64(p[key.start &+ 9]) &<< 8
            field = NDJSONField.match(lo: word, hi: hi, n)
        }
        return field?.rawValue ?? 0xFE
    }

    @inline(never)
    func knownFieldSlowly(_ key: RawJSONString) throws(EventDecodeError) -> NDJSONField? {
        if !key.hasEscapes { return NDJSONField.match(p + key.start, key.rawCount) }
        // An escaped key ("\u0074s") names the same field as its plain spelling.
        return try withUnescapedBytes(key) { bytes in
            bytes.isEmpty ? nil : NDJSONField.match(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
    }

    @inline(__always)
    mutating func parseValue(of field: NDJSONField, into event: inout Event) throws(EventDecodeError) {
        switch field {
        case .type, .ts, .exp, .status, .weight, .token, .parent, .marker: break
        default: storedReferences = true
        }
        switch field {
        case .type: event.type = try eventType()
        case .ts:
            guard let ts = try timestamp(.ts) else { throw fieldError("ts", Self.expectedTimestamp + ", got null", at: i &- 4) }
            event.ts = ts
        case .exp: event.exp = try timestamp(.exp)
        case .token:
            if slots != nil, try tokenSlot(.token) { break }
            storedReferences = true
            event.token = try tokenID(.token)
        case .parent:
            if slots != nil, try tokenSlot(.parent) { break }
            storedReferences = true
            event.parent = try tokenID(.parent)
        case .marker:
            if slots != nil, try markerSlot() { break }
            storedReferences = true
            event.marker = try string(.marker, allowEmpty: false)
        case .tokenType: event.tokenType = try string(.tokenType)
        case .sub: event.sub = try string(.sub)
        case .clientID: event.clientID = try string(.clientID)
        case .iss: event.iss = try string(.iss)
        case .aud: event.aud = try string(.aud)
        case .scope: event.scope = try string(.scope)
        case .gateway: event.gateway = try string(.gateway)
        case .release: event.release = try string(.release)
        case .track: event.track = try string(.track)
        case .route: event.route = try string(.route)
        case .method: event.method = try string(.method)
        case .clientIP: event.clientIP = try string(.clientIP)
        case .requestID: event.requestID = try string(.requestID)
        case .reason: event.reason = try string(.reason)
        case .status: event.status = try integer(.status, in: 100...599).map { Int($0) }
        case .weight: event.weight = try integer(.weight, in: 0...100).map { Int($0) }
        case .attrs: try attrsObject(into: &event)
        }
    }

    /// Stores the value of one of `plainStringBits`.
    @inline(__always)
    static func store(_ value: String, _ field: NDJSONField, in event: inout Event) {
        switch field {
        case .tokenType: event.tokenType = value
        case .sub: event.sub = value
        case .clientID: event.clientID = value
        case .iss: event.iss = value
        case .aud: event.aud = value
        case .scope: event.scope = value
        case .gateway: event.gateway = value
        case .release: event.release = value
        case .track: event.track = value
        case .route: event.route = value
        case .method: event.method = value
        case .clientIP: event.clientIP = value
        case .requestID: event.requestID = value
        case .reason: event.reason = value
        default: preconditionFailure("\(field.name) is not a plain string field")
        }
    }

    // MARK: Field types

    /// Consumes the value and reports it as the wrong type for `field`.
    @inline(never)
    mutating func wrongType(_ field: String, _ expectation: String) -> EventDecodeError {
        let start = i
        do {
            let got = try describeValue()
            return fieldError(field, "\(expectation), got \(got)", at: start)
        } catch {
            return error
        }
    }

    mutating func eventType() throws(EventDecodeError) -> EventType {
        guard i < end, p[i] == UInt8(ascii: "\"") else {
            throw wrongType("type", "expected a string naming the event type (one of \(Self.typeNames))")
        }
        let start = i
        let raw = try scanString()
        let type = raw.hasEscapes
            ? try withUnescapedBytes(raw) { EventType(utf8: $0) }
            : Self.eventType(p + raw.start, raw.rawCount)
        guard let type else {
            throw fieldError("type", "unknown event type \(excerpt(start, i)) (expected one of \(Self.typeNames))", at: start)
        }
        return type
    }

    /// EventType(utf8:) without its per-candidate String work: the name's bytes packed into
    /// words, as in NDJSONField.match (checked against EventType.name by a unit test).
    @inline(__always)
    static func eventType(_ b: UnsafePointer<UInt8>, _ n: Int) -> EventType? {
        guard n >= 6 && n <= 9 else { return nil }
        var lo: UInt64 = 0
        var j = min(n, 8) &- 1
        while j >= 0 {
            lo = lo &<< 8 | UInt64(b[j])
            j &-= 1
        }
        let hi: UInt64 = n == 9 ? UInt64(b[8]) : 0
        switch (lo, hi) {
        case (0x6465_7573_7369, 0): return .issued
        case (0x6574_6164_696C_6176, 0x64): return .validated
        case (0x6465_7463_656A_6572, 0): return .rejected
        case (0x6568_7365_7266_6572, 0x64): return .refreshed
        case (0x64_656B_6F76_6572, 0): return .revoked
        case (0x64_6572_6970_7865, 0): return .expired
        case (0x796F_6C70_6564, 0): return .deploy
        case (0x65_746F_6D6F_7270, 0): return .promote
        case (0x6B63_6162_6C6C_6F72, 0): return .rollback
        default: return nil
        }
    }

    mutating func string(_ field: NDJSONField, allowEmpty: Bool = true) throws(EventDecodeError) -> String? {
        guard i < end, p[i] == UInt8(ascii: "\"") else {
            if isNull() {
                i &+= 4
                return nil
            }
            throw wrongType(field.name, "expected a string")
        }
        let start = i
        let raw = try scanString()
        let count = try byteCount(raw)
        guard count <= limits.fieldBytesMax else {
            throw fieldError(field.name, "value is \(count) bytes, over the limit of \(limits.fieldBytesMax)", at: start)
        }
        guard allowEmpty || count > 0 else { throw fieldError(field.name, "must not be empty", at: start) }
        return string(raw, count: count)
    }

    /// The direct path's `token` or `parent`: a plain id (no escapes, nothing a bearer token could
    /// be) is left in the line for the encoder. - Returns: false, having consumed nothing, otherwise.
    mutating func tokenSlot(_ field: NDJSONField) throws(EventDecodeError) -> Bool {
        guard let slots, i < end, p[i] == UInt8(ascii: "\"") else { return false }
        let start = i
        let raw = try scanString()
        let n = raw.rawCount
        guard !raw.hasEscapes, n <= limits.tokenBytesMax, !hasDot(raw.start, n) else {
            i = start
            return false
        }
        guard n > 0 else { throw fieldError(field.name, "must not be empty", at: start) }
        guard n <= limits.fieldBytesMax else { throw fieldError(field.name, "value is \(n) bytes, over the limit of \(limits.fieldBytesMax)", at: start) }
        let f = field.stringField
        slots[2 &* f] = Int(bitPattern: p + raw.start)
        slots[2 &* f &+ 1] = n
        slotBits |= 1 &<< UInt32(f)
        return true
    }

    /// Whether the `n` line bytes at `start` hold a '.' (what memchr would say, without a call
    /// for the short ids this sees).
    @inline(__always)
    func hasDot(_ start: Int, _ n: Int) -> Bool {
        var j = start
        let stop = start &+ n
        while j &+ 8 <= stop {
            if Self.zeroBytes(UnsafeRawPointer(p + j).loadUnaligned(as: UInt64.self) ^ 0x2E2E_2E2E_2E2E_2E2E) != 0 { return true }
            j &+= 8
        }
        while j < stop {
            if p[j] == UInt8(ascii: ".") { return true }
            j &+= 1
        }
        return false
    }

    /// The direct path's `marker` (as `string(.marker, allowEmpty: false)`): a value without
    /// escapes is left in the line. - Returns: false, having consumed nothing, otherwise.
    mutating func markerSlot() throws(EventDecodeError) -> Bool {
        guard let slots, i < end, p[i] == UInt8(ascii: "\"") else { return false }
        let start = i
        let raw = try scanString()
        guard !raw.hasEscapes else {
            i = start
            return false
        }
        let n = raw.rawCount
        guard n <= limits.fieldBytesMax else {
            throw fieldError("marker", "value is \(n) bytes, over the limit of \(limits.fieldBytesMax)", at: start)
        }
        guard n > 0 else { throw fieldError("marker", "must not be empty", at: start) }
        let f = StringField.marker.rawValue
        slots[2 &* f] = Int(bitPattern: p + raw.start)
        slots[2 &* f &+ 1] = n
        slotBits |= 1 &<< UInt32(f)
        return true
    }

    /// `token` and `parent`: fingerprinted when they may be a bearer token, before the length
    /// limit, and never quoted in an error.
    mutating func tokenID(_ field: NDJSONField) throws(EventDecodeError) -> String? {
        guard i < end, p[i] == UInt8(ascii: "\"") else {
            if isNull() {
                i &+= 4
                return nil
            }
            throw wrongType(field.name, "expected a string")
        }
        let start = i
        let raw = try scanString()
        let tokenBytesMax = limits.tokenBytesMax
        let value = try withUnescapedBytes(raw) { bytes in
            // A JWT has dots, so a short id without one skips the full check.
            let maybeBearer = bytes.count > tokenBytesMax || (bytes.count > 0 && memchr(bytes.baseAddress!, Int32(UInt8(ascii: ".")), bytes.count) != nil)
            return maybeBearer && TokenFingerprint.needsFingerprint(bytes, tokenBytesMax: tokenBytesMax)
                ? TokenFingerprint.fingerprint(bytes)
                : String(decoding: bytes, as: UTF8.self)
        }
        let count = value.utf8.count
        guard count > 0 else { throw fieldError(field.name, "must not be empty", at: start) }
        guard count <= limits.fieldBytesMax else {
            throw fieldError(field.name, "value is \(count) bytes, over the limit of \(limits.fieldBytesMax)", at: start)
        }
        return value
    }

    /// - Returns: nil for JSON null.
    mutating func integer(_ field: NDJSONField, in range: ClosedRange<Int64>) throws(EventDecodeError) -> Int64? {
        guard i < end else { throw expected("a value", at: i) }
        let c = p[i]
        if c == UInt8(ascii: "-") || DecimalDigits.isDigit(c) {
            return try integerValue(field, timestamp: false, min: range.lowerBound, max: range.upperBound)
        }
        if isNull() {
            i &+= 4
            return nil
        }
        throw wrongType(field.name, Self.expectedInteger)
    }

    /// Consumes a number known to start at `i` and requires it to be an integer in `min...max`.
    @inline(__always)
    mutating func integerValue(_ field: NDJSONField, timestamp: Bool, min: Int64, max: Int64) throws(EventDecodeError) -> Int64 {
        // One pass for the usual case: up to 18 digits cannot overflow, and no fraction follows.
        let negative = p[i] == UInt8(ascii: "-")
        let digitsStart = negative ? i &+ 1 : i
        var j = digitsStart
        var magnitude: UInt64 = 0
        while j < end {
            let digit = p[j] &- 0x30
            if digit >= 10 { break }
            magnitude = magnitude &* 10 &+ UInt64(digit)
            j &+= 1
        }
        let digitCount = j &- digitsStart
        let next = j < end ? p[j] : 0
        guard digitCount > 0 && digitCount <= 18 && (p[digitsStart] != UInt8(ascii: "0") || digitCount == 1)
            && next != UInt8(ascii: ".") && next | 0x20 != UInt8(ascii: "e") else {
            return try integerValueSlowly(field, timestamp: timestamp, min: min, max: max)
        }
        let value = negative ? -Int64(magnitude) : Int64(magnitude)
        guard value >= min && value <= max else {
            throw fieldError(field.name, "\(value) is out of range (\(min)...\(max))", at: i)
        }
        i = j
        return value
    }

    /// The full grammar, for long, malformed or non-integer numbers; always names the problem.
    @inline(never)
    mutating func integerValueSlowly(_ field: NDJSONField, timestamp: Bool, min: Int64, max: Int64) throws(EventDecodeError) -> Int64 {
        let number = try scanNumber()
        guard number.isInteger else {
            let expectation = timestamp ? Self.expectedTimestamp : Self.expectedInteger
            throw fieldError(field.name, "\(expectation), got \(excerpt(number.start, i))", at: number.start)
        }
        let text = UnsafeRawBufferPointer(start: p + number.start, count: i &- number.start)
        guard let value = DecimalDigits.parseInt64(text) else {
            throw fieldError(field.name, "integer \(excerpt(number.start, i)) is out of range", at: number.start)
        }
        guard value >= min && value <= max else {
            throw fieldError(field.name, "\(value) is out of range (\(min)...\(max))", at: number.start)
        }
        return value
    }

    /// `ts` / `exp`: integer epoch ms or an RFC 3339 string.
    /// - Returns: nil for JSON null.
    mutating func timestamp(_ field: NDJSONField) throws(EventDecodeError) -> Int64? {
        guard i < end else { throw expected("a value", at: i) }
        let c = p[i]
        if c == UInt8(ascii: "-") || DecimalDigits.isDigit(c) {
            return try integerValue(field, timestamp: true, min: .min, max: .max)
        }
        if c == UInt8(ascii: "\"") {
            let start = i
            let raw = try scanString()
            let parsed = try withUnescapedBytes(raw) { bytes in
                Result { () throws(TimestampError) -> Int64 in try Timestamp.parseRFC3339(bytes) }
            }
            switch parsed {
            case .success(let ms): return ms
            case .failure(let error):
                throw fieldError(field.name, "invalid RFC 3339 timestamp \(excerpt(start, i)): \(error.reason)", at: start)
            }
        }
        if isNull() {
            i &+= 4
            return nil
        }
        throw wrongType(field.name, Self.expectedTimestamp)
    }

    // MARK: attrs and unknown fields

    mutating func attrsObject(into event: inout Event) throws(EventDecodeError) {
        guard i < end, p[i] == UInt8(ascii: "{") else {
            if isNull() {
                i &+= 4
                return
            }
            throw wrongType("attrs", "expected an object of string values")
        }
        i &+= 1
        skipWhitespace()
        if i < end && p[i] == UInt8(ascii: "}") {
            i &+= 1
            return
        }
        while true {
            guard i < end, p[i] == UInt8(ascii: "\"") else { throw expected("'\"' to start a key in attrs", at: i) }
            let keyOffset = i
            let rawKey = try scanString()
            try expectColon()
            let key = try attrKey(rawKey, at: keyOffset, field: "attrs")
            guard i < end, p[i] == UInt8(ascii: "\"") else {
                throw wrongType("attrs", "value of key \(EventMessageText.quoted(key)) must be a string")
            }
            let valueOffset = i
            let rawValue = try scanString()
            let value = try attrValue(rawValue, at: valueOffset, field: "attrs")
            if event.attrs[key] != nil {
                throw keptUnknown.contains(key)
                    ? fieldError(key, "unknown field is kept in attrs, but attrs also has the key \(EventMessageText.quoted(key))", at: keyOffset)
                    : fieldError("attrs", "duplicate key \(EventMessageText.quoted(key))", at: keyOffset)
            }
            try checkAttrsRoom(event.attrs.count, at: keyOffset, field: "attrs")
            event.attrs[key] = value
            skipWhitespace()
            guard i < end else { throw expected("',' or '}' in attrs", at: i) }
            if p[i] == UInt8(ascii: ",") {
                i &+= 1
                skipWhitespace()
                continue
            }
            guard p[i] == UInt8(ascii: "}") else { throw expected("',' or '}' after a value in attrs", at: i) }
            i &+= 1
            return
        }
    }

    /// Keeps an unknown top-level field with a scalar value in attrs (see NDJSONDecoder).
    mutating func parseUnknownField(_ rawName: RawJSONString, keyOffset: Int, into event: inout Event) throws(EventDecodeError) {
        let nameCount = try byteCount(rawName)
        let name = string(rawName, count: nameCount)
        guard i < end else { throw expected("a value", at: i) }
        let valueOffset = i
        let value: String
        switch p[i] {
        case UInt8(ascii: "\""):
            let raw = try scanString()
            value = try attrValue(raw, at: valueOffset, field: name)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let number = try scanNumber()
            let count = i &- number.start
            guard count <= limits.attrValueBytesMax else {
                throw fieldError(name, "value is \(count) bytes, over the attrs value limit of \(limits.attrValueBytesMax) (unknown fields are kept in attrs)", at: valueOffset)
            }
            value = String(decoding: UnsafeBufferPointer(start: p + number.start, count: count), as: UTF8.self)
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            value = try scanLiteral()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let kind = p[i] == UInt8(ascii: "{") ? "an object" : "an array"
            throw fieldError(name, "unknown field \(EventMessageText.quoted(name)) with a non-scalar value (\(kind)); an unknown field is kept in attrs only when its value is a string, number, bool or null", at: valueOffset)
        default:
            throw expected("a JSON value", at: i)
        }
        guard nameCount > 0 else {
            throw syntaxError("a field with an empty name cannot be kept in attrs", at: keyOffset)
        }
        guard nameCount <= limits.attrKeyBytesMax else {
            throw fieldError(name, "unknown field name is \(nameCount) bytes, over the attrs key limit of \(limits.attrKeyBytesMax) (unknown fields are kept in attrs)", at: keyOffset)
        }
        if event.attrs[name] != nil {
            throw keptUnknown.contains(name)
                ? fieldError(name, "duplicate field", at: keyOffset)
                : fieldError(name, "unknown field is kept in attrs, but attrs also has the key \(EventMessageText.quoted(name))", at: keyOffset)
        }
        try checkAttrsRoom(event.attrs.count, at: keyOffset, field: name)
        event.attrs[name] = value
        keptUnknown.append(name)
    }

    func checkAttrsRoom(_ count: Int, at offset: Int, field: String) throws(EventDecodeError) {
        guard count < limits.attrsCountMax else {
            throw fieldError(field, "attrs would exceed \(limits.attrsCountMax) entries (unknown top-level fields are kept in attrs and count too)", at: offset)
        }
    }

    func attrKey(_ raw: RawJSONString, at offset: Int, field: String) throws(EventDecodeError) -> String {
        let count = try byteCount(raw)
        guard count <= limits.attrKeyBytesMax else {
            throw fieldError(field, "key is \(count) bytes, over the limit of \(limits.attrKeyBytesMax)", at: offset)
        }
        return string(raw, count: count)
    }

    /// An attrs value; a JWT in it is fingerprinted like `token`, before the length limit.
    func attrValue(_ raw: RawJSONString, at offset: Int, field: String) throws(EventDecodeError) -> String {
        let count = try byteCount(raw)
        if count >= 5 {
            let fingerprint = try withUnescapedBytes(raw) { bytes -> String? in
                Self.looksLikeJWTValue(bytes) ? TokenFingerprint.fingerprint(bytes) : nil
            }
            if let fingerprint { return fingerprint }
        }
        guard count <= limits.attrValueBytesMax else {
            throw fieldError(field, "value is \(count) bytes, over the attrs value limit of \(limits.attrValueBytesMax)", at: offset)
        }
        return string(raw, count: count)
    }

    /// Stricter than TokenFingerprint.looksLikeJWT, which is meant for token ids: free-form attrs
    /// such as a version "1.2.3" also have three dot-separated parts, but only a JWT starts with
    /// the base64url of `{"`.
    @inline(__always)
    static func looksLikeJWTValue(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 5 && bytes[0] == UInt8(ascii: "e") && bytes[1] == UInt8(ascii: "y") && bytes[2] == UInt8(ascii: "J")
            && TokenFingerprint.looksLikeJWT(bytes)
    }
}
