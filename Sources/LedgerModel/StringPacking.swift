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


    static func uuid(_ s: UnsafeRawBufferPointer) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 16)
        return out.withUnsafeMutableBufferPointer { packUUID(s, into: $0.baseAddress!) } ? out : nil
    }

    /// Writes the 16 bytes of a lowercase 8-4-4-4-12 UUID to `out`. - Returns: false (having
    /// written some bytes, maybe) when `s` is not one.
    @inline(__always) static func packUUID(_ s: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Bool {
        guard s.count == 36, s[8] == 0x2D, s[13] == 0x2D, s[18] == 0x2D, s[23] == 0x2D else { return false }
        return packHex(s, from: 0, bytes: 4, into: out) && packHex(s, from: 9, bytes: 2, into: out + 4)
            && packHex(s, from: 14, bytes: 2, into: out + 6) && packHex(s, from: 19, bytes: 2, into: out + 8)
            && packHex(s, from: 24, bytes: 6, into: out + 10)
    }

    /// Packs `bytes` bytes of lowercase hex text starting at `s[from]` into `out`.
    /// - Returns: false at the first byte that is not a lowercase hex digit.
    @inline(__always) private static func packHex(_ s: UnsafeRawBufferPointer, from: Int, bytes: Int, into out: UnsafeMutablePointer<UInt8>) -> Bool {
        var i = from
        for o in 0..<bytes {
            let hi = hexTable[Int(s[i])], lo = hexTable[Int(s[i &+ 1])]
            guard hi | lo < 16 else { return false }
            out[o] = hi << 4 | lo
            i &+= 2
        }
        return true
    }

    /// Lowercase hex digit values; 0xFF for every other byte.
    private static let hexTable: [UInt8] = (0..<256).map { hexValue(UInt8($0)) ?? 0xFF }

    // The unpackers write text into a caller's buffer (the row decoder hashes ids without
    // making a String); the String forms wrap them.
    @inline(__always) private static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x61 + v - 10 }

    static let uuidTextBytes = 36

    /// Writes the 36-character text of a 16-byte packed uuid to `out`.
    static func unpackUUID(_ b: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) {
        var o = 0
        for (i, byte) in b.prefix(16).enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = 0x2D; o += 1 }
            out[o] = hexDigit(byte >> 4); out[o + 1] = hexDigit(byte & 0xF); o += 2
        }
    }

    static func unpackUUID(_ b: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: uuidTextBytes) { unpackUUID(b, into: $0.baseAddress!); return uuidTextBytes }
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
        return packHex(s, from: 7, bytes: 32, into: out)
    }

    static let fingerprintTextBytes = 71

    /// Writes `sha256:<64 lowercase hex>` for 32 packed bytes to `out`.
    static func unpackFingerprint(_ b: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) {
        for (i, byte) in "sha256:".utf8.enumerated() { out[i] = byte }
        for (i, byte) in b.prefix(32).enumerated() {
            out[7 + 2 * i] = hexDigit(byte >> 4); out[8 + 2 * i] = hexDigit(byte & 0xF)
        }
    }

    static func unpackFingerprint(_ b: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: fingerprintTextBytes) { unpackFingerprint(b, into: $0.baseAddress!); return fingerprintTextBytes }
    }


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

    static let base64URL128TextBytes = 22

    @inline(__always) private static func base64URLDigit(_ v: UInt8) -> UInt8 {
        switch v {
        case 0..<26: 0x41 + v
        case 26..<52: 0x61 + v - 26
        case 52..<62: 0x30 + v - 52
        case 62: 0x2D
        default: 0x5F
        }
    }

    /// Writes the 22 base64url characters of 16 packed bytes to `out`.
    static func unpackBase64URL128(_ b: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) {
        var o = 0
        var bits: UInt64 = 0
        var bitCount = 0
        for byte in b.prefix(16) {
            bits = bits << 8 | UInt64(byte)
            bitCount += 8
            while bitCount >= 6 {
                bitCount -= 6
                out[o] = base64URLDigit(UInt8((bits >> UInt64(bitCount)) & 63)); o += 1
            }
            bits &= (1 << UInt64(bitCount)) - 1
        }
        if bitCount > 0 { out[o] = base64URLDigit(UInt8((bits << UInt64(6 - bitCount)) & 63)) }
    }

    static func unpackBase64URL128(_ b: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: base64URL128TextBytes) { unpackBase64URL128(b, into: $0.baseAddress!); return base64URL128TextBytes }
    }
}
