// The binary block format: payload codec round trips and canonical bytes, pinned sizes and
// hashes (a change to any of them is a format change and must bump a version), decoders that
// never trap on hostile bytes, and the XXH64 checksum against the reference implementation.
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

final class BlockCodecTests: XCTestCase {
    func testPayloadRoundTripOverRandomEventSequences() throws {
        let base = testSeed(0xB10C)
        for round in 0..<300 {
            let seed = base &+ UInt64(round)
            var factory = EventFactory(seed: seed)
            let events = factory.events(factory.int(1...60))
            let payload = encodePayload(events)
            let decoded: DecodedBlock
            do { decoded = try BlockPayloadDecoder.decode(payload) } catch {
                XCTFail("seed \(seed): payload of \(events.count) events does not decode: \(error)"); continue
            }
            XCTAssertEqual(decoded.count, events.count, "seed \(seed)")
            let back = decoded.events
            for i in events.indices where i < back.count && back[i] != events[i] {
                XCTFail("seed \(seed): event \(i) differs:\n  in:  \(events[i])\n  out: \(back[i])"); break
            }
            // Field-wise equality of strings is canonical equivalence in Swift; the format promises bytes.
            for i in events.indices where i < back.count {
                for f in StringField.allCases {
                    XCTAssertEqual(f.value(in: back[i]).map { Array($0.utf8) }, f.value(in: events[i]).map { Array($0.utf8) },
                                   "seed \(seed): event \(i) field \(f) changed bytes")
                }
                func attrBytes(_ e: Event) -> [[UInt8]] { e.attrs.map { Array($0.key.utf8) + [0] + Array($0.value.utf8) }.sorted { $0.lexicographicallyPrecedes($1) } }
                XCTAssertEqual(attrBytes(back[i]), attrBytes(events[i]), "seed \(seed): event \(i) attrs changed bytes")
            }
            XCTAssertEqual(encodePayload(back), payload, "seed \(seed): re-encoding the decoded events changed the bytes")
            XCTAssertEqual(encodePayload(events), payload, "seed \(seed): the encoding is not a function of the events")
        }
    }

    func testTokenShapesSurviveAndPackOnlyWhenLossless() throws {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
        let cases: [(String, Int)] = [
            // (token, bytes the string-table entry takes: kind byte + packed or varint length + text)
            (uuid, 1 + 16),
            (uuid.uppercased(), 1 + 1 + 36),
            ("AAECAwQFBgcICQoLDA0ODw", 1 + 16),          // base64url of bytes 0...15, canonical
            ("AAECAwQFBgcICQoLDA0ODx", 1 + 1 + 22),      // same with low bits set in the last char
            ("sha256:" + String(repeating: "ab", count: 32), 1 + 32),
            ("sha256:" + String(repeating: "AB", count: 32), 1 + 1 + 71),
            ("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", 1 + 1 + 36),
            ("", 1 + 1),
        ]
        for (token, entryBytes) in cases {
            let event = Event(type: .validated, ts: 1, token: token)
            let payload = encodePayload([event])
            XCTAssertEqual(try BlockPayloadDecoder.decode(payload).events, [event], token)
            XCTAssertEqual(Array(try BlockPayloadDecoder.decode(payload).strings[0].utf8), Array(token.utf8), token)
            // count varint, string count varint, the entry, stream count, 25 lengths, 25 streams
            // of which types, presence, ts and token reference take one byte each.
            XCTAssertEqual(payload.count, 1 + 1 + entryBytes + 1 + 25 + 4, "string table entry size for \(token)")
        }
    }

