// Selective row decoding (`BlockPayloadDecoder.decode(_:rows:)`, `tokenKeys`) against the full
// decoder: the same events for the rows asked for, inherited fields included, and the same
// verdict (and error) on damaged payloads. Realistic workload blocks are compared in
// LedgerStorageTests/TokenIndexTests.swift (this target does not depend on LedgerWorkload).
import XCTest
@testable import LedgerModel

final class RowDecodeTests: XCTestCase {
    /// Random events over a small pool of token ids (every packed shape), where a token's next
    /// event often repeats its previous event's fields: the inherit stream (2) is busy.
    func block(_ rng: inout SeededGenerator, count: Int) -> [Event] {
        let pool: [String] = (0..<Int.random(in: 1...12, using: &rng)).map { k in
            switch k % 5 {
            case 0: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f\(k % 10)"
            case 1: "sha256:" + String(repeating: "ab", count: 31) + String(format: "%02x", k)
            case 2: "AAAAAAAAAAAAAAAAAAAAA" + ["A", "Q", "g", "w"][k % 4]
            case 3: "tok-\(k)"
            default: RandomEvent.tokenID(&rng)
            }
        }
        var last = [String: Event]()
        var out = [Event]()
        for _ in 0..<count {
            var e = RandomEvent.make(&rng)
            if e.token != nil || Int.random(in: 0..<4, using: &rng) == 0 {
                let token = pool.randomElement(using: &rng)!
                if let previous = last[token], Int.random(in: 0..<3, using: &rng) > 0 {
                    let type = e.type, ts = e.ts
                    e = previous
                    e.type = type
                    e.ts = ts
                    if Bool.random(using: &rng) { e.gateway = nil }
                    if Bool.random(using: &rng) { e.release = "v\(Int.random(in: 1...3, using: &rng))" }
                }
                e.token = token
                if e.type == .refreshed && Bool.random(using: &rng) { e.parent = pool.randomElement(using: &rng)! }
                last[token] = e
            }
            out.append(e)
        }
        return out
    }

    func encode(_ events: [Event]) -> [UInt8] {
        var encoder = BlockPayloadEncoder(expectedEvents: events.count)
        for e in events { encoder.append(e) }
        return encoder.finish()
    }

    func testSelectedRowsEqualTheFullDecodersEvents() throws {
        let seed = testSeed(0x5E1EC7)
        var rng = SeededGenerator(seed: seed)
        var inheritedSeen = 0
        for round in 0..<300 {
            let events = block(&rng, count: Int.random(in: 1...(round % 10 == 0 ? 600 : 60), using: &rng))
            let payload = encode(events)
            let full = try BlockPayloadDecoder.decode(payload)
            let rows = (0..<events.count).filter { _ in Int.random(in: 0..<4, using: &rng) == 0 }
            let selected = try BlockPayloadDecoder.decode(payload, rows: rows)
            let c = "seed \(seed), round \(round)"
            XCTAssertEqual(selected.count, full.count, c)
            XCTAssertEqual(selected.minTs, full.ts.min(), c)
            XCTAssertEqual(selected.maxTs, full.ts.max(), c)
            XCTAssertEqual(selected.rows, rows, c)
            XCTAssertEqual(selected.events, rows.map { full.event(at: $0) }, c)
            XCTAssertEqual(selected.events, rows.map { events[$0] }, c)
            XCTAssertEqual(selected.maxTsThrough, rows.map { full.ts[0...$0].max()! }, c)
            // Rows whose fields came through inheritance (same token earlier in the block).
            var seen = Set<String>()
            for (i, e) in events.enumerated() {
                if let t = e.token { if seen.contains(t) && rows.contains(i) { inheritedSeen += 1 }; seen.insert(t) }
            }

            // Token keys: per event its token, and a refresh's parent, hashed as text.
            func h(_ s: String) -> UInt64 { var copy = s; return copy.withUTF8 { fnv($0) } }
            let keys = try BlockPayloadDecoder.tokenKeys(payload) { fnv(UnsafeBufferPointer(start: $0.baseAddress?.assumingMemoryBound(to: UInt8.self), count: $0.count)) }
            var wantRows = [UInt32](), wantHashes = [UInt64]()
            for (i, e) in events.enumerated() {
                if let t = e.token { wantRows.append(UInt32(i)); wantHashes.append(h(t)) }
                if e.type == .refreshed, let p = e.parent { wantRows.append(UInt32(i)); wantHashes.append(h(p)) }
            }
            XCTAssertEqual(keys.rows, wantRows, c)
            XCTAssertEqual(keys.hashes, wantHashes, c)
            XCTAssertEqual(keys.count, events.count, c)
        }
        XCTAssertGreaterThan(inheritedSeen, 100, "seed \(seed): test setup: requested rows with a token seen earlier in the block")
    }

