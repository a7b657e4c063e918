// Deliberate edits rather than accidents: a removed segment, reordered blocks, content changed
// with its cheap checksums fixed up, and a full rewrite with every chain hash recomputed, which
// only a signed digest kept elsewhere can catch. Also the digest signatures themselves.
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

/// A ledger's segments parsed into headers and stored payloads, so a test can edit the history
/// and write consistent-looking files back.
struct ParsedLedger {
    struct Block { var header: BlockHeader; var stored: [UInt8] }
    struct Segment { var name: String; var header: SegmentHeader; var blocks: [Block] }
    var segments: [Segment]

    init(_ files: [String: [UInt8]]) {
        segments = files.keys.filter { $0.hasSuffix(".seg") }.sorted().map { path in
            let bytes = files[path]!
            let header = try! bytes.withUnsafeBytes { SegmentHeader.decode($0) }.get()
            var blocks = [Block]()
            var offset = SegmentHeader.size
            while offset < bytes.count {
                let h = try! bytes.withUnsafeBytes { BlockHeader.decode(UnsafeRawBufferPointer(rebasing: $0[offset...])) }.get()
                blocks.append(Block(header: h, stored: Array(bytes[(offset + BlockHeader.size)..<(offset + h.totalBytes)])))
                offset += h.totalBytes
            }
            return Segment(name: String(path.split(separator: "/").last!), header: header, blocks: blocks)
        }
    }

    func raw(_ block: Block) -> [UInt8] {
        try! block.stored.withUnsafeBytes { BlockReader.rawPayload(header: block.header, stored: $0) }.get()
    }

    /// Replaces a block's canonical payload, fixing sizes and both cheap checksums (not the chain).
    mutating func setRaw(segment s: Int, block b: Int, _ raw: [UInt8]) {
        var block = segments[s].blocks[b]
        let compressed = raw.withUnsafeBytes { try! LZ4.compress($0) }
        block.stored = compressed.count < raw.count ? compressed : raw
        block.header.codec = compressed.count < raw.count ? .lz4 : .none
        block.header.storedBytes = UInt32(block.stored.count)
        block.header.rawBytes = UInt32(raw.count)
        block.header.payloadChecksum = XXH64.hash(block.stored)
        segments[s].blocks[b] = block
    }

    /// Recomputes every chain hash and segment link, as a forger with write access would.
    mutating func rechain() {
        var previous = Digest32.zero
        let hasher = SHA256Hasher()
        for s in segments.indices {
            segments[s].header.previousChainHash = previous
            for b in segments[s].blocks.indices {
                let raw = raw(segments[s].blocks[b])
                var header = segments[s].blocks[b].header
                header.chainHash = raw.withUnsafeBytes { computeChainHash(previous: previous, header: header, rawPayload: $0, hasher: hasher) }
                segments[s].blocks[b].header = header
                previous = header.chainHash
            }
        }
    }

    func write(into files: inout [String: [UInt8]]) {
        for segment in segments {
            var bytes = segment.header.encode()
            for block in segment.blocks {
                block.header.encode(into: &bytes)
                bytes += block.stored
            }
            files[segmentPath(segment.name)] = bytes
        }
    }

    func offset(segment s: Int, block b: Int) -> UInt64 {
        UInt64(SegmentHeader.size + segments[s].blocks.prefix(b).reduce(0) { $0 + $1.header.totalBytes })
    }
}

final class TamperTests: XCTestCase {
    struct Ledger { var files: [String: [UInt8]]; var events: [Event]; var chainHash: Digest32 }

    func makeLedger(seed: UInt64) throws -> Ledger {
        let fs = SimulatedFileSystem()
        let log = try openLog(fs, LogOptions(segmentBytesMax: 2000, blockEventsMax: 4))
        var factory = EventFactory(seed: seed, extremeValues: false)
        var events = [Event]()
        for i in 0..<10 {
            var batch = factory.events(factory.int(2...10))
            batch[0].sub = "alice-\(i)"
            try log.append(batch)
            events += batch
        }
        XCTAssertGreaterThanOrEqual(log.segments.count, 3, "seed \(seed)")
        let chain = log.chainHash
        try log.close()
        return Ledger(files: fs.snapshot(), events: events, chainHash: chain)
    }

