/// Why one NDJSON line was not accepted as an event, and where.
///
/// Messages reach operators through logs and ingest replies, so they name the line, the byte
/// offset and/or the field, and quote the offending value in a bounded, escaped form. They never
/// quote the value of `token` or `parent`, which may be a raw bearer token.
public struct EventDecodeError: Error, CustomStringConvertible, Sendable, Equatable {
    /// 1-based line number, as given to the decoder.
    public var line: Int
    /// 0-based offset within the line of the byte where decoding stopped, when one byte is to blame.
    public var byteOffset: Int?
    /// JSON name of the field concerned (for unknown fields, the name as sent).
    public var field: String?
    public var reason: String

    public init(line: Int, byteOffset: Int? = nil, field: String? = nil, reason: String) {
        self.line = line
        self.byteOffset = byteOffset
        self.field = field
        self.reason = reason
    }

    /// `line 17, byte 20, field "ts": expected an integer (epoch ms) or an RFC 3339 string, got true`
    public var description: String {
        var text = "line \(line)"
        if let byteOffset { text += ", byte \(byteOffset)" }
        if let field { text += ", field " + EventMessageText.quoted(field) }
        return text + ": " + reason
    }
}

/// Renders untrusted text inside error messages: quoted, control characters escaped (no log
/// injection through a field name), and cut to a bounded length on a character boundary.
enum EventMessageText {
    static let excerptBytesMax = 48

    static func quoted(_ text: String) -> String {
        var out = "\""
        var used = 0
        for scalar in text.unicodeScalars {
            let piece: String
            switch scalar {
            case "\"": piece = "\\\""
            case "\\": piece = "\\\\"
            case "\n": piece = "\\n"
            case "\r": piece = "\\r"
            case "\t": piece = "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value)
                    || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    piece = "\\u" + hex4(scalar.value)
                } else {
                    piece = String(scalar)
                }
            }
            if used + piece.utf8.count > excerptBytesMax {
                out += "…"
                break
            }
            used += piece.utf8.count
            out += piece
        }
        return out + "\""
    }

    /// Raw JSON text of a value as it appeared on the line (already escaped JSON, so free of raw
    /// control characters), cut to a bounded length.
    static func excerpt(_ bytes: UnsafeRawBufferPointer) -> String {
        if bytes.count <= excerptBytesMax { return String(decoding: bytes, as: UTF8.self) }
        var cut = excerptBytesMax
        // Back up to a scalar boundary so the excerpt stays valid UTF-8.
        while cut > 0 && bytes[cut] & 0xC0 == 0x80 { cut -= 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<cut]), as: UTF8.self) + "…"
    }

    /// `'x'` for printable ASCII, `byte 0xNN` otherwise.
    static func byte(_ c: UInt8) -> String {
        if c >= 0x21 && c < 0x7F { return "'" + String(UnicodeScalar(c)) + "'" }
        if c == 0x20 { return "' '" }
        return "byte 0x" + hex2(c)
    }

    static func hex2(_ c: UInt8) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: [digits[Int(c >> 4)], digits[Int(c & 0xF)]], as: UTF8.self)
    }

    static func hex4(_ v: UInt32) -> String {
        hex2(UInt8(truncatingIfNeeded: v >> 8)) + hex2(UInt8(truncatingIfNeeded: v))
    }
}
