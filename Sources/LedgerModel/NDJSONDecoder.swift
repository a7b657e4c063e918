// The NDJSON decoder is the ingest hot path (PRODUCT.md "Event model (v1)"): every event a gateway
// sends passes through it, so it is a single forward scan over borrowed bytes with no Foundation,
// no Codable and no intermediate JSON tree. Keys are matched by length and bytes without building
// a String; a String is built only for each value kept, straight from the line when the value has
// no escapes. The line is untrusted: every read is bounds-checked against the line's length and
// every failure is an EventDecodeError naming the line, the byte and/or the field.
//
// This file holds the public entry points, UTF-8 validation and the JSON lexing (whitespace,
// strings, numbers, literals); NDJSONDecoder+Fields.swift maps fields onto Event.

/// Decodes one NDJSON line of the v1 event schema into an `Event`.
///
/// Accepted input, beyond plain JSON syntax (RFC 8259):
/// - The line is one JSON object; whitespace may surround any token; one trailing `"\r"` is
///   ignored. Anything after the closing `}` is an error. The whole line must be valid UTF-8
///   (overlong forms, encoded surrogates and truncated sequences are rejected with their offset).
/// - A field may appear once; a repeated key is an error.
/// - `type` (one of the `EventType` names) and `ts` are required. Token events need a non-empty
///   `token`, deployment markers a non-empty `marker`. `token`, `parent` and `marker` may never be
///   the empty string. JSON `null` for any optional field means the field is absent.
/// - `ts` and `exp` are integer epoch milliseconds or RFC 3339 strings (`Timestamp.parseRFC3339`).
///   `ts`, `exp`, `status` (100...599) and `weight` (0...100) must be JSON integers: a fraction or
///   an exponent, even `1700000000000.0` or `1e3`, is rejected as the wrong type rather than
///   rounded, so no instant is silently moved.
/// - `token` and `parent` are normalised by `TokenFingerprint` (a JWT-looking or over-long value
///   becomes `sha256:<hex>`) before any length limit applies, so no raw bearer token ever leaves
///   the decoder.
/// - String fields are limited to `limits.fieldBytesMax` bytes (after unescaping). `attrs` is an
///   object of string to string with at most `limits.attrsCountMax` entries, keys at most
///   `limits.attrKeyBytesMax` and values at most `limits.attrValueBytesMax` bytes. An `attrs` value
///   that is itself a JWT (`eyJ…` in three base64url parts) is fingerprinted like a token.
/// - Unknown top-level fields are kept, not dropped: a string value is stored in `attrs` under the
///   field's name; a number, `true`, `false` or `null` is stored as its JSON text (`"42"`,
///   `"1.5e3"`, `"true"`, `"null"`). They count against the attrs limits, and a name that is also
///   a key of the line's `attrs` object is an error. An unknown field whose value is an object or
///   an array is an error ("unknown field X with a non-scalar value"), since flattening it would
///   guess at a structure the ledger does not model.
public struct NDJSONDecoder: Sendable {
    public var limits: EventLimits

    public init(limits: EventLimits = .default) {
        self.limits = limits
    }

    /// A parser over `line` (a trailing `"\r"` dropped), once it is known not empty and within
    /// the line limit: what both decode paths check first.
    @inline(__always) private func parser(_ line: UnsafeRawBufferPointer, lineNumber: Int) throws(EventDecodeError) -> NDJSONParser {
        guard let base = line.baseAddress, line.count > 0 else {
            throw EventDecodeError(line: lineNumber, byteOffset: 0, reason: "empty line (expected a JSON object)")
        }
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        var count = line.count
        if bytes[count - 1] == 0x0D { count -= 1 }
        guard count <= limits.lineBytesMax else {
            throw EventDecodeError(line: lineNumber, reason: "line is \(count) bytes, over the limit of \(limits.lineBytesMax)")
        }
        return NDJSONParser(bytes: bytes, count: count, lineNumber: lineNumber, limits: limits)
    }

