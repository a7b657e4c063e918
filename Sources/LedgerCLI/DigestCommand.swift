import Foundation
import LedgerCrypto
import LedgerStorage

enum DigestCommand {
    static let usage = """
    usage: tokenledger digest --data DIR --key FILE [--no-verify]

    Prints a signed chain head as one JSON object: the last sequence number, the chain hash
    there, and a signature over both. Keep it somewhere the ledger's host cannot write; later,
    'tokenledger verify --data DIR --digest FILE --key FILE' proves the history up to it is
    unchanged. The ledger is verified before it is signed, so a digest never blesses damage.

      --data DIR     the ledger directory
      --key FILE     an Ed25519 private key in PEM ('openssl genpkey -algorithm ed25519'),
                     or an HMAC-SHA256 secret (the file's bytes, at least 16, e.g.
                     'openssl rand -hex 32')
      --no-verify    sign the head without verifying the chain first
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data", "key"], flags: ["no-verify"]), command: "digest")
        let directory = try args.required("data")
        let key = try loadKey(try args.required("key"), command: "digest")
        var seq: UInt64
        var chain: Digest32
        if args.has("no-verify") {
            let log: SegmentLog
            do { log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true)) } catch { throw .failure("digest", "\(error)") }
            seq = log.lastSeq
            chain = log.chainHash
        } else {
            let report: VerifyReport
            do { report = try Verifier(directory: directory).run() } catch { throw .failure("digest", "\(error)") }
            if let problem = report.problem { throw .failure("digest", "refusing to sign a ledger that does not verify: \(problem)") }
            seq = report.lastSeq
            chain = report.chainHash
        }
        let digest: ChainDigest
        do { digest = try ChainDigest.sign(seq: seq, chainHash: chain, key: key) } catch { throw .failure("digest", "\(error)") }
        print(DigestFile.json(digest))
        return 0
    }

    static func loadKey(_ path: String, command: String) throws(CLIError) -> DigestKey {
        guard let data = FileManager.default.contents(atPath: path) else { throw .failure(command, "\(path): cannot read the key file") }
        do { return try DigestKey.parse(Array(data), path: path) } catch { throw .failure(command, "\(path): \(error)") }
    }
}

enum DigestFile {
    static func json(_ d: ChainDigest) -> String {
        "{\"format\":\"\(ChainDigest.format)\",\"seq\":\(d.seq),\"chain\":\"\(d.chainHash.hex)\",\"algorithm\":\"\(d.algorithm.rawValue)\",\"key_id\":\"\(d.keyID)\",\"signature\":\"\(Hex.encode(d.signature))\"}"
    }

    static func read(_ path: String, command: String) throws(CLIError) -> ChainDigest {
        guard let data = FileManager.default.contents(atPath: path) else { throw .failure(command, "\(path): cannot read the digest file") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .failure(command, "\(path): not a JSON object")
        }
        func field<T>(_ name: String, _ type: T.Type) throws(CLIError) -> T {
            guard let v = object[name] as? T else { throw .failure(command, "\(path): field \"\(name)\" is missing or has the wrong type") }
            return v
        }
        guard try field("format", String.self) == ChainDigest.format else { throw .failure(command, "\(path): not a \(ChainDigest.format) digest") }
        let seqNumber = try field("seq", NSNumber.self)
        guard let chain = Digest32(hex: try field("chain", String.self)) else { throw .failure(command, "\(path): \"chain\" is not 64 hex digits") }
        guard let algorithm = ChainDigest.Algorithm(rawValue: try field("algorithm", String.self)) else {
            throw .failure(command, "\(path): unknown algorithm")
        }
        guard let signature = Hex.decode(try field("signature", String.self)) else { throw .failure(command, "\(path): \"signature\" is not hex") }
        return ChainDigest(seq: seqNumber.uint64Value, chainHash: chain, algorithm: algorithm, keyID: (object["key_id"] as? String) ?? "",
                           signature: signature)
    }
}
