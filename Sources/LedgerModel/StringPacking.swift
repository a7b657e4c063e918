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
        var out = [UInt8](repeating: 0, count: 16)
        return out.withUnsafeMutableBufferPointer { packUUID(s, into: $0.baseAddress!) } ? out : nil
    }

    /// Writes the 16 bytes of a lowercase 8-4-4-4-12 UUID to `out`. - Returns: false (having
    /// written some bytes, maybe) when `s` is not one.
    @inline(__always) static func packUUID(_ s: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Bool {
        guard s.count == 36, s[8] == 0x2D, s[13] == 0x2D, s[18] == 0x2D, s[23] == 0x2D else { return false }
        var i = 0
        var o = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 { i &+= 1; continue }
            let hi = hexTable[Int(s[i])], lo = hexTable[Int(s[i &+ 1])]
            guard hi | lo < 16 else { return false }
            out[o] = hi << 4 | lo
            o &+= 1
            i &+= 2
        }
        return true
    }

    /// Lowercase hex digit values; 0xFF for every other byte.
    private static let hexTable: [UInt8] = (0..<256).map { hexValue(UInt8($0)) ?? 0xFF }

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
        var out = [UInt8](repeating: 0, count: 32)
        return out.withUnsafeMutableBufferPointer { packFingerprint(s, into: $0.baseAddress!) } ? out : nil
    }

    /// Writes the 32 bytes of `sha256:<64 lowercase hex>` to `out`. - Returns: false (having
    /// written some bytes, maybe) when `s` is not one.
    @inline(__always) static func packFingerprint(_ s: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Bool {
        guard s.count == 71, s[0] == 0x73, s[1] == 0x68, s[2] == 0x61, s[3] == 0x32, s[4] == 0x35, s[5] == 0x36, s[6] == 0x3A
        else { return false }
        var i = 7
        var o = 0
        while i < 71 {
            let hi = hexTable[Int(s[i])], lo = hexTable[Int(s[i &+ 1])]
            guard hi | lo < 16 else { return false }
            out[o] = hi << 4 | lo
            o &+= 1
            i &+= 2
        }
        return true
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

    /// base64url digit values; 0xFF for every other byte.
    private static let base64URLTable: [UInt8] = (0..<256).map { base64URLValue(UInt8($0)) ?? 0xFF }

    /// 22 base64url characters carry 132 bits; only those whose last 4 bits are zero are the
    /// canonical encoding of 16 bytes.
    static func base64URL128(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 16)
        return out.withUnsafeMutableBufferPointer { packBase64URL128(s, into: $0.baseAddress!) } ? out : nil
    }

    /// Writes the 16 bytes `s` canonically encodes to `out`. - Returns: false (having written
    /// some bytes, maybe) when `s` is not 22 canonical base64url characters.
    @inline(__always) static func packBase64URL128(_ s: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Bool {
        guard s.count == 22 else { return false }
        return base64URLTable.withUnsafeBufferPointer { table in
            // 132 bits = 16 bytes + 4 bits: five groups of 4 characters (3 bytes each), then the
            // last 2 characters (12 bits: 1 byte and 4 bits that must be zero).
            var o = 0
            var i = 0
            var bad: UInt8 = 0
            while i < 20 {
                let a = table[Int(s[i])], b = table[Int(s[i &+ 1])], c = table[Int(s[i &+ 2])], d = table[Int(s[i &+ 3])]
                bad |= a | b | c | d
                let v = UInt32(a & 63) << 18 | UInt32(b & 63) << 12 | UInt32(c & 63) << 6 | UInt32(d & 63)
                out[o] = UInt8(truncatingIfNeeded: v >> 16)
                out[o &+ 1] = UInt8(truncatingIfNeeded: v >> 8)
                out[o &+ 2] = UInt8(truncatingIfNeeded: v)
                o &+= 3
                i &+= 4
            }
            let a = table[Int(s[20])], b = table[Int(s[21])]
            bad |= a | b
            out[15] = (a & 63) << 2 | (b & 63) >> 4
            // 0xFF marks a non-alphabet byte (every value is below 64 otherwise).
            return bad & 0xC0 == 0 && b & 0x0F == 0
        }
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