    /// - Parameters:
    ///   - line: one line without its `"\n"`; a trailing `"\r"` is tolerated.
    ///   - lineNumber: 1-based, used only in errors.
    public func decode(line: UnsafeRawBufferPointer, lineNumber: Int) throws(EventDecodeError) -> Event {
        var parser = try parser(line, lineNumber: lineNumber)
        // Built in place in a stack slot that starts as a byte copy of a blank event. The
        // optimiser turns `var event = Event(...)` into a temporary plus a field-by-field copy and
        // a destroy of the 23-field struct, about a tenth of the cost of decoding a line. The byte
        // copy is a valid copy because the blank event holds no references to retain: its
        // optionals are nil and its empty attrs is the runtime's immortal empty-dictionary singleton.
        return try withUnsafeTemporaryAllocation(of: Event.self, capacity: 1) { slot throws(EventDecodeError) -> Event in
            let event = slot.baseAddress!
            UnsafeMutableRawPointer(event).copyMemory(from: parser.tables.blankEvent, byteCount: MemoryLayout<Event>.size)
            do throws(EventDecodeError) {
                try parser.parseEvent(into: &event.pointee)
            } catch {
                event.deinitialize(count: 1)
                // UTF-8 is checked as the parse goes (see scanString), so a line that parsed is
                // valid; a line that did not is reported for its first invalid UTF-8, if any,
                // wherever that lies, before any other problem.
                if let problem = EventUTF8Validation.firstProblem(parser.p, parser.end) {
                    throw EventDecodeError(line: lineNumber, byteOffset: problem.offset, reason: "invalid UTF-8 (\(problem.reason))")
                }
                throw error
            }
            return event.move()
        }
    }

    /// Decodes a line straight into `encoder`, as `decode(line:lineNumber:)` followed by
    /// `encoder.append(_:)` would, without a String for values the encoder already holds.
    /// - Parameter gateway: an authenticated gateway: the event's `gateway` must be it, or absent
    ///   (then it is set).
    /// - Returns: the event's type. On a throw the encoder is unchanged.
    public func decode(line: UnsafeRawBufferPointer, lineNumber: Int, into encoder: inout BlockPayloadEncoder,
                       gateway: String? = nil) throws(EventDecodeError) -> EventType {
        var parser = try parser(line, lineNumber: lineNumber)
        return try withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * StringField.count) { slotBuffer throws(EventDecodeError) -> EventType in
            // Only the entries named by parser.slotBits are ever written or read.
            let slots = slotBuffer.baseAddress!
            parser.slots = slots
            return try withUnsafeTemporaryAllocation(of: Event.self, capacity: 1) { slot throws(EventDecodeError) -> EventType in
                let event = slot.baseAddress!
                UnsafeMutableRawPointer(event).copyMemory(from: parser.tables.blankEvent, byteCount: MemoryLayout<Event>.size)
                var injected = false
                defer { if parser.storedReferences || injected { event.deinitialize(count: 1) } }
                do throws(EventDecodeError) {
                    try parser.parseEvent(into: &event.pointee)
                } catch {
                    if let problem = EventUTF8Validation.firstProblem(parser.p, parser.end) {
                        throw EventDecodeError(line: lineNumber, byteOffset: problem.offset, reason: "invalid UTF-8 (\(problem.reason))")
                    }
                    throw error
                }
                let gatewayBit: UInt32 = 1 << UInt32(StringField.gateway.rawValue)
                var injectGateway = false
                if let gateway {
                    if parser.slotBits & gatewayBit != 0 {
                        let g = 2 * StringField.gateway.rawValue
                        let given = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: slots[g]), count: slots[g + 1])
                        if !StringInterner.equal(gateway, given) {
                            throw EventDecodeError(line: lineNumber, reason: "field \"gateway\": \"\(String(decoding: given.prefix(64), as: UTF8.self))\" is not the authenticated gateway \"\(gateway)\"")
                        }
                    } else if let given = event.pointee.gateway {
                        if given != gateway {
                            throw EventDecodeError(line: lineNumber, reason: "field \"gateway\": \"\(given.prefix(64))\" is not the authenticated gateway \"\(gateway)\"")
                        }
                    } else if parser.storedReferences {
                        event.pointee.gateway = gateway
                        injected = true
                    } else {
                        injectGateway = true
                    }
                }
                if let problem = BlockPayloadEncoder.problem(event, index: 0) {
                    throw EventDecodeError(line: lineNumber, reason: String(problem.dropFirst("event 0: ".count)))
                }
                if injectGateway, var g = gateway {
                    // The authenticated gateway's bytes stand in the gateway slot, so the event
                    // still holds no String.
                    g.withUTF8 { u in
                        slots[2 * StringField.gateway.rawValue] = Int(bitPattern: u.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                        slots[2 * StringField.gateway.rawValue + 1] = u.count
                        encoder.append(UnsafePointer(event), slots: slots, slotBits: parser.slotBits | gatewayBit, eventHasStrings: false)
                    }
                } else {
                    encoder.append(UnsafePointer(event), slots: slots, slotBits: parser.slotBits, eventHasStrings: parser.storedReferences || injected)
                }
                return event.pointee.type
            }
        }
    }

    public func decode(line: String, lineNumber: Int = 1) throws(EventDecodeError) -> Event {
        var copy = line
        let result = copy.withUTF8 { utf8 in
            Result { () throws(EventDecodeError) -> Event in
                try decode(line: UnsafeRawBufferPointer(utf8), lineNumber: lineNumber)
            }
        }
        return try result.get()
    }

    public func decode(line: ArraySlice<UInt8>, lineNumber: Int) throws(EventDecodeError) -> Event {
        let result = line.withUnsafeBytes { bytes in
            Result { () throws(EventDecodeError) -> Event in try decode(line: bytes, lineNumber: lineNumber) }
        }
        return try result.get()
    }

    public func decode(line: [UInt8], lineNumber: Int) throws(EventDecodeError) -> Event {
        let result = line.withUnsafeBytes { bytes in
            Result { () throws(EventDecodeError) -> Event in try decode(line: bytes, lineNumber: lineNumber) }
        }
        return try result.get()
    }
}