    /// Pins the payload bytes of a fixed event list. If this fails the on-disk format changed:
    /// bump `BlockHeader.formatVersion`, document it in FORMAT.md and keep old ledgers readable.
    func testPayloadChecksumStability() throws {
        let events = Self.fixedEvents
        let payload = encodePayload(events)
        XCTAssertEqual(payload.count, Self.pinnedPayloadBytes)
        XCTAssertEqual(SHA256.hash(payload).hex, Self.pinnedPayloadSHA256)
        XCTAssertEqual(try BlockPayloadDecoder.decode(payload).events, events)

        let header = BlockHeader(codec: .lz4, firstSeq: 42, eventCount: UInt32(events.count), storedBytes: 300,
                                 rawBytes: UInt32(payload.count), minTs: 1_700_000_000_000, maxTs: 1_700_000_009_000,
                                 receivedAt: 1_700_000_010_000, payloadChecksum: 0x0123_4567_89AB_CDEF, chainHash: .zero)
        let chain = payload.withUnsafeBytes { computeChainHash(previous: Digest32(Array(repeating: 7, count: 32))!, header: header, rawPayload: $0, hasher: SHA256Hasher()) }
        XCTAssertEqual(chain.hex, Self.pinnedChainHash)
        var withChain = header
        withChain.chainHash = chain
        var headerBytes = [UInt8]()
        withChain.encode(into: &headerBytes)
        XCTAssertEqual(SHA256.hash(headerBytes).hex, Self.pinnedBlockHeaderSHA256)
        let segmentHeader = SegmentHeader(firstSeq: 42, previousChainHash: chain).encode()
        XCTAssertEqual(SHA256.hash(segmentHeader).hex, Self.pinnedSegmentHeaderSHA256)
        XCTAssertEqual(SegmentHeader.fileName(firstSeq: 42), "00000000000000000042.seg")
    }

    func testHeaderSizesAndRoundTrip() throws {
        XCTAssertEqual(BlockHeader.size, 128)
        XCTAssertEqual(SegmentHeader.size, 128)
        let seed = testSeed(0x4EAD)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<200 {
            let first = UInt64.random(in: 1...(UInt64.max >> 1), using: &rng)
            let header = BlockHeader(codec: Bool.random(using: &rng) ? .lz4 : BlockHeader.Codec.none, firstSeq: first,
                                     eventCount: UInt32.random(in: 1...1000, using: &rng), storedBytes: UInt32.random(in: 0...100_000, using: &rng),
                                     rawBytes: UInt32.random(in: 0...100_000, using: &rng), minTs: Int64.random(in: .min ... .max, using: &rng),
                                     maxTs: Int64.random(in: .min ... .max, using: &rng), receivedAt: Int64.random(in: .min ... .max, using: &rng),
                                     payloadChecksum: rng.next(), chainHash: Digest32(bytes: (rng.next(), rng.next(), rng.next(), rng.next())))
            var bytes = [UInt8]()
            header.encode(into: &bytes)
            XCTAssertEqual(bytes.count, BlockHeader.size, "seed \(seed)")
            XCTAssertEqual(bytes.withUnsafeBytes { BlockHeader.decode($0) }, .success(header), "seed \(seed)")
            // Every single-bit change is refused.
            let bit = Int.random(in: 0..<(BlockHeader.size * 8), using: &rng)
            bytes[bit / 8] ^= 1 << (bit % 8)
            if case .success = bytes.withUnsafeBytes({ BlockHeader.decode($0) }) { XCTFail("seed \(seed): a flipped bit \(bit) was accepted") }

            let segment = SegmentHeader(firstSeq: first, previousChainHash: header.chainHash)
            var segmentBytes = segment.encode()
            XCTAssertEqual(segmentBytes.count, SegmentHeader.size, "seed \(seed)")
            XCTAssertEqual(segmentBytes.withUnsafeBytes { SegmentHeader.decode($0) }, .success(segment), "seed \(seed)")
            segmentBytes[bit / 8] ^= 1 << (bit % 8)
            if case .success = segmentBytes.withUnsafeBytes({ SegmentHeader.decode($0) }) { XCTFail("seed \(seed): a flipped segment header bit \(bit) was accepted") }
        }
        XCTAssertEqual(SegmentHeader.firstSeq(fromFileName: SegmentHeader.fileName(firstSeq: .max)), .max)
        XCTAssertNil(SegmentHeader.firstSeq(fromFileName: "0000000000000000004x.seg"))
        XCTAssertNil(SegmentHeader.firstSeq(fromFileName: "99999999999999999999.seg"), "overflows UInt64")
    }

