import Foundation
import LedgerModel
import LedgerServer
import LedgerStorage
import LedgerWorkload
import XCTest

/// SIGKILLs a real `tokenledger serve` at a seeded moment while several framed clients send
/// pipelined batches, and checks the durability promise: every batch the server acknowledged is
/// on the reopened ledger at exactly the acknowledged sequence range, with the acknowledged
/// chain hash, and the chain verifies; a restarted server continues the chain.
final class ServerCrashTests: XCTestCase {
    func testKilledServerKeepsEveryAcknowledgedBatch() throws {
        for seed: UInt64 in [5, 6, 7] {
            try runCrash(seed: seed)
        }
    }

    struct Acked {
        var firstSeq: UInt64
        var lastSeq: UInt64
        var chainHash: [UInt8]
        var events: [Event]
    }

    final class Results: @unchecked Sendable {
        let lock = NSLock()
        var acked = [Acked]()
        var sentBatches = 0
        func add(_ a: Acked) { lock.lock(); acked.append(a); lock.unlock() }
    }

    static func startServer(_ dir: String, extra: [String] = []) throws -> (Process, UInt16) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["serve", "--data", dir, "--listen", "127.0.0.1:0", "--quiet"] + extra
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        while !line.contains(0x0A) {
            let d = output.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let port = text.split(separator: ":").last.flatMap({ UInt16($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else {
            process.terminate()
            throw NSError(domain: "server did not print its port: \(text)", code: 1)
        }
        return (process, port)
    }

    /// Sends `lines` in batches, `window` in flight, until done (or, with `forever`, going round
    /// them again) or until the connection drops.
    static func client(port: UInt16, lines: [[UInt8]], events: [Event], seed: UInt64, results: Results, forever: Bool = false) {
        var rng = SplitMix64(seed: seed)
        guard let socket = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)) else { return }
        defer { socket.close() }
        guard (try? socket.write(Frame.preface)) != nil else { return }
        var parser = FrameParser(payloadBytesMax: 1 << 20)
        var pending = [(UInt64, Range<Int>)]()
        var next = 0
        var id: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        var prefaceLeft = Frame.preface.count
        let window = 8
        while next < lines.count || !pending.isEmpty || forever {
            while pending.count < window && next < lines.count {
                let size = 50 + Int(rng.next() % 400)
                let range = next..<min(lines.count, next + size)
                var payload = [UInt8]()
                for l in lines[range] { payload += l }
                id += 1
                guard (try? socket.write(Frame(.batch, id: id, payload: payload).encoded)) != nil else { return }
                pending.append((id, range))
                next = range.upperBound
                if forever && next == lines.count { next = 0 }
            }
            let n = (try? buffer.withUnsafeMutableBytes { try socket.read(into: $0) }) ?? 0
            if n == 0 { return }
            var bytes = Array(buffer[0..<n])
            if prefaceLeft > 0 {
                let take = min(prefaceLeft, bytes.count)
                bytes.removeFirst(take)
                prefaceLeft -= take
            }
            parser.feed(bytes)
            while let frame = try? parser.next() {
                guard !pending.isEmpty, let ack = frame.ack, frame.id == pending[0].0 else { return }
                let range = pending.removeFirst().1
                results.add(Acked(firstSeq: ack.firstSeq, lastSeq: ack.lastSeq, chainHash: ack.chainHash, events: Array(events[range])))
            }
        }
    }

    private func runCrash(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let dir = CLI.temporaryDirectory("server-crash-\(seed)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clients = 3
        var streams = [([[UInt8]], [Event])]()
        for c in 0..<clients {
            var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed &* 31 &+ UInt64(c), events: 5_000))
            var lines = [[UInt8]](), events = [Event]()
            while let e = generator.next() {
                var line = [UInt8]()
                NDJSONEncoder.append(e, to: &line)
                events.append(try NDJSONDecoder().decode(line: Array(line.dropLast()), lineNumber: 1))
                lines.append(line)
            }
            streams.append((lines, events))
        }

        let (server, port) = try Self.startServer(dir)
        let results = Results()
        let group = DispatchGroup()
        for c in 0..<clients {
            let (lines, events) = streams[c]
            DispatchQueue.global().async(group: group) {
                Self.client(port: port, lines: lines, events: events, seed: seed ^ UInt64(c + 1), results: results, forever: true)
            }
        }
        usleep(UInt32(150_000 + rng.next() % 900_000))
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success, "seed \(seed): clients did not notice the server died")
        let acked = results.acked.sorted { $0.firstSeq < $1.firstSeq }
        XCTAssertFalse(acked.isEmpty, "seed \(seed): nothing was acknowledged before the kill; the test proves nothing")
        print("ServerCrashTests: seed \(seed): \(acked.count) batches acknowledged through seq \(acked.last?.lastSeq ?? 0) before SIGKILL")

        let log = try SegmentLog.open(directory: dir)
        XCTAssertTrue(log.recovery.damage.isEmpty, "seed \(seed): \(log.recovery)")
        for a in acked {
            XCTAssertLessThanOrEqual(a.lastSeq, log.lastSeq, "seed \(seed): acknowledged seq \(a.firstSeq)-\(a.lastSeq) is past the recovered head \(log.lastSeq)")
            guard a.lastSeq <= log.lastSeq else { continue }
            var onDisk = [Event]()
            for location in log.locateBlocks(fromSeq: a.firstSeq, toSeq: a.lastSeq) {
                let block = try log.readBlock(location)
                for i in 0..<block.count {
                    let seq = location.header.firstSeq + UInt64(i)
                    if seq >= a.firstSeq && seq <= a.lastSeq { onDisk.append(block.event(at: i)) }
                }
                if location.header.lastSeq == a.lastSeq {
                    XCTAssertEqual(location.header.chainHash.array, a.chainHash, "seed \(seed): chain hash at seq \(a.lastSeq)")
                }
            }
            XCTAssertEqual(onDisk, a.events, "seed \(seed): batch acknowledged as seq \(a.firstSeq)-\(a.lastSeq)")
        }
        // Acknowledged ranges never overlap.
        for (x, y) in zip(acked, acked.dropFirst()) {
            XCTAssertLessThan(x.lastSeq, y.firstSeq, "seed \(seed): overlapping acknowledgements")
        }
        try log.close()
        let report = try Verifier(directory: dir).run()
        XCTAssertTrue(report.ok, "seed \(seed): \(String(describing: report.problem))")
        let head = report.lastSeq

        // A restarted server continues the chain from the recovered head.
        let (again, port2) = try Self.startServer(dir)
        defer { if again.isRunning { kill(again.processIdentifier, SIGKILL) } }
        let more = Results()
        let (lines, events) = streams[0]
        Self.client(port: port2, lines: Array(lines.prefix(100)), events: Array(events.prefix(100)), seed: seed, results: more)
        XCTAssertEqual(more.acked.first?.firstSeq, head + 1, "seed \(seed): the restarted server continues at the head")
        kill(again.processIdentifier, SIGTERM)
        again.waitUntilExit()
        XCTAssertEqual(again.terminationStatus, 0, "seed \(seed): SIGTERM ends the server cleanly")
        XCTAssertTrue(try Verifier(directory: dir).run().ok, "seed \(seed)")
    }
}