// MARK: - UTF-8 validation

/// Well-formedness per Unicode Table 3-7. On the hot path each string's non-ASCII sequences are
/// checked as the string is scanned; the whole-line check runs only for a line that failed, so
/// that a bad byte anywhere, even outside a string, is reported as bad UTF-8 rather than as a
/// puzzling syntax error.
enum EventUTF8Validation {
    struct Problem: Equatable {
        var offset: Int
        var reason: String
    }

    @inline(__always)
    static func firstProblem(_ p: UnsafePointer<UInt8>, _ n: Int) -> Problem? {
        var i = 0
        while i < n {
            // Lines are almost all ASCII: test eight bytes per step.
            if i &+ 8 <= n {
                let word = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
                if word & 0x8080_8080_8080_8080 == 0 {
                    i &+= 8
                    continue
                }
            }
            if p[i] < 0x80 {
                i &+= 1
                continue
            }
            let length = sequenceLength(p, n, i)
            if length <= 0 { return Problem(offset: i, reason: reason(-length, lead: p[i])) }
            i &+= length
        }
        return nil
    }

    // Negative results name the problem; kept as Ints so the scan loop stays allocation-free.
    static let unexpectedContinuation = 1, overlong = 2, surrogate = 3, aboveMaximum = 4, truncated = 5, neverValid = 6

    /// - Returns: the length of the well-formed multi-byte sequence at `i`, or minus a problem code.
    @inline(never)
    static func sequenceLength(_ p: UnsafePointer<UInt8>, _ n: Int, _ i: Int) -> Int {
        let lead = p[i]
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        let length: Int
        switch lead {
        case 0x80...0xBF: return -unexpectedContinuation
        case 0xC0, 0xC1: return -overlong
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xED: length = 3; high = 0x9F
        case 0xE1...0xEF: length = 3
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        case 0xF5...0xF7: return -aboveMaximum
        default: return -neverValid
        }
        guard i + 1 < n else { return -truncated }
        let second = p[i + 1]
        if second < low || second > high {
            guard second & 0xC0 == 0x80 else { return -truncated }
            switch lead {
            case 0xE0, 0xF0: return -overlong
            case 0xED: return -surrogate
            default: return -aboveMaximum
            }
        }
        var k = 2
        while k < length {
            guard i + k < n, p[i + k] & 0xC0 == 0x80 else { return -truncated }
            k += 1
        }
        return length
    }

