/// A 32-byte digest (SHA-256 output, HMAC-SHA256 tag, chain hash), stored inline.
public struct Digest32: Hashable, Sendable, CustomStringConvertible {
    public typealias Bytes = (UInt64, UInt64, UInt64, UInt64)
    public var bytes: Bytes

    public static let zero = Digest32(bytes: (0, 0, 0, 0))

    public init(bytes: Bytes) { self.bytes = bytes }

    /// - Returns: nil unless exactly 32 bytes are given.
    public init?(_ array: some Collection<UInt8>) {
        guard array.count == 32 else { return nil }
        var value = Digest32.zero
        withUnsafeMutableBytes(of: &value.bytes) { raw in
            for (i, b) in array.enumerated() { raw[i] = b }
        }
        self = value
    }

    /// - Returns: nil unless the text is exactly 64 hex digits.
    public init?(hex: some StringProtocol) {
        guard let raw = Hex.decode(hex), raw.count == 32 else { return nil }
        self.init(raw)
    }

    public var array: [UInt8] { withUnsafeBytes(of: bytes) { Array($0) } }
    public var hex: String { Hex.encode(array) }
    public var description: String { hex }

    public static func == (a: Digest32, b: Digest32) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.bytes.2 == b.bytes.2 && a.bytes.3 == b.bytes.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.0); hasher.combine(bytes.1); hasher.combine(bytes.2); hasher.combine(bytes.3)
    }

    /// Constant-time comparison, for authentication tags.
    public func constantTimeEquals(_ other: Digest32) -> Bool {
        ((bytes.0 ^ other.bytes.0) | (bytes.1 ^ other.bytes.1) | (bytes.2 ^ other.bytes.2) | (bytes.3 ^ other.bytes.3)) == 0
    }
}

public enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends lowercase hex of `bytes` to `out`.
    public static func append(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
    }

    /// - Returns: nil on an odd length or a non-hex character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = value(utf8[i]), let lo = value(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    @inline(__always) public static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