    func testEveryRowAtOnceAndNoRow() throws {
        let seed = testSeed(0xA11)
        var rng = SeededGenerator(seed: seed)
        let events = block(&rng, count: 400)
        let payload = encode(events)
        XCTAssertEqual(try BlockPayloadDecoder.decode(payload, rows: Array(0..<400)).events, events, "seed \(seed)")
        let none = try BlockPayloadDecoder.decode(payload, rows: [])
        XCTAssertTrue(none.events.isEmpty, "seed \(seed)")
        XCTAssertEqual(none.count, 400, "seed \(seed)")
    }

    func testRowsOutOfOrderOrPastTheBlockAreRefused() throws {
        var rng = SeededGenerator(seed: 3)
        let payload = encode(block(&rng, count: 10))
        for rows in [[3, 2], [1, 1], [10], [-1], [0, 11]] {
            XCTAssertThrowsError(try BlockPayloadDecoder.decode(payload, rows: rows), "rows \(rows)")
        }
    }

    /// Damaged payloads: the selective decoders refuse exactly what the full decoder refuses,
    /// with the same error, and never trap.
    func testDamagedPayloadsGetTheFullDecodersVerdict() throws {
        let seed = testSeed(0xBAD5EED)
        var rng = SeededGenerator(seed: seed)
        var refused = 0
        for round in 0..<3000 {
            let events = block(&rng, count: Int.random(in: 1...40, using: &rng))
            var payload = encode(events)
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: payload[Int.random(in: 0..<payload.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1: payload[Int.random(in: 0..<payload.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 2: payload.removeLast(Int.random(in: 1...payload.count, using: &rng))
            case 3: payload.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...payload.count, using: &rng))
            default:
                for _ in 0..<Int.random(in: 2...6, using: &rng) { payload[Int.random(in: 0..<payload.count, using: &rng)] ^= 0xFF }
            }
            let c = "seed \(seed), round \(round)"
            let full = Result { () throws(BlockPayloadError) in try BlockPayloadDecoder.decode(payload) }
            let count = (try? full.get())?.count ?? 0
            let rows = (0..<count).filter { _ in Bool.random(using: &rng) }
            let selected = Result { () throws(BlockPayloadError) in try BlockPayloadDecoder.decode(payload, rows: rows) }
            let keys = Result { () throws(BlockPayloadError) in try BlockPayloadDecoder.tokenKeys(payload) { _ in 1 } }
            switch full {
            case let .success(block):
                XCTAssertEqual(try selected.get().events, rows.map { block.event(at: $0) }, c)
                XCTAssertEqual(try keys.get().count, block.count, c)
            case let .failure(error):
                refused += 1
                guard case let .failure(e1) = selected, case let .failure(e2) = keys else {
                    XCTFail("\(c): the full decoder refuses (\(error)) but a selective one accepts"); continue
                }
                XCTAssertEqual(e1, error, c)
                XCTAssertEqual(e2, error, c)
            }
        }
        XCTAssertGreaterThan(refused, 1000, "seed \(seed): test setup: most damage is refused")
    }
}


extension RowDecodeTests {
    /// Every row naming each token, decoded from checkpoints at many intervals (K = 1, small,
    /// the writers' 256, larger than the block): the full decoder's events and clocks. Rows of
    /// several tokens at random (no token trusted): the same events, or "unresolvable" when a row
    /// inherits from an event the walk skipped; never "damaged".
    func testCheckpointedRowsEqualTheFullDecoder() throws {
        let seed = testSeed(0xC4EC)
        var rng = SeededGenerator(seed: seed)
        var resolved = 0, unresolvable = 0, inheritedRows = 0, exceptions = 0
        for round in 0..<240 {
            let events = block(&rng, count: Int.random(in: 1...(round % 10 == 0 ? 700 : 90), using: &rng))
            let payload = encode(events)
            let full = try BlockPayloadDecoder.decode(payload)
            let k = [1, 2, 3, 7, 16, 64, 256, 1_000_000][round % 8]
            let keys = try BlockPayloadDecoder.tokenKeys(payload, checkpointEvery: k) { _ in 0 }
            let plain = try BlockPayloadDecoder.tokenKeys(payload) { _ in 0 }
            XCTAssertTrue(plain.checkpoints.isEmpty)
            XCTAssertEqual(keys.rows, plain.rows)
            let c = "seed \(seed), round \(round), K \(k)"
            let maxTs = full.ts.max()!
            var firstUse = [String: Int]()
            for (i, e) in events.enumerated() {
                for v in [e.token, e.tokenType, e.sub, e.clientID, e.iss, e.aud, e.scope, e.parent].compactMap({ $0 }) where firstUse[v] == nil { firstUse[v] = i }
            }
            for t in Set(events.compactMap(\.token)).sorted() {
                let rows = events.indices.filter { events[$0].token == t }
                if events[rows[0]].token == t, events[..<rows[0]].contains(where: { $0.parent == t || $0.sub == t }) { exceptions += 1 }
                switch BlockPayloadDecoder.decode(payload, rows: rows, checkpoints: keys.checkpoints, maxTs: maxTs, token: Array(t.utf8)) {
                case let .rows(r):
                    XCTAssertEqual(r.events, rows.map { full.event(at: $0) }, "\(c), token \(t)")
                    XCTAssertEqual(r.maxTsThrough, rows.map { full.ts[0...$0].max()! }, "\(c), token \(t)")
                    XCTAssertEqual(r.count, full.count, c)
                    resolved += 1
                    inheritedRows += rows.count - 1
                case let other:
                    XCTFail("\(c), token \(t): \(other)")
                }
            }
            let rows = (0..<events.count).filter { _ in Int.random(in: 0..<5, using: &rng) == 0 }
            switch BlockPayloadDecoder.decode(payload, rows: rows, checkpoints: keys.checkpoints, maxTs: maxTs, token: nil) {
            case let .rows(r): XCTAssertEqual(r.events, rows.map { full.event(at: $0) }, c)
            case .unresolvable: unresolvable += 1
            case let .damaged(why): XCTFail("\(c): \(why)")
            }
        }
        XCTAssertGreaterThan(resolved, 500, "seed \(seed): test setup")
        XCTAssertGreaterThan(inheritedRows, 500, "seed \(seed): test setup: rows after their token's first")
        XCTAssertGreaterThan(exceptions, 0, "seed \(seed): test setup: a token first used as another field")
        _ = unresolvable
    }