    static func reason(_ code: Int, lead: UInt8) -> String {
        switch code {
        case unexpectedContinuation: "unexpected continuation byte 0x\(EventMessageText.hex2(lead))"
        case overlong: "overlong encoding starting with 0x\(EventMessageText.hex2(lead))"
        case surrogate: "UTF-16 surrogate encoded in UTF-8"
        case aboveMaximum: "code point above U+10FFFF"
        case truncated: "truncated sequence starting with 0x\(EventMessageText.hex2(lead))"
        default: "byte 0x\(EventMessageText.hex2(lead)) never appears in UTF-8"
        }
    }
}

// MARK: - Lexing

/// A JSON string as it sits in the line: `start..<end` excludes the quotes.
struct RawJSONString {
    var start: Int
    var end: Int
    var hasEscapes: Bool
    var rawCount: Int { end - start }
}

struct NDJSONParser {
    /// The starting point of every decoded event; see `decode(line:lineNumber:)` for why it must
    /// hold no references (a unit test checks).
    static let blankEvent = Event(type: .issued, ts: 0)

    let p: UnsafePointer<UInt8>
    let end: Int
    let lineNumber: Int
    let limits: EventLimits
    var i = 0
    /// Names of unknown top-level fields already moved into attrs, to tell a collision with an
    /// attrs key from a plain duplicate. Stays empty, and unallocated, on well-formed input.
    var keptUnknown: [String] = []
    /// The direct path (`decode(line:lineNumber:into:gateway:)`): where plain string values are
    /// left in the line for the encoder, as (address, count) per `StringField`, for the fields
    /// whose bit is set in `slotBits` (the other entries are never written).
    var slots: UnsafeMutablePointer<Int>?
    var slotBits: UInt32 = 0
    /// Whether the event being filled got a String or attrs (the direct path then destroys it;
    /// otherwise it is still the reference-free blank plus plain values, and is dropped as is).
    var storedReferences = false
    /// Read once per line rather than through lazy global accessors per use.
    let tables: Tables
    var keyTable: UnsafePointer<UInt64> { tables.keyTable }

    struct Tables {
        /// `NDJSONField.keyTable`.
        let keyTable: UnsafePointer<UInt64>
        /// The bytes of `blankEvent`.
        let blankEvent: UnsafeRawPointer
    }

    nonisolated(unsafe) static let tables: Tables = {
        let blank = UnsafeMutablePointer<Event>.allocate(capacity: 1)
        blank.initialize(to: blankEvent)   // never deinitialized: it lives as long as the process
        return Tables(keyTable: NDJSONField.keyTable, blankEvent: UnsafeRawPointer(blank))
    }()

    init(bytes: UnsafePointer<UInt8>, count: Int, lineNumber: Int, limits: EventLimits) {
        self.tables = NDJSONParser.tables
        self.p = bytes
        self.end = count
        self.lineNumber = lineNumber
        self.limits = limits
    }

    // MARK: Errors (cold)

    @inline(never)
    func syntaxError(_ reason: String, at offset: Int) -> EventDecodeError {
        EventDecodeError(line: lineNumber, byteOffset: offset, reason: reason)
    }

    @inline(never)
    func fieldError(_ field: String, _ reason: String, at offset: Int?) -> EventDecodeError {
        EventDecodeError(line: lineNumber, byteOffset: offset, field: field, reason: reason)
    }

    /// What sits at `offset`, for "expected X, found Y".
    @inline(never)
    func found(at offset: Int) -> String {
        offset < end ? EventMessageText.byte(p[offset]) : "the end of the line"
    }

    @inline(never)
    func expected(_ what: String, at offset: Int) -> EventDecodeError {
        syntaxError("expected \(what), found \(found(at: offset))", at: offset)
    }

    func excerpt(_ start: Int, _ end: Int) -> String {
        EventMessageText.excerpt(UnsafeRawBufferPointer(start: p + start, count: end - start))
    }

    // MARK: Structure

    @inline(__always)
    mutating func skipWhitespace() {
        while i < end {
            let c = p[i]
            guard c <= 0x20 && (c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D) else { return }
            i &+= 1
        }
    }

