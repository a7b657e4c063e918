import LedgerCrypto

/// Keeps raw bearer tokens off disk: a value that looks like a JWT (three base64url parts) or is
/// longer than 128 bytes becomes `sha256:<hex>` of its bytes. Ingest, introspection and lookups all
/// use this one function, so a raw JWT presented later still finds its token.
public enum TokenFingerprint {
    public static let prefix = "sha256:"

    /// - Returns: the value to store: the input unchanged when it is a plain token id.
    public static func normalize(_ value: String, tokenBytesMax: Int = EventLimits.default.tokenBytesMax) -> String {
        var copy = value
        return copy.withUTF8 { bytes in
            needsFingerprint(UnsafeRawBufferPointer(bytes), tokenBytesMax: tokenBytesMax)
                ? fingerprint(UnsafeRawBufferPointer(bytes)) : value
        }
    }

    public static func needsFingerprint(_ bytes: UnsafeRawBufferPointer, tokenBytesMax: Int = EventLimits.default.tokenBytesMax) -> Bool {
        bytes.count > tokenBytesMax || looksLikeJWT(bytes)
    }

    /// Three non-empty-headed base64url parts separated by two dots (the signature may be empty,
    /// as in an unsecured JWT).
    public static func looksLikeJWT(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var dots = 0
        var partLength = 0
        for c in bytes {
            if c == UInt8(ascii: ".") {
                if partLength == 0 && dots < 2 { return false }
                dots += 1
                if dots > 2 { return false }
                partLength = 0
                continue
            }
            let isBase64URL = (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
                || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: "=")
            if !isBase64URL { return false }
            partLength += 1
        }
        return dots == 2
    }

    public static func fingerprint(_ bytes: UnsafeRawBufferPointer) -> String {
        let digest = SHA256.hash(bytes)
        return prefix + digest.hex
    }
}