    /// Random damage to checkpoint records (bits, bytes, truncation, insertion, runs of bytes,
    /// another block's record): the decoder never traps, and whatever it answers as rows equals
    /// the full decoder's; everything else is a refusal the caller falls back from.
    func testDamagedCheckpointsNeverTrapOrMislead() throws {
        let seed = testSeed(0xDC4E)
        var rng = SeededGenerator(seed: seed)
        var refused = 0, answered = 0
        var previousRecord = [UInt8]()
        for round in 0..<2000 {
            let events = block(&rng, count: Int.random(in: 1...120, using: &rng))
            let payload = encode(events)
            let full = try BlockPayloadDecoder.decode(payload)
            let k = [1, 3, 8, 32, 500][round % 5]
            var record = try BlockPayloadDecoder.tokenKeys(payload, checkpointEvery: k) { _ in 0 }.checkpoints
            let original = record
            switch Int.random(in: 0..<7, using: &rng) {
            case 0: record[Int.random(in: 0..<record.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1: record[Int.random(in: 0..<record.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 2: record.removeLast(Int.random(in: 1...record.count, using: &rng))
            case 3: record.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...record.count, using: &rng))
            case 4: for _ in 0..<Int.random(in: 2...6, using: &rng) { record[Int.random(in: 0..<record.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            case 5: record = previousRecord
            default:
                let at = Int.random(in: 0..<record.count, using: &rng)
                for i in at..<min(record.count, at + 8) { record[i] = 0xFF }
            }
            previousRecord = original
            let c = "seed \(seed), round \(round)"
            let tokens = Set(events.compactMap(\.token)).sorted()
            let asked: (rows: [Int], token: [UInt8]?)
            if let t = tokens.randomElement(using: &rng), Bool.random(using: &rng) {
                asked = (events.indices.filter { events[$0].token == t }, Array(t.utf8))
            } else {
                asked = ((0..<events.count).filter { _ in Int.random(in: 0..<6, using: &rng) == 0 }, nil)
            }
            let maxTs = Bool.random(using: &rng) ? full.ts.max()! : Int64.random(in: -5...5, using: &rng)
            switch BlockPayloadDecoder.decode(payload, rows: asked.rows, checkpoints: record, maxTs: maxTs, token: asked.token) {
            case let .rows(r):
                answered += 1
                XCTAssertEqual(r.events, asked.rows.map { full.event(at: $0) }, c)
                XCTAssertEqual(r.maxTsThrough, asked.rows.map { full.ts[0...$0].max()! }, c)
            case .unresolvable, .damaged:
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 1000, "seed \(seed): test setup")
        XCTAssertGreaterThan(answered, 3, "seed \(seed): test setup: some damage misses what a query reads")
    }
}

/// FNV-1a: a plain hash, so the test does not depend on the index's keyed one.
private func fnv(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}