    func testRemovedMiddleSegmentIsReportedAsMissingEvents() throws {
        let seed = testSeed(0x7A1)
        let ledger = try makeLedger(seed: seed)
        let parsed = ParsedLedger(ledger.files)
        let removed = parsed.segments[1]
        var files = ledger.files
        files[segmentPath(removed.name)] = nil
        files[indexPath(removed.name)] = nil
        let fs = SimulatedFileSystem.from(files)
        let first = removed.blocks.first!.header.firstSeq, last = removed.blocks.last!.header.lastSeq

        let problem = try verify(fs).problem
        XCTAssertEqual(problem?.segment, parsed.segments[2].name, "seed \(seed): \(String(describing: problem))")
        XCTAssertEqual(problem?.offset, 0, "seed \(seed)")
        XCTAssertEqual(problem?.firstSeq, first, "seed \(seed)")
        XCTAssertEqual(problem?.lastSeq, last, "seed \(seed)")
        XCTAssertTrue(problem?.reason.contains("missing") == true, "seed \(seed): \(String(describing: problem))")

        let log = try openLog(fs)
        XCTAssertTrue(log.isReadOnly, "seed \(seed)")
        XCTAssertTrue(log.recovery.damage.contains { $0.firstSeq == first && $0.lastSeq == last && $0.segment == parsed.segments[2].name },
                      "seed \(seed): \(log.recovery)")
        XCTAssertEqual(fs.segmentPaths().count, parsed.segments.count - 1, "seed \(seed): nothing more is removed")
    }

    func testRemovedFirstSegmentIsReportedAsMissingEvents() throws {
        let seed: UInt64 = 2
        let ledger = try makeLedger(seed: seed)
        let parsed = ParsedLedger(ledger.files)
        var files = ledger.files
        files[segmentPath(parsed.segments[0].name)] = nil
        let problem = try verify(SimulatedFileSystem.from(files)).problem
        XCTAssertEqual(problem?.firstSeq, 1, "seed \(seed)")
        XCTAssertEqual(problem?.lastSeq, parsed.segments[0].blocks.last!.header.lastSeq, "seed \(seed)")
    }

    func testReorderedBlocksAreFoundWhereTheOrderBreaks() throws {
        let seed = testSeed(0x7A2)
        let ledger = try makeLedger(seed: seed)
        let lastSegment = ParsedLedger(ledger.files).segments.count - 1
        for s in [0, 1, lastSegment] {
            var parsed = ParsedLedger(ledger.files)
            let count = parsed.segments[s].blocks.count
            // The last segment may hold a single block; the sealed ones never do.
            guard count >= 2 else { XCTAssertEqual(s, lastSegment, "seed \(seed)"); continue }
            let b = count >= 3 ? 1 : 0
            parsed.segments[s].blocks.swapAt(b, b + 1)
            var files = ledger.files
            parsed.write(into: &files)
            let moved = parsed.segments[s].blocks[b].header
            let problem = try verify(SimulatedFileSystem.from(files)).problem
            let context = "seed \(seed) segment \(s): \(String(describing: problem))"
            XCTAssertEqual(problem?.segment, parsed.segments[s].name, context)
            XCTAssertEqual(problem?.offset, parsed.offset(segment: s, block: b), context)
            XCTAssertEqual(problem?.firstSeq, moved.firstSeq, context)
            XCTAssertTrue(problem?.reason.contains("reordered") == true, context)
            if s == lastSegment {
                // The last segment is scanned on open: reordering there is damage, not a tail.
                let log = try openLog(SimulatedFileSystem.from(files))
                XCTAssertTrue(log.isReadOnly, "\(context): \(log.recovery)")
                XCTAssertNil(log.recovery.tailCut, context)
            }
        }
    }

    /// The raw payload with one letter of the block's "alice-N" string changed, if it has one.
    func editedRaw(_ parsed: ParsedLedger, segment s: Int, block b: Int) -> [UInt8]? {
        var raw = parsed.raw(parsed.segments[s].blocks[b])
        let target = Array("alice-".utf8)
        guard let at = (0...(raw.count - target.count)).first(where: { Array(raw[$0..<($0 + target.count)]) == target }) else { return nil }
        raw[at] ^= 0x01
        return raw
    }

    func testEditedPayloadWithFixedChecksumsBreaksTheChainThere() throws {
        let seed = testSeed(0x7A3)
        let ledger = try makeLedger(seed: seed)
        var parsed = ParsedLedger(ledger.files)
        let s = 1
        // A block in the middle segment holding a string to edit (each batch's first event has one).
        let b = try XCTUnwrap(parsed.segments[s].blocks.indices.first { editedRaw(parsed, segment: s, block: $0) != nil }, "seed \(seed)")
        let raw = editedRaw(parsed, segment: s, block: b)!
        XCTAssertNoThrow(try BlockPayloadDecoder.decode(raw), "seed \(seed): the edit must keep the payload decodable")
        parsed.setRaw(segment: s, block: b, raw)
        var files = ledger.files
        parsed.write(into: &files)
        let fs = SimulatedFileSystem.from(files)

        let problem = try verify(fs).problem
        let block = parsed.segments[s].blocks[b].header
        let context = "seed \(seed): \(String(describing: problem))"
        XCTAssertEqual(problem?.segment, parsed.segments[s].name, context)
        XCTAssertEqual(problem?.offset, parsed.offset(segment: s, block: b), context)
        XCTAssertEqual(problem?.firstSeq, block.firstSeq, context)
        XCTAssertEqual(problem?.lastSeq, block.lastSeq, context)
        XCTAssertTrue(problem?.reason.contains("chain hash mismatch") == true, context)
    }

