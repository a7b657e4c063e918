/// Writes events as NDJSON lines (the export and replay format). Field order is fixed, so the
/// output for a given event is byte-for-byte stable; timestamps are always epoch milliseconds.
public enum NDJSONEncoder {
    /// Appends one line (with its trailing newline) to `out`.
    /// - Parameters:
    ///   - seq: included as `"seq"` when given (replay output); omitted for workload files.
    ///   - receivedAt: included as `"received_at"` when given.
    public static func append(_ event: Event, seq: SequenceNumber? = nil, receivedAt: Int64? = nil, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        if let seq {
            appendKey("seq", first: true, &out)
            appendInt(Int64(bitPattern: seq.rawValue), &out)
            appendKey("type", first: false, &out)
        } else {
            appendKey("type", first: true, &out)
        }
        appendQuotedASCII(event.type.name, &out)
        appendKey("ts", first: false, &out)
        appendInt(event.ts, &out)
        appendString("token", event.token, &out)
        appendString("token_type", event.tokenType, &out)
        appendString("sub", event.sub, &out)
        appendString("client_id", event.clientID, &out)
        appendString("iss", event.iss, &out)
        appendString("aud", event.aud, &out)
        appendString("scope", event.scope, &out)
        if let exp = event.exp { appendKey("exp", first: false, &out); appendInt(exp, &out) }
        appendString("parent", event.parent, &out)
        appendString("gateway", event.gateway, &out)
        appendString("release", event.release, &out)
        appendString("track", event.track, &out)
        appendString("route", event.route, &out)
        appendString("method", event.method, &out)
        if let status = event.status { appendKey("status", first: false, &out); appendInt(Int64(status), &out) }
        appendString("client_ip", event.clientIP, &out)
        appendString("request_id", event.requestID, &out)
        appendString("reason", event.reason, &out)
        appendString("marker", event.marker, &out)
        if let weight = event.weight { appendKey("weight", first: false, &out); appendInt(Int64(weight), &out) }
        if !event.attrs.isEmpty {
            appendKey("attrs", first: false, &out)
            out.append(UInt8(ascii: "{"))
            var first = true
            for key in event.attrs.keys.sorted(by: utf8Ascending) {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                appendQuoted(key, &out)
                out.append(UInt8(ascii: ":"))
                appendQuoted(event.attrs[key]!, &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        if let receivedAt { appendKey("received_at", first: false, &out); appendInt(receivedAt, &out) }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    public static func line(_ event: Event, seq: SequenceNumber? = nil, receivedAt: Int64? = nil) -> String {
        var out = [UInt8]()
        append(event, seq: seq, receivedAt: receivedAt, to: &out)
        out.removeLast()
        return String(decoding: out, as: UTF8.self)
    }

    @inline(__always) static func appendKey(_ key: StaticString, first: Bool, _ out: inout [UInt8]) {
        if !first { out.append(UInt8(ascii: ",")) }
        out.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { out.append(contentsOf: $0) }
        out.append(UInt8(ascii: "\""))
        out.append(UInt8(ascii: ":"))
    }

    @inline(__always) static func appendString(_ key: StaticString, _ value: String?, _ out: inout [UInt8]) {
        guard let value else { return }
        appendKey(key, first: false, &out)
        appendQuoted(value, &out)
    }

    static func appendQuotedASCII(_ value: String, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: value.utf8)
        out.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// JSON string with escapes for quote, backslash and control characters; other UTF-8 passes through.
    public static func appendQuoted(_ value: String, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var copy = value
        copy.withUTF8 { bytes in
            var needsEscape = false
            for c in bytes where c < 0x20 || c == 0x22 || c == 0x5C { needsEscape = true; break }
            if !needsEscape {
                out.append(contentsOf: bytes)
                return
            }
            for c in bytes {
                switch c {
                case 0x22: out.append(0x5C); out.append(0x22)
                case 0x5C: out.append(0x5C); out.append(0x5C)
                case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
                case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
                case 0..<0x20:
                    out.append(0x5C); out.append(UInt8(ascii: "u")); out.append(UInt8(ascii: "0")); out.append(UInt8(ascii: "0"))
                    out.append(hexDigits[Int(c >> 4)]); out.append(hexDigits[Int(c & 0xF)])
                default: out.append(c)
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always) public static func appendInt(_ value: Int64, _ out: inout [UInt8]) {
        if value == 0 { out.append(UInt8(ascii: "0")); return }
        var magnitude = value.magnitude
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes of scratch, enough for 20 digits
        var count = 0
        withUnsafeMutableBytes(of: &digits) { scratch in
            while magnitude > 0 {
                scratch[23 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[(24 - count)...]))
        }
    }
}
