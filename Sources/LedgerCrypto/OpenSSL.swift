// The one file that calls OpenSSL. Every return code is checked and turned into CryptoError;
// no OpenSSL type escapes this file's public signatures.
import COpenSSL

public struct CryptoError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func openSSL(_ what: String) -> CryptoError {
        var detail = ""
        let code = ERR_get_error()
        if code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            detail = ": " + String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return CryptoError("\(what) failed\(detail)")
    }
}

/// Fetched once: implicit fetches inside EVP_DigestInit_ex cost more than hashing a short token.
nonisolated(unsafe) private let sha256Algorithm: OpaquePointer = {
    guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { fatalError("OpenSSL has no SHA256") }
    return md
}()

/// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; one per thread.
public final class SHA256Hasher {
    private let context: OpaquePointer

    public init() {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new: out of memory") }
        context = ctx
        reset()
    }

    deinit { EVP_MD_CTX_free(context) }

    public func reset() {
        // Cannot fail for a fetched built-in algorithm short of memory exhaustion.
        precondition(EVP_DigestInit_ex2(context, sha256Algorithm, nil) == 1, "EVP_DigestInit_ex2 failed")
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        precondition(EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1, "EVP_DigestUpdate failed")
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// Finishes the digest and resets the hasher for reuse.
    public func finalize() -> Digest32 {
        var out = Digest32.zero
        var length: UInt32 = 32
        withUnsafeMutableBytes(of: &out.bytes) { raw in
            precondition(EVP_DigestFinal_ex(context, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &length) == 1)
        }
        reset()
        return out
    }
}

public enum SHA256 {
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> Digest32 {
        var out = Digest32.zero
        var length: UInt32 = 32
        withUnsafeMutableBytes(of: &out.bytes) { raw in
            precondition(EVP_Digest(bytes.baseAddress, bytes.count, raw.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                    &length, sha256Algorithm, nil) == 1, "EVP_Digest failed")
        }
        return out
    }

    public static func hash(_ bytes: [UInt8]) -> Digest32 { bytes.withUnsafeBytes { hash($0) } }
}

public enum HMACSHA256 {
    public static func authenticate(_ message: [UInt8], key: [UInt8]) throws(CryptoError) -> Digest32 {
        var out = Digest32.zero
        var length: UInt32 = 32
        let ok = key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                withUnsafeMutableBytes(of: &out.bytes) { o in
                    HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), m.baseAddress?.assumingMemoryBound(to: UInt8.self),
                         m.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self), &length) != nil
                }
            }
        }
        guard ok, length == 32 else { throw CryptoError.openSSL("HMAC-SHA256") }
        return out
    }
}

/// An Ed25519 key loaded from PEM: a private key can sign and verify, a public key only verify.
public final class Ed25519Key: @unchecked Sendable {
    private let key: OpaquePointer
    public let isPrivate: Bool

    public init(pem: [UInt8]) throws(CryptoError) {
        let loaded: (OpaquePointer?, Bool) = pem.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return (nil, false) }
            defer { BIO_free(bio) }
            if let k = PEM_read_bio_PrivateKey(bio, nil, nil, nil) { return (k, true) }
            ERR_clear_error()
            _ = BIO_ctrl(bio, BIO_CTRL_RESET, 0, nil)
            if let k = PEM_read_bio_PUBKEY(bio, nil, nil, nil) { return (k, false) }
            return (nil, false)
        }
        guard let k = loaded.0 else { throw CryptoError.openSSL("reading an Ed25519 PEM key") }
        guard EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519 else {
            EVP_PKEY_free(k)
            throw CryptoError("the PEM key is not an Ed25519 key")
        }
        key = k
        isPrivate = loaded.1
    }

    deinit { EVP_PKEY_free(key) }

    public func sign(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard isPrivate else { throw CryptoError("signing needs an Ed25519 private key, this is a public key") }
        guard let ctx = EVP_MD_CTX_new() else { throw CryptoError.openSSL("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, nil, nil, key) == 1 else { throw CryptoError.openSSL("EVP_DigestSignInit") }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = 64
        let ok = message.withUnsafeBytes { m in
            EVP_DigestSign(ctx, &signature, &length, m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count) == 1
        }
        guard ok else { throw CryptoError.openSSL("EVP_DigestSign") }
        return Array(signature.prefix(length))
    }

    public func verify(_ signature: [UInt8], message: [UInt8]) -> Bool {
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, nil, nil, key) == 1 else { ERR_clear_error(); return false }
        let ok = message.withUnsafeBytes { m in
            EVP_DigestVerify(ctx, signature, signature.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), m.count) == 1
        }
        ERR_clear_error()
        return ok
    }
}