    func testRewrittenHistoryPassesVerifyButNotTheDigest() throws {
        let seed = testSeed(0x7A4)
        let ledger = try makeLedger(seed: seed)
        let fs = SimulatedFileSystem.from(ledger.files)
        let key = try DigestKey.parse(Array("0123456789abcdef0123456789ABCDEF".utf8), path: "test")
        let log = try openLog(fs)
        let digest = try ChainDigest.sign(seq: log.lastSeq, chainHash: log.chainHash, key: key)
        var factory = EventFactory(seed: seed, extremeValues: false)
        try log.append(factory.events(7))
        try log.close()

        // The digest still describes the history up to its seq after more appends.
        var verifier = Verifier(directory: ledgerDirectory, fileSystem: fs)
        verifier.stopAtSeq = digest.seq
        var report = try verifier.run()
        XCTAssertNil(report.problem, "seed \(seed)")
        XCTAssertEqual(report.lastSeq, digest.seq, "seed \(seed)")
        XCTAssertEqual(report.chainHash, digest.chainHash, "seed \(seed)")
        XCTAssertNil(digest.signatureProblem(key: key))

        // Forge: change an early block and recompute every chain hash after it.
        var files = fs.snapshot()
        var parsed = ParsedLedger(files)
        let raw = try XCTUnwrap(editedRaw(parsed, segment: 0, block: 0), "seed \(seed)")
        parsed.setRaw(segment: 0, block: 0, raw)
        parsed.rechain()
        parsed.write(into: &files)
        let forged = SimulatedFileSystem.from(files)
        XCTAssertNil(try verify(forged).problem, "seed \(seed): a consistent rewrite passes plain verify")
        verifier = Verifier(directory: ledgerDirectory, fileSystem: forged)
        verifier.stopAtSeq = digest.seq
        report = try verifier.run()
        XCTAssertEqual(report.lastSeq, digest.seq, "seed \(seed)")
        XCTAssertNotEqual(report.chainHash, digest.chainHash, "seed \(seed): the digest must expose the rewrite")
    }

    func testForgedEmptyPayloadIsRefusedWithoutTrapping() throws {
        // A header that claims zero stored bytes, with every checksum and hash made consistent:
        // readers must say the payload does not decode, not trap on an empty buffer.
        let seed: UInt64 = 7
        let ledger = try makeLedger(seed: seed)
        var parsed = ParsedLedger(ledger.files)
        parsed.segments[0].blocks[1].stored = []
        parsed.segments[0].blocks[1].header.codec = .none
        parsed.segments[0].blocks[1].header.storedBytes = 0
        parsed.segments[0].blocks[1].header.rawBytes = 0
        parsed.segments[0].blocks[1].header.payloadChecksum = XXH64.hash([UInt8]())
        parsed.rechain()
        var files = ledger.files
        parsed.write(into: &files)
        let fs = SimulatedFileSystem.from(files)
        XCTAssertNil(try verify(fs, decode: false).problem, "seed \(seed)")
        let problem = try verify(fs).problem
        XCTAssertEqual(problem?.offset, parsed.offset(segment: 0, block: 1), "seed \(seed)")
        XCTAssertTrue(problem?.reason.contains("does not decode") == true, "seed \(seed): \(String(describing: problem))")
        let log = try openLog(fs, LogOptions(readOnly: true))
        XCTAssertThrowsError(try log.readBlock(log.blocks[1]), "seed \(seed)")
        XCTAssertEqual(try log.readBlock(log.blocks[0]).events, Array(ledger.events.prefix(Int(log.blocks[0].header.eventCount))), "seed \(seed)")
    }

    func testDigestStopsAtItsSeqEvenIfLaterSegmentsAreDamaged() throws {
        let seed: UInt64 = 5
        let ledger = try makeLedger(seed: seed)
        let parsed = ParsedLedger(ledger.files)
        let stop = parsed.segments[0].blocks.last!.header.lastSeq
        var files = ledger.files
        files[segmentPath(parsed.segments[2].name)]![4] ^= 0x40
        var verifier = Verifier(directory: ledgerDirectory, fileSystem: SimulatedFileSystem.from(files))
        verifier.stopAtSeq = stop
        let report = try verifier.run()
        XCTAssertNil(report.problem, "seed \(seed): history up to seq \(stop) is intact: \(String(describing: report.problem))")
        XCTAssertEqual(report.lastSeq, stop, "seed \(seed)")
        XCTAssertEqual(report.chainHash, parsed.segments[0].blocks.last!.header.chainHash, "seed \(seed)")
    }