    /// Consumes `:` between a key and its value, with the whitespace around it.
    @inline(__always)
    mutating func expectColon() throws(EventDecodeError) {
        // Usually a bare ':' right before the value.
        if i &+ 1 < end && p[i] == UInt8(ascii: ":") && p[i &+ 1] > 0x20 {
            i &+= 1
            return
        }
        skipWhitespace()
        guard i < end, p[i] == UInt8(ascii: ":") else { throw expected("':' after the field name", at: i) }
        i &+= 1
        skipWhitespace()
    }

    @inline(__always)
    func isLiteral(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> Bool {
        i &+ 4 <= end && p[i] == a && p[i &+ 1] == b && p[i &+ 2] == c && p[i &+ 3] == d
    }

    @inline(__always)
    func isNull() -> Bool {
        isLiteral(UInt8(ascii: "n"), UInt8(ascii: "u"), UInt8(ascii: "l"), UInt8(ascii: "l"))
    }

    /// Consumes `true`, `false` or `null`.
    /// - Returns: the literal's text.
    mutating func scanLiteral() throws(EventDecodeError) -> String {
        if isNull() { i &+= 4; return "null" }
        if isLiteral(UInt8(ascii: "t"), UInt8(ascii: "r"), UInt8(ascii: "u"), UInt8(ascii: "e")) { i &+= 4; return "true" }
        if isLiteral(UInt8(ascii: "f"), UInt8(ascii: "a"), UInt8(ascii: "l"), UInt8(ascii: "s")),
           i &+ 4 < end, p[i &+ 4] == UInt8(ascii: "e") {
            i &+= 5
            return "false"
        }
        throw syntaxError("invalid literal (expected true, false or null)", at: i)
    }

    // MARK: Strings

    /// Consumes a string starting at the opening quote at `i`, without unescaping it.
    @inline(__always)
    mutating func scanString() throws(EventDecodeError) -> RawJSONString {
        let quote = i
        i &+= 1
        let start = i
        var escapes = false
        while true {
            // Eight bytes at a time until one of them is '"', '\\', a control character or not
            // ASCII. The lowest flagged byte is exact (borrows only spill upwards), so jump
            // straight to it.
            while i &+ 8 <= end {
                let special = Self.special(UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self))
                if special != 0 {
                    i &+= special.trailingZeroBitCount >> 3
                    break
                }
                i &+= 8
            }
            guard i < end else { throw syntaxError("unterminated string", at: quote) }
            let c = p[i]
            if c == 0x22 {
                i &+= 1
                return RawJSONString(start: start, end: i &- 1, hasEscapes: escapes)
            }
            if c == 0x5C {
                // The escaped byte can never close the string; the escape is checked when
                // unescaping. A non-ASCII byte there is never a valid escape, and stopping here
                // keeps its continuation bytes from being read as a sequence of their own.
                if i &+ 1 < end && p[i &+ 1] >= 0x80 { throw syntaxError("invalid escape: a backslash before a non-ASCII character", at: i) }
                escapes = true
                i &+= 2
                continue
            }
            if c >= 0x80 {
                // Strings are the only place a line may hold non-ASCII bytes, so UTF-8 is checked
                // here; the structural parser rejects any other non-ASCII byte.
                let length = EventUTF8Validation.sequenceLength(p, end, i)
                guard length > 0 else {
                    throw syntaxError("invalid UTF-8 (\(EventUTF8Validation.reason(-length, lead: p[i])))", at: i)
                }
                i &+= length
                continue
            }
            if c < 0x20 {
                throw syntaxError("control character 0x\(EventMessageText.hex2(c)) must be escaped inside a string", at: i)
            }
            i &+= 1
        }
    }

    /// The top bit of each byte of `w` that is '"', '\\', below 0x20 or not ASCII (exact for
    /// the lowest flagged byte).
    @inline(__always)
    static func special(_ w: UInt64) -> UInt64 {
        zeroBytes(w ^ 0x2222_2222_2222_2222) | zeroBytes(w ^ 0x5C5C_5C5C_5C5C_5C5C)
            | ((w &- 0x2020_2020_2020_2020) & ~w & 0x8080_8080_8080_8080) | (w & 0x8080_8080_8080_8080)
    }

    @inline(__always)
    static func zeroBytes(_ x: UInt64) -> UInt64 {
        (x &- 0x0101_0101_0101_0101) & ~x & 0x8080_8080_8080_8080
    }