    func testDecoderRefusesEveryTruncation() throws {
        let seed = testSeed(0x7A11)
        var factory = EventFactory(seed: seed)
        let payload = encodePayload(factory.events(40))
        for length in 0..<payload.count {
            // The stream lengths account for every byte, so no strict prefix is a valid payload.
            XCTAssertThrowsError(try BlockPayloadDecoder.decode(Array(payload.prefix(length))), "seed \(seed): prefix of \(length) bytes decoded")
        }
    }

    func testDecoderNeverTrapsOnFlippedOrRandomBytes() throws {
        let seed = testSeed(0xF119)
        var rng = SplitMix64(seed: seed)
        var factory = EventFactory(seed: seed)
        var decodedAnyway = 0
        for round in 0..<40 {
            let payload = encodePayload(factory.events(Int.random(in: 1...30, using: &rng)))
            for _ in 0..<100 {
                var damaged = payload
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let bit = Int.random(in: 0..<(damaged.count * 8), using: &rng)
                    damaged[bit / 8] ^= 1 << (bit % 8)
                }
                if checkDecodes(damaged, "seed \(seed) round \(round) flips") { decodedAnyway += 1 }
                var replaced = payload
                replaced[Int.random(in: 0..<replaced.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                _ = checkDecodes(replaced, "seed \(seed) round \(round) replaced byte")
            }
        }
        for round in 0..<3000 {
            var bytes = (0..<Int.random(in: 0...160, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if round % 2 == 0 && bytes.count > 2 {
                // Plausible small counts get the decoder past the first checks.
                bytes[0] = UInt8.random(in: 0...8, using: &rng)
                bytes[1] = UInt8.random(in: 0...3, using: &rng)
            }
            _ = checkDecodes(bytes, "seed \(seed) random round \(round)")
        }
        XCTAssertLessThan(decodedAnyway, 4000, "seed \(seed): most damaged payloads must be refused")
    }

    /// A payload either throws or decodes to events that survive a canonical round trip.
    private func checkDecodes(_ bytes: [UInt8], _ context: String) -> Bool {
        guard let block = try? BlockPayloadDecoder.decode(bytes) else { return false }
        let events = block.events
        let again = encodePayload(events)
        XCTAssertEqual(try? BlockPayloadDecoder.decode(again).events, events, "\(context): decoded events do not round-trip")
        return true
    }

    func testEventCountCannotOutgrowThePayload() {
        // 1 << 20 events claimed by a few bytes: must be refused before columns are allocated.
        var payload = [UInt8]()
        appendVarint(1 << 20, to: &payload)
        appendVarint(0, to: &payload)
        appendVarint(25, to: &payload)
        payload += [UInt8](repeating: 0, count: 25)
        XCTAssertThrowsError(try BlockPayloadDecoder.decode(payload)) { error in
            // Refused right after the stream lengths, before any column is allocated.
            XCTAssertEqual((error as? BlockPayloadError)?.offset, payload.count, "\(error)")
            XCTAssertTrue("\(error)".contains("type"), "\(error)")
        }
    }

    func testEncodedBlockRefusesEventsTheDecoderWouldRefuse() throws {
        // A block the log acknowledges must be readable back: values outside the decoder's
        // ranges are refused at encode time, not discovered at replay.
        for bad in [Event(type: .validated, ts: 1, token: "t", status: 1000), Event(type: .validated, ts: 1, token: "t", status: -1),
                    Event(type: .deploy, ts: 1, marker: "m", weight: 101), Event(type: .deploy, ts: 1, marker: "m", weight: -5)] {
            XCTAssertThrowsError(try EncodedBlock(events: [Event(type: .issued, ts: 0, token: "ok"), bad]), "\(bad)")
        }
        let good = [Event(type: .validated, ts: 1, token: "t", status: 999), Event(type: .deploy, ts: 2, marker: "m", weight: 0)]
        let block = try EncodedBlock(events: good)
        XCTAssertEqual(try BlockPayloadDecoder.decode(block.raw).events, good)
    }

    func testEncodedBlockStoresCompressedOrRawAndReadsBack() throws {
        let seed = testSeed(0xE9C0)
        var factory = EventFactory(seed: seed, extremeValues: false)
        for round in 0..<30 {
            let events = factory.events(factory.int(1...200))
            let block = try EncodedBlock(events: events)
            XCTAssertEqual(block.eventCount, events.count, "seed \(seed)")
            XCTAssertEqual(block.minTs, events.map(\.ts).min(), "seed \(seed)")
            XCTAssertEqual(block.maxTs, events.map(\.ts).max(), "seed \(seed)")
            XCTAssertLessThanOrEqual(block.stored.count, block.raw.count, "seed \(seed) round \(round)")
            let header = BlockHeader(codec: block.codec, firstSeq: 1, eventCount: UInt32(block.eventCount), storedBytes: UInt32(block.stored.count),
                                     rawBytes: UInt32(block.raw.count), minTs: block.minTs, maxTs: block.maxTs, receivedAt: 0,
                                     payloadChecksum: XXH64.hash(block.stored), chainHash: .zero)
            let raw = try block.stored.withUnsafeBytes { BlockReader.rawPayload(header: header, stored: $0) }.get()
            XCTAssertEqual(raw, block.raw, "seed \(seed) round \(round)")
            XCTAssertEqual(try BlockReader.decode(header: header, raw: raw).get().events, events, "seed \(seed) round \(round)")
            let validated = try EncodedBlock(validatedPayload: block.raw)
            XCTAssertEqual(validated.raw, block.raw, "seed \(seed)")
            XCTAssertEqual(validated.minTs, block.minTs, "seed \(seed)")
            XCTAssertEqual(validated.maxTs, block.maxTs, "seed \(seed)")
        }
        // A block stored as it is (codec none) reads back the same way.
        let raw = encodePayload(Self.fixedEvents)
        let header = BlockHeader(codec: .none, firstSeq: 1, eventCount: UInt32(Self.fixedEvents.count), storedBytes: UInt32(raw.count),
                                 rawBytes: UInt32(raw.count), minTs: .min, maxTs: .max, receivedAt: 0, payloadChecksum: XXH64.hash(raw), chainHash: .zero)
        XCTAssertEqual(try raw.withUnsafeBytes { BlockReader.rawPayload(header: header, stored: $0) }.get(), raw)
        XCTAssertEqual(try BlockReader.decode(header: header, raw: raw).get().events, Self.fixedEvents)
        var short = header
        short.rawBytes -= 1
        if case .success = raw.withUnsafeBytes({ BlockReader.rawPayload(header: short, stored: $0) }) { XCTFail("a size mismatch was accepted") }
        var narrow = header
        narrow.maxTs = Self.fixedEvents.map(\.ts).max()! - 1
        if case .success = BlockReader.decode(header: narrow, raw: raw) { XCTFail("events outside the header's time range were accepted") }
    }

    func testLZ4DecompressNeverTrapsOnGarbage() {
        let seed = testSeed(0x1A4)
        var rng = SplitMix64(seed: seed)
        let text = Array(String(repeating: "token issued by gateway gw-1 ", count: 40).utf8)
        let compressed = text.withUnsafeBytes { try! LZ4.compress($0) }
        for round in 0..<2000 {
            var input = compressed
            if round % 3 == 0 { input = Array(input.prefix(Int.random(in: 0...input.count, using: &rng))) }
            else { let bit = Int.random(in: 0..<(input.count * 8), using: &rng); input[bit / 8] ^= 1 << (bit % 8) }
            var out = [UInt8](repeating: 0, count: round % 5 == 0 ? Int.random(in: 0...2000, using: &rng) : text.count)
            let ok = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { LZ4.decompress(i, into: $0) } }
            if ok && out.count == text.count && input == compressed { XCTAssertEqual(out, text, "seed \(seed) round \(round)") }
        }
    }

    func testXXH64KnownVectors() {
        // Checked against python-xxhash 3.x (the reference C implementation).
        XCTAssertEqual(XXH64.hash([UInt8]()), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(XXH64.hash(Array("a".utf8)), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(XXH64.hash(Array("abc".utf8)), 0x44BC_2CF5_AD77_0999)
        XCTAssertEqual(XXH64.hash(Array("abc".utf8), seed: 1), 0xBEA9_CA81_9932_8908)
        XCTAssertEqual(XXH64.hash(Array("The quick brown fox jumps over the lazy dog, 0123456789!".utf8)), 0xE7F3_3CF0_46A9_0DE0)
        XCTAssertEqual(XXH64.hash((0..<100).map { UInt8($0) }), 0x6AC1_E580_3216_6597)
        // Unaligned input gives the same answer.
        let shifted = [UInt8(9)] + (0..<100).map { UInt8($0) }
        XCTAssertEqual(shifted.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[1...])) }, 0x6AC1_E580_3216_6597)
    }

    static let fixedEvents: [Event] = [
        Event(type: .issued, ts: 1_700_000_000_000, token: "0f8fad5b-d9cb-469f-a165-70867728950e", tokenType: "access", sub: "alice",
              clientID: "web", iss: "https://auth.example", aud: "api", scope: "read write", exp: 1_700_000_360_000, gateway: "gw-1",
              release: "v1.2.3", track: "stable", route: "/v1/orders", method: "GET", status: 200, clientIP: "10.0.0.1",
              requestID: "req-1", attrs: ["region": "eu-west-1", "ключ": "значение"]),
        Event(type: .validated, ts: 1_700_000_001_000, token: "0f8fad5b-d9cb-469f-a165-70867728950e", tokenType: "access", sub: "alice",
              clientID: "web", gateway: "gw-2", release: "v1.2.3", track: "stable", route: "/v1/orders", method: "GET", status: 200),
        Event(type: .refreshed, ts: 1_700_000_002_000, token: "AAECAwQFBgcICQoLDA0ODw", tokenType: "refresh", sub: "alice",
              exp: 1_700_086_400_000, parent: "0f8fad5b-d9cb-469f-a165-70867728950e"),
        Event(type: .rejected, ts: 1_700_000_001_500, token: "sha256:" + String(repeating: "0123456789abcdef", count: 4), status: 401,
              reason: "invalid_signature"),
        Event(type: .revoked, ts: 1_700_000_005_000, token: "AAECAwQFBgcICQoLDA0ODw", reason: "revoked"),
        Event(type: .deploy, ts: 1_700_000_009_000, release: "v1.2.4", track: "canary", marker: "m-1", weight: 10),
    ]
    static let pinnedPayloadBytes = 410
    static let pinnedPayloadSHA256 = "3ab1c4fba63d3670a5af1fe62376c83a4dc121a1e4299078d3cfe1f2c93265e9"
    static let pinnedChainHash = "432578158dffbd8b8bb6a3584cec69d04c2d177f0f2e7bacc53d81a58985847d"
    static let pinnedBlockHeaderSHA256 = "f072ba4dc484dfbcf695bd124e6bfb79a265dabafa1e898a4175942fcd062017"
    static let pinnedSegmentHeaderSHA256 = "a12fdfb1773a4d04211c1d8c0e079d4c143da9b12bd7c60184c08dbe990a2f58"
}