    func testHMACDigestSignatures() throws {
        let secret = (0..<32).map { UInt8(0x41 + $0 % 26) }
        let key = try DigestKey.parse(secret, path: "hmac.key")
        XCTAssertEqual(key.algorithm, .hmacSHA256)
        XCTAssertEqual(try DigestKey.parse(secret + Array(" \n".utf8), path: "k").id, key.id, "trailing whitespace is not part of the secret")
        XCTAssertThrowsError(try DigestKey.parse(Array("short\n".utf8), path: "k"))
        let chain = SHA256.hash(Array("head".utf8))
        let digest = try ChainDigest.sign(seq: 1234, chainHash: chain, key: key)
        XCTAssertEqual(digest.algorithm, .hmacSHA256)
        XCTAssertEqual(digest.keyID, key.id)
        XCTAssertFalse(key.id.contains(Hex.encode(secret.prefix(8))), "the key id must not reveal the secret")
        XCTAssertNil(digest.signatureProblem(key: key))
        checkTampering(digest, key: key, "hmac")
        XCTAssertNotNil(digest.signatureProblem(key: try DigestKey.parse(Array(secret.reversed()), path: "other")), "wrong key")
    }

    func testEd25519DigestSignatures() throws {
        let directory = temporaryDirectory("ed25519")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func generate(_ name: String) throws -> (private: DigestKey, public: DigestKey) {
            let path = directory + "/\(name).pem"
            _ = try runCommand("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", path])
            let publicPEM = try runCommand("/usr/bin/openssl", ["pkey", "-in", path, "-pubout"])
            let privatePEM = try Data(contentsOf: URL(fileURLWithPath: path))
            return (try DigestKey.parse(Array(privatePEM), path: path), try DigestKey.parse(Array(publicPEM), path: path + ".pub"))
        }
        let (privateKey, publicKey) = try generate("signer")
        XCTAssertEqual(privateKey.algorithm, .ed25519)
        let chain = SHA256.hash(Array("head".utf8))
        let digest = try ChainDigest.sign(seq: 99, chainHash: chain, key: privateKey)
        XCTAssertEqual(digest.signature.count, 64)
        XCTAssertNil(digest.signatureProblem(key: privateKey))
        XCTAssertNil(digest.signatureProblem(key: publicKey), "readers verify with the public key")
        XCTAssertThrowsError(try ChainDigest.sign(seq: 1, chainHash: chain, key: publicKey), "a public key cannot sign")
        checkTampering(digest, key: publicKey, "ed25519")
        let (otherPrivate, otherPublic) = try generate("other")
        XCTAssertNotNil(digest.signatureProblem(key: otherPublic), "wrong key")
        XCTAssertNotNil(digest.signatureProblem(key: otherPrivate), "wrong key")
        XCTAssertNotNil(digest.signatureProblem(key: try DigestKey.parse(Array(repeating: 0x61, count: 32), path: "hmac")), "wrong algorithm")
        XCTAssertThrowsError(try DigestKey.parse(Array("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".utf8), path: "bad.pem"))
        // A PEM file with a leading blank line is still an Ed25519 key, not an HMAC secret.
        let pem = try Data(contentsOf: URL(fileURLWithPath: directory + "/signer.pem"))
        XCTAssertEqual(try DigestKey.parse(Array("\n".utf8) + Array(pem), path: "padded.pem").algorithm, .ed25519)
    }

    func checkTampering(_ digest: ChainDigest, key: DigestKey, _ label: String) {
        var d = digest
        d.seq += 1
        XCTAssertNotNil(d.signatureProblem(key: key), "\(label): seq changed")
        d = digest
        var chain = d.chainHash.array
        chain[31] ^= 1
        d.chainHash = Digest32(chain)!
        XCTAssertNotNil(d.signatureProblem(key: key), "\(label): chain hash changed")
        d = digest
        d.signature[0] ^= 0x80
        XCTAssertNotNil(d.signatureProblem(key: key), "\(label): signature changed")
        d = digest
        d.signature.removeLast()
        XCTAssertNotNil(d.signatureProblem(key: key), "\(label): signature truncated")
        d = digest
        d.signature = []
        XCTAssertNotNil(d.signatureProblem(key: key), "\(label): signature empty")
    }
}
