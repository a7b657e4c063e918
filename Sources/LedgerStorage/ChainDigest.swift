// A signed chain head: "the ledger's history up to seq N hashes to H", signed with a key the
// ledger's readers trust. Plain verify catches accidents and naive edits; only a digest kept
// elsewhere catches someone who rewrites a block and recomputes every hash after it.
import LedgerCrypto

public struct ChainDigest: Sendable, Equatable {
    public static let format = "tokenledger-digest/1"

    public enum Algorithm: String, Sendable { case hmacSHA256 = "hmac-sha256", ed25519 = "ed25519" }

    public var seq: UInt64
    public var chainHash: Digest32
    public var algorithm: Algorithm
    public var keyID: String
    public var signature: [UInt8]

    public init(seq: UInt64, chainHash: Digest32, algorithm: Algorithm, keyID: String, signature: [UInt8]) {
        self.seq = seq; self.chainHash = chainHash; self.algorithm = algorithm; self.keyID = keyID; self.signature = signature
    }

    /// The exact bytes that are signed.
    public static func message(seq: UInt64, chainHash: Digest32) -> [UInt8] {
        Array("\(format)\nseq=\(seq)\nchain=\(chainHash.hex)\n".utf8)
    }

    public static func sign(seq: UInt64, chainHash: Digest32, key: DigestKey) throws(CryptoError) -> ChainDigest {
        let message = message(seq: seq, chainHash: chainHash)
        switch key {
        case let .hmac(secret):
            return ChainDigest(seq: seq, chainHash: chainHash, algorithm: .hmacSHA256, keyID: key.id,
                               signature: try HMACSHA256.authenticate(message, key: secret).array)
        case let .ed25519(k, _):
            return ChainDigest(seq: seq, chainHash: chainHash, algorithm: .ed25519, keyID: key.id, signature: try k.sign(message))
        }
    }

    /// - Returns: nil when the signature is good, else why not.
    public func signatureProblem(key: DigestKey) -> String? {
        let message = ChainDigest.message(seq: seq, chainHash: chainHash)
        switch (algorithm, key) {
        case let (.hmacSHA256, .hmac(secret)):
            guard let expected = try? HMACSHA256.authenticate(message, key: secret), let given = Digest32(signature),
                  expected.constantTimeEquals(given) else { return "HMAC-SHA256 signature does not match (wrong key, or the digest was edited)" }
            return nil
        case let (.ed25519, .ed25519(k, _)):
            return k.verify(signature, message: message) ? nil : "Ed25519 signature does not verify (wrong key, or the digest was edited)"
        default:
            return "the digest is signed with \(algorithm.rawValue) but the key is \(key.algorithm.rawValue)"
        }
    }
}

public enum DigestKey: Sendable {
    case hmac([UInt8])
    /// The key and the public key's DER-less fingerprint source (PEM text of the key file).
    case ed25519(Ed25519Key, [UInt8])

    public var algorithm: ChainDigest.Algorithm {
        switch self { case .hmac: .hmacSHA256; case .ed25519: .ed25519 }
    }

    /// A short, non-secret identifier: for HMAC, a hash of a hash of the secret.
    public var id: String {
        switch self {
        case let .hmac(secret): return String(SHA256.hash(SHA256.hash(secret).array).hex.prefix(16))
        case let .ed25519(key, _): return "ed25519:" + (key.isPrivate ? "private" : "public")
        }
    }

    /// Reads a key file: a PEM Ed25519 key (private to sign, private or public to verify), or
    /// else an HMAC secret (the file's bytes, trailing whitespace dropped, at least 16 bytes).
    public static func parse(_ bytes: [UInt8], path: String) throws(CryptoError) -> DigestKey {
        // A PEM file with a leading blank line or indentation is still a PEM key, not a secret.
        if bytes.drop(while: { $0 == 0x0A || $0 == 0x0D || $0 == 0x20 || $0 == 0x09 }).starts(with: Array("-----BEGIN".utf8)) {
            return .ed25519(try Ed25519Key(pem: bytes), bytes)
        }
        var secret = bytes
        while let last = secret.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { secret.removeLast() }
        guard secret.count >= 16 else { throw CryptoError("\(path): an HMAC key needs at least 16 bytes, found \(secret.count)") }
        return .hmac(secret)
    }
}
