/// Binary forms of common token-id shapes. Packing is only used when unpacking gives back the
/// exact same text, so the string table stays lossless and canonical.
enum StringPacking {
    @inline(__always) static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        default: nil   // uppercase hex would not round-trip
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func uuid(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
        guard s.count == 36, s[8] == 0x2D, s[13] == 0x2D, s[18] == 0x2D, s[23] == 0x2D else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(16)
        var i = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 { i += 1; continue }
            guard let hi = hexValue(s[i]), let lo = hexValue(s[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func unpackUUID(_ b: UnsafeRawBufferPointer) -> String {
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (i, byte) in b.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(0x2D) }
            out.append(hexDigits[Int(byte >> 4)]); out.append(hexDigits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func fingerprint(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
        guard s.count == 71, s[0] == 0x73, s[1] == 0x68, s[2] == 0x61, s[3] == 0x32, s[4] == 0x35, s[5] == 0x36, s[6] == 0x3A
        else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var i = 7
        while i < 71 {
            guard let hi = hexValue(s[i]), let lo = hexValue(s[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func unpackFingerprint(_ b: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = Array("sha256:".utf8)
        out.reserveCapacity(71)
        for byte in b { out.append(hexDigits[Int(byte >> 4)]); out.append(hexDigits[Int(byte & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }

    private static let base64URLAlphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    @inline(__always) static func base64URLValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x41...0x5A: c - 0x41
        case 0x61...0x7A: c - 0x61 + 26
        case 0x30...0x39: c - 0x30 + 52
        case 0x2D: 62
        case 0x5F: 63
        default: nil
        }
    }

    /// 22 base64url characters carry 132 bits; only those whose last 4 bits are zero are the
    /// canonical encoding of 16 bytes.
    static func base64URL128(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
        guard s.count == 22 else { return nil }
        var bits: UInt64 = 0
        var bitCount = 0
        var out = [UInt8]()
        out.reserveCapacity(16)
        for c in s {
            guard let v = base64URLValue(c) else { return nil }
            bits = bits << 6 | UInt64(v)
            bitCount += 6
            if bitCount >= 8 {
                bitCount -= 8
                out.append(UInt8(truncatingIfNeeded: bits >> UInt64(bitCount)))
                bits &= (1 << UInt64(bitCount)) - 1
            }
        }
        guard out.count == 16, bits == 0 else { return nil }
        return out
    }

    static func unpackBase64URL128(_ b: UnsafeRawBufferPointer) -> String {
        var out = [UInt8]()
        out.reserveCapacity(22)
        var bits: UInt64 = 0
        var bitCount = 0
        for byte in b {
            bits = bits << 8 | UInt64(byte)
            bitCount += 8
            while bitCount >= 6 {
                bitCount -= 6
                out.append(base64URLAlphabet[Int((bits >> UInt64(bitCount)) & 63)])
            }
            bits &= (1 << UInt64(bitCount)) - 1
        }
        if bitCount > 0 { out.append(base64URLAlphabet[Int((bits << UInt64(6 - bitCount)) & 63)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
