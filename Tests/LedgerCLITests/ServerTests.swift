import Foundation
import Glibc
import LedgerModel
import LedgerServer
import LedgerStorage
import XCTest

/// `tokenledger serve` as a client sees it (PROTOCOL.md): a real server process on a free port,
/// real sockets (and `nc` as a real shipper), then what is on the ledger once the server stopped.
final class ServerTests: XCTestCase {
    var dir = ""
    var servers: [ServerProcess] = []

    override func setUp() { dir = CLI.temporaryDirectory("server") }

    override func tearDown() {
        // A failed test must not leave a server behind.
        for s in servers { s.killIfRunning() }
        servers = []
        try? FileManager.default.removeItem(atPath: dir)
    }

    func ledgerPath(_ name: String = "ledger") -> String { dir + "/" + name }

    func startServer(_ arguments: [String] = [], ledger: String = "ledger") throws -> ServerProcess {
        let s = try ServerProcess(directory: ledgerPath(ledger), arguments: arguments)
        servers.append(s)
        return s
    }

    func stop(_ server: ServerProcess, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        let status = server.terminate()
        XCTAssertEqual(status, 0, "\(context): SIGTERM must end the server with exit 0; log:\n\(server.stderr.suffix(4000))", file: file, line: line)
    }

    @discardableResult
    func verify(_ context: String, ledger: String = "ledger", file: StaticString = #filePath, line: UInt = #line) throws -> VerifyReport {
        let report = try Verifier(directory: ledgerPath(ledger)).run()
        XCTAssertTrue(report.ok, "\(context): verify: \(String(describing: report.problem))", file: file, line: line)
        return report
    }

    func assertEvents(_ actual: [Event], _ expected: [Event], _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        guard actual != expected else { return }
        let i = (0..<min(actual.count, expected.count)).first { actual[$0] != expected[$0] } ?? min(actual.count, expected.count)
        let a = i < actual.count ? "\(actual[i])" : "nothing", e = i < expected.count ? "\(expected[i])" : "nothing"
        XCTFail("\(context): \(actual.count) events, \(expected.count) expected; first difference at index \(i):\n got \(a)\n expected \(e)", file: file, line: line)
    }

    /// A NACK for batch `id` whose error names `line` (1-based) and contains `extra`.
    func assertNack(_ frame: Frame?, id: UInt64, line: Int?, contains extra: [String] = [], _ context: String,
                    file: StaticString = #filePath, fileLine: UInt = #line) {
        guard let frame else { return XCTFail("\(context): connection ended, expected a NACK for batch \(id)", file: file, line: fileLine) }
        XCTAssertEqual(frame.type, .nack, "\(context): expected a NACK, got \(frame.type) \(frame.text)", file: file, line: fileLine)
        XCTAssertEqual(frame.id, id, "\(context): the reply carries the request's id", file: file, line: fileLine)
        guard let object = jsonObject(frame), let error = object["error"] as? String else {
            return XCTFail("\(context): NACK payload is not {\"batch\":…,\"error\":…}: \(frame.text)", file: file, line: fileLine)
        }
        XCTAssertEqual(object["batch"] as? String, String(id), "\(context): \(frame.text)", file: file, line: fileLine)
        if let line {
            XCTAssertTrue(error.hasPrefix("line \(line),") || error.hasPrefix("line \(line):"), "\(context): the NACK must name line \(line): \(error)", file: file, line: fileLine)
        }
        for e in extra { XCTAssertTrue(error.contains(e), "\(context): NACK should mention \(e): \(error)", file: file, line: fileLine) }
    }

