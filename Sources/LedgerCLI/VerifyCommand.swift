import Foundation
import LedgerCrypto
import LedgerStorage

enum VerifyCommand {
    static let usage = """
    usage: tokenledger verify --data DIR [--digest FILE --key FILE] [--deep] [--quiet]

    Re-reads every segment and block of the ledger in DIR and checks the segment and block
    headers, each block's payload checksum and decompression, and the SHA-256 hash chain.
    Exit 0 when every block checks; otherwise exit 1 and name the first bad block's sequence
    range, segment file and byte offset.

      --data DIR       the ledger directory
      --digest FILE    also prove the history up to a signed chain head ('tokenledger digest')
      --key FILE       the key that signed the digest (HMAC secret, or Ed25519 PEM key)
      --deep           also decode every block's events (structure, counts, time ranges)
      --quiet          no progress on stderr
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data", "digest", "key"], flags: ["deep", "quiet"]), command: "verify")
        let directory = try args.required("data")
        var digest: ChainDigest?
        if let digestPath = args.string("digest") {
            guard let keyPath = args.string("key") else { throw .usage("verify", "--digest needs --key") }
            let key = try DigestCommand.loadKey(keyPath, command: "verify")
            let parsed = try DigestFile.read(digestPath, command: "verify")
            if let problem = parsed.signatureProblem(key: key) {
                throw .failure("verify", "\(digestPath): \(problem)")
            }
            digest = parsed
        } else if args.string("key") != nil {
            throw .usage("verify", "--key is only used with --digest")
        }
        guard FileManager.default.fileExists(atPath: directory) else { throw .failure("verify", "\(directory): no such ledger directory") }

        var verifier = Verifier(directory: directory)
        verifier.decodePayloads = args.has("deep")
        verifier.stopAtSeq = digest?.seq
        let progress = Progress(label: "verify", enabled: !args.has("quiet"))
        verifier.progress = { done, total in
            progress.update("\(formatCount(Double(done)))B of \(formatCount(Double(total)))B (\(total == 0 ? 100 : done * 100 / total)%)")
        }
        let report: VerifyReport
        do { report = try verifier.run() } catch { throw .failure("verify", "\(error)") }
        let seconds = progress.elapsedSeconds
        if let problem = report.problem {
            print("FAILED: \(problem.description)")
            print("verified before it: \(report.blocks) blocks, \(report.events) events, through seq \(report.lastSeq)")
            return 1
        }
        if let digest {
            guard report.lastSeq >= digest.seq else {
                print("FAILED: the digest covers seq 1-\(digest.seq) but the ledger ends at seq \(report.lastSeq) (events were removed)")
                return 1
            }
            guard report.lastSeq == digest.seq, report.chainHash == digest.chainHash else {
                print("FAILED: at seq \(report.lastSeq) the chain hash is \(report.chainHash.hex), the digest says seq \(digest.seq) with \(digest.chainHash.hex): history up to the digest was changed")
                return 1
            }
            print("OK: history seq 1-\(digest.seq) matches the signed digest (\(digest.algorithm.rawValue), key \(digest.keyID))")
        }
        print("OK: \(report.blocks) blocks, \(report.events) events, seq 1-\(report.lastSeq), chain \(report.chainHash.hex)")
        let rate = seconds > 0 ? Double(report.rawBytes) / seconds / 1e6 : 0
        printError("verify: \(String(format1: seconds)) s, \(Int(rate)) MB/s of canonical bytes")
        if report.tornTailBytes > 0 {
            print("note: \(report.tornTailBytes) bytes of an incomplete block after seq \(report.lastSeq) (a torn write; the next append cuts it and keeps a copy in quarantine/)")
        }
        return 0
    }
}