    /// Checks every escape of `s`.
    /// - Returns: the byte count of the unescaped UTF-8.
    func unescapedCount(_ s: RawJSONString) throws(EventDecodeError) -> Int {
        var j = s.start
        var count = 0
        while j < s.end {
            guard p[j] == 0x5C else {
                count &+= 1
                j &+= 1
                continue
            }
            // scanString guarantees a byte after the backslash inside the string.
            switch p[j + 1] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                 UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                count &+= 1
                j &+= 2
            case UInt8(ascii: "u"):
                let unit = try hex4(at: j, stringEnd: s.end)
                switch unit {
                case 0xD800...0xDBFF:
                    guard j + 12 <= s.end, p[j + 6] == 0x5C, p[j + 7] == UInt8(ascii: "u") else {
                        throw syntaxError("lone surrogate \\u\(EventMessageText.hex4(unit)) (a high surrogate must be followed by a \\uDC00-\\uDFFF escape)", at: j)
                    }
                    let low = try hex4(at: j + 6, stringEnd: s.end)
                    guard (0xDC00...0xDFFF).contains(low) else {
                        throw syntaxError("lone surrogate \\u\(EventMessageText.hex4(unit)) (followed by \\u\(EventMessageText.hex4(low)), not a low surrogate)", at: j)
                    }
                    count &+= 4
                    j &+= 12
                case 0xDC00...0xDFFF:
                    throw syntaxError("lone surrogate \\u\(EventMessageText.hex4(unit)) (a low surrogate without a high one)", at: j)
                default:
                    count &+= unit < 0x80 ? 1 : unit < 0x800 ? 2 : 3
                    j &+= 6
                }
            default:
                let escaped = p[j + 1]
                let shown = escaped >= 0x21 && escaped < 0x7F ? "\\" + String(UnicodeScalar(escaped)) : "backslash + 0x" + EventMessageText.hex2(escaped)
                throw syntaxError("invalid escape \(shown) in a string", at: j)
            }
        }
        return count
    }

    /// The code unit of the `\uXXXX` escape whose backslash is at `j`.
    func hex4(at j: Int, stringEnd: Int) throws(EventDecodeError) -> UInt32 {
        guard j + 6 <= stringEnd else { throw syntaxError("\\u escape needs four hex digits", at: j) }
        var value: UInt32 = 0
        for k in 2..<6 {
            guard let digit = Self.hexValue(p[j + k]) else {
                throw syntaxError("\\u escape needs four hex digits, found \(EventMessageText.byte(p[j + k]))", at: j)
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }

    /// Writes the unescaped UTF-8 of `s`, which `unescapedCount` has already checked.
    /// - Returns: the number of bytes written.
    func writeUnescaped(_ s: RawJSONString, to out: UnsafeMutablePointer<UInt8>) -> Int {
        var j = s.start
        var o = 0
        while j < s.end {
            let c = p[j]
            guard c == 0x5C else {
                out[o] = c
                o &+= 1
                j &+= 1
                continue
            }
            let e = p[j + 1]
            var scalar: UInt32
            switch e {
            case UInt8(ascii: "b"): scalar = 0x08
            case UInt8(ascii: "f"): scalar = 0x0C
            case UInt8(ascii: "n"): scalar = 0x0A
            case UInt8(ascii: "r"): scalar = 0x0D
            case UInt8(ascii: "t"): scalar = 0x09
            case UInt8(ascii: "u"):
                scalar = (try? hex4(at: j, stringEnd: s.end)) ?? 0xFFFD
                if (0xD800...0xDBFF).contains(scalar) {
                    let low = (try? hex4(at: j + 6, stringEnd: s.end)) ?? 0xDC00
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    j &+= 6
                }
                j &+= 4
            default: scalar = UInt32(e) // '"', '\\', '/'
            }
            j &+= 2
            switch scalar {
            case ..<0x80:
                out[o] = UInt8(scalar)
                o &+= 1
            case ..<0x800:
                out[o] = UInt8(0xC0 | scalar >> 6)
                out[o + 1] = UInt8(0x80 | scalar & 0x3F)
                o &+= 2
            case ..<0x10000:
                out[o] = UInt8(0xE0 | scalar >> 12)
                out[o + 1] = UInt8(0x80 | scalar >> 6 & 0x3F)
                out[o + 2] = UInt8(0x80 | scalar & 0x3F)
                o &+= 3
            default:
                out[o] = UInt8(0xF0 | scalar >> 18)
                out[o + 1] = UInt8(0x80 | scalar >> 12 & 0x3F)
                out[o + 2] = UInt8(0x80 | scalar >> 6 & 0x3F)
                out[o + 3] = UInt8(0x80 | scalar & 0x3F)
                o &+= 4
            }
        }
        return o
    }

    /// Builds the String of a string value whose unescaped length is `count`.
    @inline(__always)
    func string(_ s: RawJSONString, count: Int) -> String {
        if !s.hasEscapes {
            return String(decoding: UnsafeBufferPointer(start: p + s.start, count: count), as: UTF8.self)
        }
        return String(unsafeUninitializedCapacity: count) { buffer in
            writeUnescaped(s, to: buffer.baseAddress!)
        }
    }

    /// - Returns: the unescaped byte count of `s` (escapes checked).
    @inline(__always)
    func byteCount(_ s: RawJSONString) throws(EventDecodeError) -> Int {
        s.hasEscapes ? try unescapedCount(s) : s.rawCount
    }

    /// Runs `body` over the unescaped bytes of `s`: borrowed from the line when there are no
    /// escapes, otherwise from a temporary buffer that never outlives the call.
    @inline(__always)
    func withUnescapedBytes<R>(_ s: RawJSONString, _ body: (UnsafeRawBufferPointer) -> R) throws(EventDecodeError) -> R {
        if !s.hasEscapes {
            return body(UnsafeRawBufferPointer(start: p + s.start, count: s.rawCount))
        }
        let count = try unescapedCount(s)
        return withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { buffer in
            let written = writeUnescaped(s, to: buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return body(UnsafeRawBufferPointer(start: buffer.baseAddress, count: written))
        }
    }

    // MARK: Numbers

    /// Consumes a JSON number (full RFC 8259 grammar).
    /// - Returns: where it started and whether it is an integer (no fraction, no exponent).
    mutating func scanNumber() throws(EventDecodeError) -> (start: Int, isInteger: Bool) {
        let start = i
        if p[i] == UInt8(ascii: "-") { i &+= 1 }
        guard i < end, DecimalDigits.isDigit(p[i]) else { throw expected("a digit in a number", at: i) }
        if p[i] == UInt8(ascii: "0") {
            i &+= 1
            if i < end && DecimalDigits.isDigit(p[i]) { throw syntaxError("leading zeros are not allowed in JSON numbers", at: start) }
        } else {
            while i < end && DecimalDigits.isDigit(p[i]) { i &+= 1 }
        }
        var isInteger = true
        if i < end && p[i] == UInt8(ascii: ".") {
            isInteger = false
            i &+= 1
            guard i < end, DecimalDigits.isDigit(p[i]) else { throw expected("a digit after '.'", at: i) }
            while i < end && DecimalDigits.isDigit(p[i]) { i &+= 1 }
        }
        if i < end && (p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E")) {
            isInteger = false
            i &+= 1
            if i < end && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i &+= 1 }
            guard i < end, DecimalDigits.isDigit(p[i]) else { throw expected("a digit in the exponent", at: i) }
            while i < end && DecimalDigits.isDigit(p[i]) { i &+= 1 }
        }
        return (start, isInteger)
    }

    /// Consumes any JSON value that may stand where a scalar was expected and describes it for a
    /// "got …" message: scalars by their (bounded) text, containers by their kind.
    mutating func describeValue() throws(EventDecodeError) -> String {
        guard i < end else { throw expected("a value", at: i) }
        switch p[i] {
        case UInt8(ascii: "\""):
            let start = i
            _ = try scanString()
            return excerpt(start, i)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let number = try scanNumber()
            return excerpt(number.start, i)
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            return try scanLiteral()
        case UInt8(ascii: "{"):
            return "an object"
        case UInt8(ascii: "["):
            return "an array"
        default:
            throw expected("a JSON value", at: i)
        }
    }
}
