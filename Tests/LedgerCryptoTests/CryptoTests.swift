import Foundation
import LedgerCrypto
import XCTest

/// Known-answer tests for the primitives the chain and the digests rest on.
final class CryptoTests: XCTestCase {
    func testSHA256KnownAnswers() {
        XCTAssertEqual(SHA256.hash(Array("abc".utf8)).hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hash([UInt8]()).hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // Incremental hashing in uneven pieces equals one-shot hashing.
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let hasher = SHA256Hasher()
        var offset = 0
        var step = 1
        while offset < million.count {
            let end = min(million.count, offset + step)
            million[offset..<end].withUnsafeBytes { hasher.update($0) }
            offset = end
            step = step * 3 + 1
        }
        XCTAssertEqual(hasher.finalize().hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // finalize() resets the hasher for reuse.
        hasher.update(Array("abc".utf8))
        XCTAssertEqual(hasher.finalize(), SHA256.hash(Array("abc".utf8)))
    }

    func testHMACSHA256RFC4231Case1() throws {
        let tag = try HMACSHA256.authenticate(Array("Hi There".utf8), key: [UInt8](repeating: 0x0B, count: 20))
        XCTAssertEqual(tag.hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertTrue(tag.constantTimeEquals(tag))
        XCTAssertFalse(tag.constantTimeEquals(SHA256.hash([1])))
    }

    func testDigestHexRoundTripAndRejectsBadInput() {
        let d = SHA256.hash(Array("x".utf8))
        XCTAssertEqual(Digest32(hex: d.hex), d)
        XCTAssertNil(Digest32(hex: String(d.hex.dropLast())))
        XCTAssertNil(Digest32(hex: String(d.hex.dropLast()) + "g"))
        XCTAssertNil(Digest32([UInt8](repeating: 0, count: 31)))
        XCTAssertEqual(Hex.decode("0aFf"), [0x0A, 0xFF])
        XCTAssertNil(Hex.decode("abc"))
    }

    func testEd25519SignVerifyWithOpenSSLGeneratedKeys() throws {
        let dir = NSTemporaryDirectory() + "tokenledger-crypto-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func openssl(_ args: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            p.arguments = args
            try p.run()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "openssl \(args)")
        }
        try openssl(["genpkey", "-algorithm", "ed25519", "-out", dir + "/k.pem"])
        try openssl(["pkey", "-in", dir + "/k.pem", "-pubout", "-out", dir + "/k.pub"])
        let privateKey = try Ed25519Key(pem: Array(FileManager.default.contents(atPath: dir + "/k.pem")!))
        let publicKey = try Ed25519Key(pem: Array(FileManager.default.contents(atPath: dir + "/k.pub")!))
        XCTAssertTrue(privateKey.isPrivate)
        XCTAssertFalse(publicKey.isPrivate)
        let message = Array("tokenledger-digest/1\nseq=42\n".utf8)
        let signature = try privateKey.sign(message)
        XCTAssertEqual(signature.count, 64)
        XCTAssertTrue(publicKey.verify(signature, message: message))
        XCTAssertTrue(privateKey.verify(signature, message: message))
        var tampered = message
        tampered[tampered.count - 2] ^= 1
        XCTAssertFalse(publicKey.verify(signature, message: tampered))
        var badSignature = signature
        badSignature[0] ^= 1
        XCTAssertFalse(publicKey.verify(badSignature, message: message))
        XCTAssertThrowsError(try publicKey.sign(message), "a public key cannot sign")
        XCTAssertThrowsError(try Ed25519Key(pem: Array("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n".utf8)))
    }
}