    func expectAck(_ frame: Frame?, id: UInt64, count: Int, _ context: String, file: StaticString = #filePath, line: UInt = #line) -> Frame.Ack? {
        guard let frame else { XCTFail("\(context): connection ended, expected an ACK for \(id)", file: file, line: line); return nil }
        XCTAssertEqual(frame.id, id, "\(context): reply id", file: file, line: line)
        guard frame.type == .ack, let ack = frame.ack else {
            XCTFail("\(context): expected an ACK for batch \(id), got \(frame.type) \(frame.text)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(ack.count, UInt64(count), "\(context): ACK count", file: file, line: line)
        XCTAssertEqual(ack.lastSeq &- ack.firstSeq &+ 1, ack.count, "\(context): ACK range \(ack.firstSeq)-\(ack.lastSeq) vs count", file: file, line: line)
        return ack
    }

    /// Each acknowledged range holds exactly its batch, and a block ends at its last seq with
    /// the acknowledged chain hash.
    func assertAcked(_ acks: [(Frame.Ack, [Event])], on ledger: LedgerContents, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        for (a, events) in acks {
            assertEvents(ledger.events(a.firstSeq, a.lastSeq), events, "\(context): events at acknowledged seq \(a.firstSeq)-\(a.lastSeq)", file: file, line: line)
            XCTAssertNotNil(ledger.chainHashAt[a.lastSeq], "\(context): no block ends at acknowledged last seq \(a.lastSeq)", file: file, line: line)
            XCTAssertEqual(ledger.chainHashAt[a.lastSeq], a.chainHash, "\(context): chain hash of the block ending at seq \(a.lastSeq)", file: file, line: line)
        }
    }

    // MARK: 1. Framed happy path with pipelining

    func testPipelinedBatchesAreAcknowledgedInOrderWithTheirRangesAndChainHashes() throws {
        let seed: UInt64 = 0x5E41
        var rng = SplitMix64(seed: seed)
        var sizes = (0..<50).map { _ in 1 + rng.below(300) }
        // Over one block (16,384 events): the ACK must carry the chain hash of the batch's last block.
        sizes[20] = 17_000
        let stream = try TestStream(seed: seed, count: sizes.reduce(0, +), tag: "p")
        let batches = stream.batches(sizes)
        XCTAssertTrue(stream.events.contains { $0.type.isMarker }, "seed \(seed): the stream should hold markers (they end blocks inside batches)")

        let server = try startServer()
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        for (i, b) in batches.enumerated() { try client.write(Frame(.batch, id: UInt64(i + 1), payload: b.payload)) }
        var acks = [(Frame.Ack, [Event])]()
        var next: UInt64 = 1
        for i in 0..<batches.count {
            let context = "seed \(seed), batch \(i + 1) of \(sizes[i]) events"
            guard let ack = expectAck(try client.readFrame(), id: UInt64(i + 1), count: sizes[i], context) else { break }
            XCTAssertEqual(ack.firstSeq, next, "\(context): acknowledged ranges are consecutive and do not overlap")
            next = ack.lastSeq + 1
            acks.append((ack, batches[i].events))
        }
        client.close()
        stop(server, "seed \(seed)")

        let ledger = try LedgerContents(directory: ledgerPath())
        assertEvents(ledger.events, stream.events, "seed \(seed): the ledger holds the events sent, in order")
        assertAcked(acks, on: ledger, "seed \(seed)")
        let report = try verify("seed \(seed)")
        XCTAssertEqual(report.lastSeq, UInt64(stream.events.count), "seed \(seed)")
        XCTAssertEqual(report.chainHash.array, acks.last?.0.chainHash, "seed \(seed): the last ACK carries the ledger's head chain hash")
    }

    /// Small and large batches (over 64 KiB: the reader switches to default scheduler slices),
    /// good and bad, and PINGs, interleaved at random and pipelined: every reply comes in frame
    /// order, the acknowledged ranges follow frame order, and the ledger holds exactly the good
    /// batches.
    func testInterleavedGoodBadAndPingFramesAreAnsweredAndCommittedInFrameOrder() throws {
        let seed: UInt64 = 0x9A11
        var rng = SplitMix64(seed: seed)
        enum Kind { case good, bad, ping }
        var kinds = [Kind](), sizes = [Int]()
        for _ in 0..<60 {
            let r = rng.below(10)
            kinds.append(r < 6 ? .good : r < 8 ? .bad : .ping)
            // Half small, half over 64 KiB.
            sizes.append(rng.below(2) == 0 ? 1 + rng.below(40) : 300 + rng.below(900))
        }
        let stream = try TestStream(seed: seed, count: sizes.reduce(0, +), tag: "pp")
        let batches = stream.batches(sizes)
        let server = try startServer()
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        var expected = [Event]()
        for (i, b) in batches.enumerated() {
            switch kinds[i] {
            case .good:
                try client.write(Frame(.batch, id: UInt64(i + 1), payload: b.payload))
                expected += b.events
            case .bad:
                // A line the decoder refuses, in the middle of the batch.
                var lines = b.payload.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
                lines[lines.count / 2] = Array(#"{"type":"validated","ts":"soon","token":"x"}"#.utf8)
                try client.write(Frame(.batch, id: UInt64(i + 1), payload: Array(lines.joined(separator: [0x0A]))))
            case .ping:
                try client.write(Frame(.ping, id: UInt64(i + 1), payload: [1, 2, 3]))
            }
        }
        var next: UInt64 = 1
        for i in 0..<batches.count {
            let context = "seed \(seed), frame \(i + 1) (\(kinds[i]), \(sizes[i]) events)"
            switch kinds[i] {
            case .good:
                guard let ack = expectAck(try client.readFrame(), id: UInt64(i + 1), count: sizes[i], context) else { return }
                XCTAssertEqual(ack.firstSeq, next, "\(context): ranges follow frame order")
                next = ack.lastSeq + 1
            case .bad:
                let f = try client.readFrame()
                XCTAssertEqual(f?.id, UInt64(i + 1), context)
                XCTAssertEqual(f?.type, .nack, "\(context): \(f?.text ?? "no reply")")
                XCTAssertTrue(f?.text.contains("line \((sizes[i] + 1) / 2 + 1),") ?? false, "\(context): \(f?.text ?? "")")
            case .ping:
                let f = try client.readFrame()
                XCTAssertEqual(f?.id, UInt64(i + 1), context)
                XCTAssertEqual(f?.type, .pong, context)
            }
        }
        client.close()
        stop(server, "seed \(seed)")
        let ledger = try LedgerContents(directory: ledgerPath())
        assertEvents(ledger.events, expected, "seed \(seed): the ledger holds the good batches, in frame order")
    }

    // MARK: 2. Concurrent framed clients

    final class Outcome: @unchecked Sendable {
        let lock = NSLock()
        var acks: [[Frame.Ack?]]
        var failures = [String]()
        init(clients: Int, batches: Int) { acks = Array(repeating: Array(repeating: nil, count: batches), count: clients) }
        func set(_ c: Int, _ i: Int, _ a: Frame.Ack) { lock.lock(); acks[c][i] = a; lock.unlock() }
        func fail(_ text: String) { lock.lock(); failures.append(text); lock.unlock() }
    }

    func testConcurrentClientsGetDisjointRangesHoldingExactlyTheirBatches() throws {
        let seed: UInt64 = 0xC0C0
        var rng = SplitMix64(seed: seed)
        let clients = 4, perClient = 20
        var plans = [[(payload: [UInt8], events: [Event])]]()
        for c in 0..<clients {
            let sizes = (0..<perClient).map { _ in 1 + rng.below(150) }
            plans.append(try TestStream(seed: seed &+ UInt64(c), count: sizes.reduce(0, +), tag: "c\(c)").batches(sizes))
        }
        let server = try startServer()
        let endpoint = server.endpoint
        let outcome = Outcome(clients: clients, batches: perClient)
        let group = DispatchGroup()
        for c in 0..<clients {
            let batches = plans[c]
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let conn = try TestConnection(endpoint)
                    defer { conn.close() }
                    try conn.openFramed()
                    // Pipelined: everything is written before the first reply is read.
                    for (i, b) in batches.enumerated() { try conn.write(Frame(.batch, id: UInt64(i + 1), payload: b.payload)) }
                    for i in 0..<batches.count {
                        guard let f = try conn.readFrame() else { throw TestFailure("client \(c): connection ended after \(i) replies") }
                        guard f.id == UInt64(i + 1), let a = f.ack else { throw TestFailure("client \(c), batch \(i + 1): got \(f.type) id \(f.id) \(f.text)") }
                        outcome.set(c, i, a)
                    }
                } catch { outcome.fail("\(error)") }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "seed \(seed): clients did not finish")
        XCTAssertEqual(outcome.failures, [], "seed \(seed)")
        stop(server, "seed \(seed)")

        var all = [(Frame.Ack, [Event])]()
        for c in 0..<clients {
            for i in 0..<perClient {
                guard let a = outcome.acks[c][i] else { XCTFail("seed \(seed): client \(c) batch \(i + 1) not acknowledged"); continue }
                XCTAssertEqual(a.count, UInt64(plans[c][i].events.count), "seed \(seed): client \(c) batch \(i + 1)")
                all.append((a, plans[c][i].events))
            }
        }
        all.sort { $0.0.firstSeq < $1.0.firstSeq }
        var next: UInt64 = 1
        for (a, _) in all {
            XCTAssertEqual(a.firstSeq, next, "seed \(seed): acknowledged ranges must tile 1…N without gaps or overlaps (range \(a.firstSeq)-\(a.lastSeq))")
            next = a.lastSeq + 1
        }
        let total = plans.joined().reduce(0) { $0 + $1.events.count }
        XCTAssertEqual(next - 1, UInt64(total), "seed \(seed): every event acknowledged once")
        let ledger = try LedgerContents(directory: ledgerPath())
        XCTAssertEqual(ledger.events.count, total, "seed \(seed): nothing but the acknowledged batches on the ledger")
        assertAcked(all, on: ledger, "seed \(seed)")
        let report = try verify("seed \(seed)")
        XCTAssertEqual(report.lastSeq, UInt64(total), "seed \(seed)")
    }

    // MARK: 3. Bad input in framed mode

    func testBadBatchesAreNackedWithTheirLineAndNothingOfThemIsCommitted() throws {
        let seed: UInt64 = 0xBAD
        let stream = try TestStream(seed: seed, count: 200, tag: "g")
        func lines(_ r: Range<Int>) -> [[UInt8]] { Array(stream.lines[r]) }
        func events(_ r: Range<Int>) -> [Event] { Array(stream.events[r]) }
        func payload(_ ls: [[UInt8]]) -> [UInt8] { ls.flatMap { $0 } }
        func replacing(_ r: Range<Int>, line: Int, with bad: [UInt8]) -> [UInt8] {
            var ls = lines(r)
            ls[line - 1] = bad + [0x0A]
            return payload(ls)
        }
        let truncated = Array(#"{"type":"validated","ts":17,"token":"abc""#.utf8)
        let tsWrongType = Array(#"{"type":"validated","ts":true,"token":"abc"}"#.utf8)
        let oversized = Array(#"{"type":"validated","ts":1,"token":"abc","route":"/"#.utf8) + [UInt8](repeating: 0x61, count: 70_000) + Array(#""}"#.utf8)
        let badUTF8 = Array(#"{"type":"validated","ts":1,"token":"ab"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)
        let unknownType = Array(#"{"type":"teleported","ts":1,"token":"abc"}"#.utf8)
        func bulk(_ n: Int, tag: String) -> [UInt8] {
            var out = [UInt8]()
            out.reserveCapacity(n * 80)
            for i in 0..<n { out += Array("{\"type\":\"validated\",\"ts\":\(1_795_478_400_000 + i),\"token\":\"t\(i % 97)\",\"request_id\":\"\(tag)-\(i)\"}\n".utf8) }
            return out
        }
        // Good lines with CRLF endings, a blank line, and no newline after the last line.
        var crlf = [UInt8]()
        for (k, l) in lines(150..<160).enumerated() {
            crlf += l.dropLast() + [0x0D, 0x0A]
            if k == 4 { crlf += Array(" \t\r\n".utf8) }
        }
        crlf.removeLast(2)

        let server = try startServer()
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        let requests: [(UInt64, [UInt8])] = [
            (1, payload(lines(0..<20))),
            (2, replacing(20..<30, line: 6, with: truncated)),
            (3, payload(lines(30..<50))),
            (4, replacing(50..<58, line: 3, with: tsWrongType)),
            (5, replacing(58..<66, line: 4, with: oversized)),
            (6, []),
            (7, Array("\n  \n\t\r\n".utf8)),
            (8, replacing(66..<70, line: 2, with: badUTF8)),
            (9, bulk(65_537, tag: "over")),
            (10, bulk(65_536, tag: "max")),
            (11, replacing(70..<80, line: 5, with: unknownType)),
            (12, payload(lines(80..<100))),
            (13, crlf),
        ]
        // Pipelined, like a real client.
        for (id, p) in requests { try client.write(Frame(.batch, id: id, payload: p)) }
        let context = "seed \(seed)"
        var acks = [(Frame.Ack, [Event])]()
        let maxEvents = try NDJSONDecoderBulk.decode(bulk(65_536, tag: "max"))
        if let a = expectAck(try client.readFrame(), id: 1, count: 20, "\(context), batch 1") { acks.append((a, events(0..<20))) }
        assertNack(try client.readFrame(), id: 2, line: 6, "\(context), malformed JSON on line 6")
        if let a = expectAck(try client.readFrame(), id: 3, count: 20, "\(context), batch 3 after a NACK") { acks.append((a, events(30..<50))) }
        assertNack(try client.readFrame(), id: 4, line: 3, contains: ["byte 25", "\"ts\""], "\(context), ts of the wrong type on line 3")
        assertNack(try client.readFrame(), id: 5, line: 4, contains: ["65536"], "\(context), 70 KB line 4")
        assertNack(try client.readFrame(), id: 6, line: nil, "\(context), empty batch")
        assertNack(try client.readFrame(), id: 7, line: nil, "\(context), only blank lines")
        assertNack(try client.readFrame(), id: 8, line: 2, contains: ["byte \(badUTF8.firstIndex(of: 0xC3)!)", "UTF-8"], "\(context), invalid UTF-8 on line 2")
        assertNack(try client.readFrame(), id: 9, line: nil, contains: ["65536"], "\(context), 65,537 events")
        if let a = expectAck(try client.readFrame(), id: 10, count: 65_536, "\(context), exactly 65,536 events") { acks.append((a, maxEvents)) }
        assertNack(try client.readFrame(), id: 11, line: 5, contains: ["teleported"], "\(context), unknown event type on line 5")
        if let a = expectAck(try client.readFrame(), id: 12, count: 20, "\(context), batch 12") { acks.append((a, events(80..<100))) }
        if let a = expectAck(try client.readFrame(), id: 13, count: 10, "\(context), CRLF lines, a blank line, no final newline") { acks.append((a, events(150..<160))) }
        // The connection stays open after NACKs.
        try client.write(Frame(.ping, id: 99, text: "still there"))
        let pong = try client.readFrame()
        XCTAssertEqual(pong, Frame(.pong, id: 99, text: "still there"), context)
        client.close()
        stop(server, context)

        let ledger = try LedgerContents(directory: ledgerPath())
        // Exactly the acknowledged batches, in order: nothing of a NACKed batch (not even its
        // good lines) reached the ledger.
        assertEvents(ledger.events, acks.flatMap { $0.1 }, "\(context): the ledger holds the acknowledged batches and nothing else")
        assertAcked(acks, on: ledger, context)
        XCTAssertTrue(ledger.tagged("over").isEmpty, "\(context): nothing of the 65,537-event batch is on the ledger")
        try verify(context)
    }

    func testFrameProtocolErrorsGetAnErrorFrameAfterEarlierRepliesThenTheConnectionCloses() throws {
        let seed: UInt64 = 0xF4A3
        let stream = try TestStream(seed: seed, count: 140, tag: "f")
        let batches = stream.batches(Array(repeating: 10, count: 14))
        let limit = 16 << 20
        let cases: [(String, [UInt8])] = [
            ("length over 16 MiB", rawFrameHeader(length: UInt32(Frame.headerBytes + limit + 1), type: 0x02, id: 2)),
            ("length under the 12-byte header", rawFrameHeader(length: 11, type: 0x04, id: 2) + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ("unknown frame type 0x7e", rawFrameHeader(length: 15, type: 0x7E, id: 2) + [1, 2, 3]),
            ("non-zero flags", rawFrameHeader(length: 12, type: 0x04, flags: 1, id: 2)),
            ("non-zero reserved bytes", { var h = rawFrameHeader(length: 12, type: 0x04, id: 2); h[7] = 1; return h }()),
            ("a server-to-client type (ACK) sent by the client", Frame(.ack, id: 2, payload: [UInt8](repeating: 0, count: 56)).encoded),
        ]
        let server = try startServer()
        var acks = [(Frame.Ack, [Event])]()
        for (k, (name, bad)) in cases.enumerated() {
            let context = "seed \(seed), \(name)"
            let client = try TestConnection(server.endpoint)
            try client.openFramed()
            // A good batch, the bad frame, and a good batch after it that must not be taken:
            // the stream cannot be resynchronised.
            var bytes = Frame(.batch, id: 1, payload: batches[2 * k].payload).encoded
            bytes += bad
            bytes += Frame(.batch, id: 3, payload: batches[2 * k + 1].payload).encoded
            try client.write(bytes)
            if let a = expectAck(try client.readFrame(), id: 1, count: 10, "\(context): the batch before the bad frame") { acks.append((a, batches[2 * k].events)) }
            let error = try client.readFrame()
            XCTAssertEqual(error?.type, .error, "\(context): expected an ERROR frame, got \(String(describing: error?.type)) \(error?.text ?? "")")
            XCTAssertNotNil(error.flatMap(jsonObject)?["error"] as? String, "\(context): ERROR payload is {\"error\":…}: \(error?.text ?? "")")
            let after = try client.readFrame()
            XCTAssertNil(after, "\(context): the connection must close after the ERROR, got \(String(describing: after?.type)) \(after?.text ?? "")")
            client.close()
        }

        // A client that really streams an oversized frame (the server gives up after its length
        // field and closes while bytes are still coming): the ACK before it and the ERROR arrive.
        let streaming = try TestConnection(server.endpoint)
        try streaming.openFramed()
        try streaming.write(Frame(.batch, id: 1, payload: batches[12].payload))
        let writer = DispatchGroup()
        writer.enter()
        Thread.detachNewThread {
            defer { writer.leave() }
            let bytes = rawFrameHeader(length: UInt32(Frame.headerBytes + limit + 1), type: 0x02, id: 2) + [UInt8](repeating: 0x20, count: limit + 1)
            try? streaming.write(bytes)     // fails part-way once the server has closed
        }
        if let a = expectAck(try streaming.readFrame(), id: 1, count: 10, "seed \(seed): the batch before a streamed oversized frame") { acks.append((a, batches[12].events)) }
        let streamedError = try streaming.readFrame()
        XCTAssertEqual(streamedError?.type, .error, "seed \(seed): a streamed oversized frame gets an ERROR, got \(String(describing: streamedError?.type))")
        XCTAssertNil(try streaming.readFrame(), "seed \(seed): then the connection closes")
        XCTAssertEqual(writer.wait(timeout: .now() + 20), .success, "seed \(seed): the writer was not released by the close")
        streaming.close()

        // A payload of exactly 16 MiB is within the limit.
        let big = try TestConnection(server.endpoint)
        try big.openFramed()
        var rng = SplitMix64(seed: seed)
        var payload = [UInt8](repeating: 0, count: limit)
        for i in stride(from: 0, to: limit, by: 4096) { payload[i] = UInt8(truncatingIfNeeded: rng.next()) }
        try big.write(Frame(.ping, id: 77, payload: payload))
        let pong = try big.readFrame()
        XCTAssertEqual(pong?.type, .pong, "seed \(seed): a 16 MiB PING is within the limit: \(pong?.text.prefix(200) ?? "connection ended")")
        XCTAssertTrue(pong?.id == 77 && pong?.payload == payload, "seed \(seed): the 16 MiB PONG echoes the payload")
        big.close()

        // The server still serves.
        let last = try TestConnection(server.endpoint)
        try last.openFramed()
        try last.write(Frame(.batch, id: 1, payload: batches[13].payload))
        if let a = expectAck(try last.readFrame(), id: 1, count: 10, "seed \(seed): a new connection after the errors") { acks.append((a, batches[13].events)) }
        last.close()
        stop(server, "seed \(seed)")

        let ledger = try LedgerContents(directory: ledgerPath())
        assertEvents(ledger.events, acks.flatMap { $0.1 }, "seed \(seed): only the batches before each bad frame (and the last one) are on the ledger")
        assertAcked(acks, on: ledger, "seed \(seed)")
        try verify("seed \(seed)")
    }

    // MARK: 4. Line mode

    func testLineModeKeepsGoodLinesInOrderAndLogsEachRejectedLine() throws {
        let seed: UInt64 = 0x11E
        var rng = SplitMix64(seed: seed)
        // The token values of bad lines must never reach the log (PROTOCOL.md, line mode).
        let bad: [(String, [UInt8])] = [
            ("malformed JSON", Array(#"{"type":"validated","ts":17,"token":"SECRET-1""#.utf8)),
            ("ts of the wrong type", Array(#"{"type":"validated","ts":true,"token":"SECRET-2"}"#.utf8)),
            ("unknown event type", Array(#"{"type":"teleported","ts":1,"token":"SECRET-3"}"#.utf8)),
            ("invalid UTF-8", Array(#"{"type":"validated","ts":1,"token":"SECRET-4"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)),
            ("70 KB line", Array(#"{"type":"validated","ts":1,"token":"SECRET-5","route":"/"#.utf8) + [UInt8](repeating: 0x61, count: 70_000) + Array(#""}"#.utf8)),
        ]
        /// Good lines with `badLines` inserted at seeded places, a blank line and a CRLF line.
        /// - Returns: the bytes, the good events in order, and each bad line's number and kind.
        func compose(_ stream: TestStream, _ badLines: [(String, [UInt8])]) -> ([UInt8], [Event], [(Int, String)]) {
            var items: [(line: [UInt8], event: Event?, name: String)] = zip(stream.lines, stream.events).map { ($0, $1, "") }
            for (name, b) in badLines { items.insert((b + [0x0A], nil, name), at: rng.below(items.count + 1)) }
            items.insert((Array(" \t\n".utf8), nil, "blank"), at: rng.below(items.count + 1))
            let crlf = rng.below(items.count)
            if items[crlf].event != nil { items[crlf].line = items[crlf].line.dropLast() + [0x0D, 0x0A] }
            var bytes = [UInt8](), events = [Event](), rejected = [(Int, String)]()
            for (n, item) in items.enumerated() {
                bytes += item.line
                if let e = item.event { events.append(e) } else if item.name != "blank" { rejected.append((n + 1, item.name)) }
            }
            return (bytes, events, rejected)
        }
        let (aBytes, aEvents, aRejected) = compose(try TestStream(seed: seed, count: 300, tag: "A"), bad)
        let (bBytes, bEvents, bRejected) = compose(try TestStream(seed: seed &+ 1, count: 200, tag: "B"), [bad[1]])
        let (nBytes, nEvents, nRejected) = compose(try TestStream(seed: seed &+ 2, count: 60, tag: "N"), [bad[0], bad[2]])

        let server = try startServer()
        let context = "seed \(seed)"
        // nc as a real shipper, alongside two connections of our own.
        let file = dir + "/nc-input.ndjson"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data(nBytes)), "seed \(seed): \(file)")
        let nc = Process()
        nc.executableURL = URL(fileURLWithPath: "/usr/bin/nc")
        nc.arguments = ["-q1", "127.0.0.1", String(server.port)]
        nc.standardInput = FileHandle(forReadingAtPath: file)
        nc.standardOutput = FileHandle.nullDevice
        try nc.run()

        let a = try TestConnection(server.endpoint), b = try TestConnection(server.endpoint)
        // Both connections open at once; their bytes go in seeded pieces, interleaved.
        var aAt = 0, bAt = 0
        while aAt < aBytes.count || bAt < bBytes.count {
            if aAt < aBytes.count {
                let n = min(aBytes.count - aAt, 1 + rng.below(20_000))
                try a.write(Array(aBytes[aAt..<aAt + n])); aAt += n
            }
            if bAt < bBytes.count {
                let n = min(bBytes.count - bAt, 1 + rng.below(5_000))
                try b.write(Array(bBytes[bAt..<bAt + n])); bAt += n
            }
        }
        a.shutdownWrite(); b.shutdownWrite()
        // Nothing is ever written back in line mode; the server closes after our end of stream.
        XCTAssertEqual(try a.readToEnd(), [], "\(context): line mode writes nothing back")
        XCTAssertEqual(try b.readToEnd(), [], "\(context): line mode writes nothing back")
        let deadline = Date().addingTimeInterval(10)
        while nc.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(nc.isRunning, "\(context): nc -q1 did not finish")
        if nc.isRunning { nc.terminate() }

        let aPeer = "127.0.0.1:\(a.localPort)", bPeer = "127.0.0.1:\(b.localPort)"
        func rejections(_ log: String, _ peer: String?) -> [String] {
            log.split(separator: "\n").map(String.init).filter {
                line in line.contains("rejected line ") && (peer.map { p in line.contains(p + ":") } ?? (!line.contains(aPeer + ":") && !line.contains(bPeer + ":")))
            }
        }
        func names(_ line: String, _ n: Int) -> Bool { line.contains("rejected line \(n),") || line.contains("rejected line \(n):") }
        let logged = server.waitForLog { log in
            rejections(log, aPeer).count >= aRejected.count && rejections(log, bPeer).count >= bRejected.count && rejections(log, nil).count >= nRejected.count
        }
        XCTAssertTrue(logged, "\(context): the server should log every rejected line; log:\n\(server.stderr.suffix(4000))")
        stop(server, context)

        let log = server.stderr
        for (peer, rejected, who) in [(aPeer, aRejected, "A"), (bPeer, bRejected, "B"), (nil, nRejected, "nc")] as [(String?, [(Int, String)], String)] {
            let lines = rejections(log, peer)
            XCTAssertEqual(lines.count, rejected.count, "\(context): connection \(who) had \(rejected.map { "line \($0.0) (\($0.1))" }) rejected; log says:\n\(lines.joined(separator: "\n"))")
            for (n, name) in rejected {
                XCTAssertTrue(lines.contains { names($0, n) }, "\(context): connection \(who): the log must name rejected line \(n) (\(name)):\n\(lines.joined(separator: "\n"))")
            }
        }
        XCTAssertFalse(log.contains("SECRET"), "\(context): a rejected line's token value is in the log:\n\(log.split(separator: "\n").filter { $0.contains("SECRET") }.joined(separator: "\n"))")
        if let (n, _) = aRejected.first(where: { $0.1 == "70 KB line" }) {
            XCTAssertTrue(rejections(log, aPeer).contains { names($0, n) && $0.contains("65536") }, "\(context): the oversized line's log names the limit")
        }
        let ledger = try LedgerContents(directory: ledgerPath())
        assertEvents(ledger.tagged("A"), aEvents, "\(context): connection A's good lines, in order")
        assertEvents(ledger.tagged("B"), bEvents, "\(context): connection B's good lines, in order")
        assertEvents(ledger.tagged("N"), nEvents, "\(context): nc's good lines, in order")
        XCTAssertEqual(ledger.events.count, aEvents.count + bEvents.count + nEvents.count, "\(context): no rejected line is on the ledger")
        try verify(context)
    }

    // MARK: 5. A client that disconnects mid-frame

    func testClientDisconnectingMidFrameKeepsItsEarlierBatchesAndTheServerServing() throws {
        let seed: UInt64 = 0xD15C
        let stream = try TestStream(seed: seed, count: 400, tag: "d")
        let batches = stream.batches([50, 70, 30, 40, 60])
        let server = try startServer()
        let context = "seed \(seed)"

        // Two batches and the first 10 bytes of a frame claiming 1000, then the end of the stream,
        // without reading a single reply.
        let c1 = try TestConnection(server.endpoint)
        try c1.openFramed()
        var bytes = Frame(.batch, id: 1, payload: batches[0].payload).encoded + Frame(.batch, id: 2, payload: batches[1].payload).encoded
        bytes += rawFrameHeader(length: UInt32(Frame.headerBytes + 1000), type: 0x02, id: 3) + Array(stream.lines[300].prefix(10))
        try c1.write(bytes)
        c1.shutdownWrite()
        XCTAssertTrue(server.waitForLog { $0.contains("127.0.0.1:\(c1.localPort): connection ended inside a frame; 26 bytes") },
                      "\(context): the server logs the cut frame; log:\n\(server.stderr.suffix(3000))")
        c1.close()

        // A client that resets the connection in the middle of a frame, after an acknowledged batch.
        let c2 = try TestConnection(server.endpoint)
        try c2.openFramed()
        try c2.write(Frame(.batch, id: 1, payload: batches[2].payload))
        let ack2 = expectAck(try c2.readFrame(), id: 1, count: 30, "\(context): c2's batch")
        try c2.write(rawFrameHeader(length: UInt32(Frame.headerBytes + 1000), type: 0x02, id: 2) + Array(stream.lines[301].prefix(10)))
        usleep(50_000)
        c2.resetAndClose()

        // Another client is served as before.
        let c3 = try TestConnection(server.endpoint)
        try c3.openFramed()
        try c3.write(Frame(.batch, id: 1, payload: batches[3].payload))
        let ack3 = expectAck(try c3.readFrame(), id: 1, count: 40, "\(context): a client after the disconnects")
        try c3.write(Frame(.batch, id: 2, payload: batches[4].payload))
        let ack4 = expectAck(try c3.readFrame(), id: 2, count: 60, "\(context): a client after the disconnects")
        c3.close()
        stop(server, context)

        let ledger = try LedgerContents(directory: ledgerPath())
        // c1's batches were received whole before its stream ended: committed, in order.
        assertEvents(ledger.events, batches.flatMap { $0.events }, "\(context): c1's two batches, c2's and c3's, in that order")
        assertAcked(zip([ack2, ack3, ack4], batches[2...].map { $0.events }).compactMap { a, e in a.map { ($0, e) } }, on: ledger, context)
        XCTAssertEqual(ack2?.firstSeq, 121, "\(context): c1's batches (50 + 70 events) come first")
        try verify(context)
    }

    // MARK: 6. Idle clients

    func testIdleClientsAndHalfSentPrefacesDoNotHoldUpOthers() throws {
        let seed: UInt64 = 0x1D1E
        let stream = try TestStream(seed: seed, count: 300, tag: "i")
        let batches = stream.batches([40, 40, 40, 30, 150])
        let server = try startServer()
        let context = "seed \(seed)"

        let idle = try TestConnection(server.endpoint)              // says nothing at all
        let partial = try TestConnection(server.endpoint)           // "TLFR", the rest later
        try partial.write(Array("TLFR".utf8))
        let stuck = try TestConnection(server.endpoint)             // "TLFR" and never more
        try stuck.write(Array("TLFR".utf8))
        let line = try TestConnection(server.endpoint)
        try line.write(batches[4].payload)
        line.shutdownWrite()
        // A framed client connected after all of them gets its ACKs (a short timeout: waiting
        // behind an idle client would fail here).
        let framed = try TestConnection(server.endpoint, timeoutSeconds: 5)
        try framed.openFramed()
        var acks = [(Frame.Ack, [Event])]()
        for i in 0..<3 { try framed.write(Frame(.batch, id: UInt64(i + 1), payload: batches[i].payload)) }
        for i in 0..<3 {
            if let a = expectAck(try framed.readFrame(), id: UInt64(i + 1), count: 40, "\(context): framed client beside idle ones") { acks.append((a, batches[i].events)) }
        }
        XCTAssertEqual(try line.readToEnd(), [], "\(context): the line-mode client is served and closed")

        // The preface completed in a later packet: framed mode after all.
        usleep(100_000)
        try partial.write(Array("AME1".utf8))
        try partial.readPreface()
        try partial.write(Frame(.batch, id: 1, payload: batches[3].payload))
        if let a = expectAck(try partial.readFrame(), id: 1, count: 30, "\(context): a preface sent in two pieces") { acks.append((a, batches[3].events)) }

        // SIGTERM while two clients still hold idle connections: the server does not wait for them.
        let started = Date()
        stop(server, context)
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 5, "\(context): idle connections held up the shutdown for \(took) s")
        XCTAssertEqual(try idle.readToEnd(), [], "\(context): the idle connection is closed at shutdown")
        XCTAssertEqual(try stuck.readToEnd(), [], "\(context): the half-preface connection is closed at shutdown")

        let ledger = try LedgerContents(directory: ledgerPath())
        assertAcked(acks, on: ledger, context)
        assertEvents(ledger.tagged("i").filter { e in batches[4].events.contains { $0.requestID == e.requestID } }, batches[4].events, "\(context): the line-mode client's events")
        XCTAssertEqual(ledger.events.count, 300, context)
        try verify(context)
    }

    // MARK: 7. Connection limit

    func testConnectionsOverTheLimitAreRefusedWithAJSONLineAndLaterAccepted() throws {
        let seed: UInt64 = 0x3C3
        let stream = try TestStream(seed: seed, count: 100, tag: "m")
        let batches = stream.batches([10, 20, 30, 40])
        let server = try startServer(["--connections-max", "3"])
        let context = "seed \(seed), --connections-max 3"

        let a = try TestConnection(server.endpoint)
        try a.openFramed()
        let b = try TestConnection(server.endpoint)
        try b.write(batches[0].payload)                 // line mode, left open
        let c = try TestConnection(server.endpoint)     // idle
        _ = c
        // Connections are accepted in the order they were made, so a 4th is over the limit.
        for (name, send) in [("a silent client", [UInt8]()), ("a framed client", Frame.preface)] {
            let d = try TestConnection(server.endpoint, timeoutSeconds: 5)
            if !send.isEmpty { try d.write(send) }
            let answer = try d.readToEnd()
            let text = String(decoding: answer, as: UTF8.self)
            XCTAssertTrue(text.hasSuffix("\n") && text.filter({ $0 == "\n" }).count == 1, "\(context), \(name): one line, then the connection closes: \(text.debugDescription)")
            let object = (try? JSONSerialization.jsonObject(with: Data(answer))) as? [String: Any]
            let error = object?["error"] as? String ?? ""
            XCTAssertTrue(error.contains("too many connections") && error.contains("3"), "\(context), \(name): \(text.debugDescription)")
        }
        // The held connections still work.
        try a.write(Frame(.batch, id: 1, payload: batches[1].payload))
        var acks = [(Frame.Ack, [Event])]()
        if let ack = expectAck(try a.readFrame(), id: 1, count: 20, "\(context): a held connection") { acks.append((ack, batches[1].events)) }

        // Once one closes, a new client is accepted (the server notices the close asynchronously).
        a.close()
        var accepted: TestConnection?
        var refusals = 0
        let deadline = Date().addingTimeInterval(5)
        while accepted == nil && Date() < deadline {
            let e = try TestConnection(server.endpoint, timeoutSeconds: 5)
            try e.write(Frame.preface)
            do { try e.readPreface(); accepted = e } catch { refusals += 1; e.close(); usleep(20_000) }
        }
        XCTAssertNotNil(accepted, "\(context): no new client accepted within 5 s after one closed (\(refusals) refusals)")
        if let e = accepted {
            try e.write(Frame(.batch, id: 1, payload: batches[2].payload))
            if let ack = expectAck(try e.readFrame(), id: 1, count: 30, "\(context): the client accepted after a close") { acks.append((ack, batches[2].events)) }
            e.close()
        }
        XCTAssertTrue(server.stderr.contains("refused"), "\(context): refusals are logged")
        stop(server, context)
        b.close(); c.close()

        let ledger = try LedgerContents(directory: ledgerPath())
        assertAcked(acks, on: ledger, context)
        assertEvents(ledger.events.filter { e in batches[0].events.contains { $0.requestID == e.requestID } }, batches[0].events,
                     "\(context): the held line-mode connection's events are committed at shutdown")
        XCTAssertEqual(ledger.events.count, 60, context)
        try verify(context)
    }

    // MARK: 8. SIGTERM with batches in flight

    final class Replies: @unchecked Sendable {
        let lock = NSLock()
        var frames = [Frame]()
        var arrived = [Date]()
        var error: String?
    }

    func testSigtermWithBatchesInFlightCommitsExactlyWhatIsAcknowledged() throws {
        // Small batches of workload events, and large ones (several MB still to decode when the
        // signal comes).
        try sigterm(seed: 0x7E1, sizeMax: 40, bulk: false)
        try sigterm(seed: 0x7E2, sizeMax: 6_000, bulk: true)
    }

    /// Cheap large batches: short lines whose events are built directly.
    static func bulkBatches(_ sizes: [Int], tag: String) -> [(payload: [UInt8], events: [Event])] {
        var n = 0
        return sizes.map { size in
            var payload = [UInt8](), events = [Event]()
            payload.reserveCapacity(size * 80)
            for _ in 0..<size {
                n += 1
                let ts = WorkloadStart.ms + Int64(n)
                payload += Array("{\"type\":\"validated\",\"ts\":\(ts),\"token\":\"t\(n % 1000)\",\"request_id\":\"\(tag)-\(n)\"}\n".utf8)
                events.append(Event(type: .validated, ts: ts, token: "t\(n % 1000)", requestID: "\(tag)-\(n)"))
            }
            return (payload, events)
        }
    }

    func sigterm(seed: UInt64, sizeMax: Int, bulk: Bool) throws {
        var rng = SplitMix64(seed: seed)
        let sizes = (0..<30).map { _ in 1 + rng.below(sizeMax) }
        let batches = bulk ? Self.bulkBatches(sizes, tag: "s") : try TestStream(seed: seed, count: sizes.reduce(0, +), tag: "s").batches(sizes)
        if bulk {
            let first = batches[0].payload.prefix { $0 != 0x0A }
            XCTAssertEqual(try NDJSONDecoder().decode(line: Array(first), lineNumber: 1), batches[0].events[0], "the bulk events are what the decoder makes of the lines")
        }
        let ledgerName = "ledger-\(seed)"
        let server = try startServer(ledger: ledgerName)
        let bytes = batches.reduce(0) { $0 + $1.payload.count }
        let context = "seed \(seed), \(sizes.reduce(0, +)) events (\(bytes) bytes) in 30 batches"
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        let replies = Replies()
        let group = DispatchGroup()
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            do {
                while let f = try client.readFrame() {
                    replies.lock.withLock { replies.frames.append(f); replies.arrived.append(Date()) }
                }
            } catch { replies.lock.withLock { replies.error = "\(error)" } }
        }
        var written = 0
        for (i, b) in batches.enumerated() {
            do { try client.write(Frame(.batch, id: UInt64(i + 1), payload: b.payload)); written += 1 } catch { break }
        }
        // Every byte has reached the server's kernel (acknowledged by its TCP): from here the
        // protocol says all of it is processed. Then SIGTERM at once.
        let sent = client.waitUntilSent(timeout: 20)
        kill(server.process.processIdentifier, SIGTERM)
        let signalled = Date()
        XCTAssertTrue(sent, "\(context): the server did not take the bytes")
        let status = server.waitForExit(timeout: 20)
        XCTAssertEqual(status, 0, "\(context): exit status after SIGTERM; log:\n\(server.stderr.suffix(3000))")
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success, "\(context): the connection was not closed after shutdown")
        client.close()
        XCTAssertEqual(written, 30, "\(context): all batches were written before the signal")

        let (frames, arrived, readError) = replies.lock.withLock { (replies.frames, replies.arrived, replies.error) }
        XCTAssertNil(readError, context)
        var acks = [(Frame.Ack, [Event])]()
        var next: UInt64 = 1
        var sawError = false
        for (i, f) in frames.enumerated() {
            XCTAssertEqual(f.id, UInt64(i + 1), "\(context): replies in request order")
            if f.type == .ack, let a = f.ack, !sawError {
                XCTAssertEqual(a.count, UInt64(sizes[i]), "\(context), batch \(i + 1)")
                XCTAssertEqual(a.firstSeq, next, "\(context), batch \(i + 1): consecutive ranges")
                next = a.lastSeq + 1
                acks.append((a, batches[i].events))
            } else {
                // Past the first non-ACK, only ERRORs ("not committed") may follow.
                XCTAssertEqual(f.type, .error, "\(context), batch \(i + 1): \(f.type) \(f.text)")
                sawError = true
            }
        }
        let afterSignal = arrived.filter { $0 > signalled }.count
        print("ServerTests: \(context): \(acks.count) of 30 batches acknowledged (\(afterSignal) replies after SIGTERM), \(frames.count - acks.count) refused, \(30 - frames.count) unanswered")
        XCTAssertEqual(acks.count, 30, "\(context): every batch had reached the server before SIGTERM, so each must be committed and acknowledged (\(afterSignal) replies came after the signal)")
        let ledger = try LedgerContents(directory: ledgerPath(ledgerName))
        // Every ACK is on the ledger at its range; nothing that was not acknowledged is.
        assertEvents(ledger.events, acks.flatMap { $0.1 }, "\(context): the ledger holds exactly the acknowledged batches")
        assertAcked(acks, on: ledger, context)
        try verify(context, ledger: ledgerName)
    }

    final class Flag: @unchecked Sendable {
        let lock = NSLock()
        var written = 0
        var stop = false
    }

    /// A client that keeps pipelining while the server is told to stop: the server stops
    /// reading, acknowledges what it committed, and exits promptly.
    func testSigtermWhileAClientKeepsSendingStopsPromptlyAndAcknowledgesAllItCommitted() throws {
        let seed: UInt64 = 0x7E3
        var rng = SplitMix64(seed: seed)
        let sizes = (0..<40).map { _ in 1 + rng.below(400) }
        let batches = Self.bulkBatches(sizes, tag: "k")
        let server = try startServer()
        let context = "seed \(seed), a client sending without pause"
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        let replies = Replies()
        let flag = Flag()
        let group = DispatchGroup()
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            do {
                while let f = try client.readFrame() { replies.lock.withLock { replies.frames.append(f); replies.arrived.append(Date()) } }
            } catch { replies.lock.withLock { replies.error = "\(error)" } }
        }
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            var id: UInt64 = 0
            while !flag.lock.withLock({ flag.stop }) {
                let b = batches[Int(id % UInt64(batches.count))]
                id += 1
                guard (try? client.write(Frame(.batch, id: id, payload: b.payload))) != nil else { break }
                flag.lock.withLock { flag.written = Int(id) }
            }
        }
        usleep(400_000 + UInt32(rng.below(300_000)))
        let signalled = Date()
        kill(server.process.processIdentifier, SIGTERM)
        let status = server.waitForExit(timeout: 30)
        let took = Date().timeIntervalSince(signalled)
        flag.lock.withLock { flag.stop = true }
        XCTAssertEqual(status, 0, "\(context): exit status; log:\n\(server.stderr.suffix(3000))")
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success, "\(context): the connection was not closed after shutdown")
        client.close()
        XCTAssertLessThan(took, 3, "\(context): the server took \(took) s to stop after SIGTERM (it should stop reading at once)")

        let (frames, readError) = replies.lock.withLock { (replies.frames, replies.error) }
        var acks = [(Frame.Ack, [Event])]()
        var next: UInt64 = 1
        for (i, f) in frames.enumerated() {
            XCTAssertEqual(f.id, UInt64(i + 1), "\(context): replies in request order")
            guard f.type == .ack, let a = f.ack else { XCTAssertEqual(f.type, .error, "\(context): \(f.type) \(f.text)"); break }
            XCTAssertEqual(a.firstSeq, next, "\(context): consecutive ranges")
            next = a.lastSeq + 1
            acks.append((a, batches[i % batches.count].events))
        }
        print("ServerTests: \(context): \(flag.lock.withLock { flag.written }) batches written, \(acks.count) acknowledged, \(frames.count - acks.count) refused; stopped \(took) s after SIGTERM; reader: \(readError ?? "clean end")")
        let ledger = try LedgerContents(directory: ledgerPath())
        // Every batch committed was acknowledged, and every acknowledged batch is there.
        assertEvents(ledger.events, acks.flatMap { $0.1 }, "\(context): the ledger holds exactly the acknowledged batches")
        assertAcked(acks, on: ledger, context)
        try verify(context)
    }

    // MARK: 9. PING (and HELLO) among batches

    func testPingHelloAndBatchArePipelinedAndAnsweredInOrder() throws {
        let seed: UInt64 = 0x9196
        var rng = SplitMix64(seed: seed)
        let payload = (0..<(1 + rng.below(3000))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let ids = (0..<7).map { _ in rng.next() }
        let stream = try TestStream(seed: seed, count: 5, tag: "q")
        let server = try startServer()
        let context = "seed \(seed)"
        let client = try TestConnection(server.endpoint)
        try client.openFramed()
        var bytes = Frame(.ping, id: ids[0], payload: payload).encoded
        bytes += Frame(.ping, id: ids[1]).encoded
        bytes += Frame(.hello, id: ids[2], text: "{}").encoded
        bytes += Frame(.ping, id: ids[3], payload: [0]).encoded
        bytes += Frame(.batch, id: ids[4], payload: stream.batches([5])[0].payload).encoded
        bytes += Frame(.ping, id: ids[5], payload: Array(payload.reversed())).encoded
        try client.write(bytes)

        XCTAssertEqual(try client.readFrame(), Frame(.pong, id: ids[0], payload: payload), "\(context): PONG echoes the PING's id and \(payload.count)-byte payload")
        XCTAssertEqual(try client.readFrame(), Frame(.pong, id: ids[1]), "\(context): empty PING")
        let welcome = try client.readFrame()
        XCTAssertEqual(welcome?.type, .welcome, context)
        XCTAssertEqual(welcome?.id, ids[2], context)
        let w = welcome.flatMap(jsonObject)
        XCTAssertEqual(w?["protocol"] as? String, "1", "\(context): \(welcome?.text ?? "")")
        XCTAssertEqual(w?["server"] as? String, "tokenledger", "\(context): \(welcome?.text ?? "")")
        XCTAssertEqual(try client.readFrame(), Frame(.pong, id: ids[3], payload: [0]), "\(context): one-byte PING")
        let ack = expectAck(try client.readFrame(), id: ids[4], count: 5, "\(context): the batch among the pings")
        XCTAssertEqual(ack?.firstSeq, 1, context)
        XCTAssertEqual(try client.readFrame(), Frame(.pong, id: ids[5], payload: Array(payload.reversed())), context)
        // The connection stays open for more.
        try client.write(Frame(.ping, id: ids[6], text: "again"))
        XCTAssertEqual(try client.readFrame(), Frame(.pong, id: ids[6], text: "again"), context)
        client.close()
        stop(server, context)
        let ledger = try LedgerContents(directory: ledgerPath())
        assertEvents(ledger.events, stream.events, context)
    }
}

/// Decodes a bulk payload the way the server should (for expected values).
enum NDJSONDecoderBulk {
    static func decode(_ payload: [UInt8]) throws -> [Event] {
        let decoder = NDJSONDecoder()
        var out = [Event]()
        var n = 0
        for line in payload.split(separator: 0x0A) {
            n += 1
            out.append(try decoder.decode(line: line, lineNumber: n))
        }
        return out
    }
}
