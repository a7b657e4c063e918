import Foundation
import LedgerModel
import LedgerServer
import LedgerStorage
import LedgerWorkload
import XCTest

/// Subscriptions against a real server: a subscriber that starts from an old sequence number
/// while batches keep arriving sees every event exactly once, in order, catch-up joining live
/// with no gap or duplicate; filters and alerts.
final class SubscriptionTests: XCTestCase {
    final class Collected: @unchecked Sendable {
        let lock = NSLock()
        var seqs = [UInt64]()
        var lines = [String]()
        var alerts = [String]()
        var errors = [String]()
    }

    /// Reads frames until `stop()` says so or the connection ends.
    static func subscriber(port: UInt16, request: String, into c: Collected, until stop: @escaping @Sendable () -> Bool) {
        guard let socket = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)) else { return }
        defer { socket.close() }
        guard (try? socket.write(Frame.preface + Frame(.subscribe, id: 9, text: request).encoded)) != nil else { return }
        var parser = FrameParser(payloadBytesMax: 1 << 20)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var prefaceLeft = Frame.preface.count
        while !stop() {
            let n = (try? buffer.withUnsafeMutableBytes { try socket.read(into: $0) }) ?? 0
            if n == 0 { return }
            var bytes = Array(buffer[0..<n])
            let take = min(prefaceLeft, bytes.count)
            bytes.removeFirst(take)
            prefaceLeft -= take
            parser.feed(bytes)
            while let frame = try? parser.next() {
                c.lock.lock()
                switch frame.type {
                case .event:
                    let text = frame.text
                    if let r = text.range(of: "\"seq\":"), let seq = UInt64(text[r.upperBound...].prefix(while: { $0.isNumber })) {
                        c.seqs.append(seq)
                    }
                    c.lines.append(text)
                case .alert: c.alerts.append(frame.text)
                case .error: c.errors.append(frame.text)
                default: break
                }
                c.lock.unlock()
            }
        }
    }

    func testCatchUpJoinsLiveWithoutGapOrDuplicate() throws {
        for seed: UInt64 in [3, 4] {
            let dir = CLI.temporaryDirectory("subscribe-\(seed)")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 6_000))
            var lines = [[UInt8]](), events = [Event]()
            while let e = generator.next() {
                var line = [UInt8]()
                NDJSONEncoder.append(e, to: &line)
                events.append(try NDJSONDecoder().decode(line: Array(line.dropLast()), lineNumber: 1))
                lines.append(line)
            }
            let (server, port) = try ServerCrashTests.startServer(dir)
            defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
            // A first part is on the ledger before anyone subscribes.
            let first = ServerCrashTests.Results()
            ServerCrashTests.client(port: port, lines: Array(lines.prefix(2_000)), events: Array(events.prefix(2_000)), seed: seed, results: first)
            XCTAssertEqual(first.acked.last?.lastSeq, 2_000, "seed \(seed)")

            let all = Collected(), revoked = Collected()
            let total = UInt64(lines.count)
            let lastRevoked = UInt64(events.lastIndex(where: { $0.type == .revoked })! + 1)
            let group = DispatchGroup()
            DispatchQueue.global().async(group: group) {
                Self.subscriber(port: port, request: #"{"from_seq":5}"#, into: all) { all.lock.withLock { all.seqs.last ?? 0 } >= total }
            }
            DispatchQueue.global().async(group: group) {
                Self.subscriber(port: port, request: #"{"from_seq":1,"types":["revoked"]}"#, into: revoked) {
                    revoked.lock.withLock { revoked.seqs.last ?? 0 } >= lastRevoked
                }
            }
            // The rest arrives while the subscribers catch up.
            let rest = ServerCrashTests.Results()
            ServerCrashTests.client(port: port, lines: Array(lines.dropFirst(2_000)), events: Array(events.dropFirst(2_000)), seed: seed ^ 1, results: rest)
            XCTAssertEqual(rest.acked.last?.lastSeq, total, "seed \(seed)")
            XCTAssertEqual(group.wait(timeout: .now() + 30), .success, "seed \(seed): subscribers did not see everything; all reached \(all.seqs.last ?? 0)")

            XCTAssertEqual(all.seqs, Array(5...total), "seed \(seed): every event from seq 5 exactly once, in order")
            XCTAssertTrue(all.errors.isEmpty, "seed \(seed): \(all.errors)")
            let decoder = NDJSONDecoder()
            for (i, line) in all.lines.enumerated() where i % 97 == 0 {
                var e = try decoder.decode(line: line)
                e.attrs["seq"] = nil; e.attrs["received_at"] = nil
                XCTAssertEqual(e, events[Int(all.seqs[i]) - 1], "seed \(seed): event at seq \(all.seqs[i])")
            }
            let expectedRevoked = events.indices.filter { events[$0].type == .revoked }.map { UInt64($0 + 1) }
            XCTAssertEqual(revoked.seqs, expectedRevoked, "seed \(seed): the revoked filter")

            kill(server.processIdentifier, SIGTERM)
            server.waitUntilExit()
            XCTAssertEqual(server.terminationStatus, 0, "seed \(seed)")
        }
    }

    /// A subscriber that stops reading is dropped once its queue passes --subscriber-buffer,
    /// with an ERROR naming the from_seq to resume at: everything before it was delivered, in
    /// order, and resubscribing there gives the rest with no gap. (The server pushes a commit's
    /// frames for a subscriber together; the seq it names must still be the first not sent.)
    func testASubscriberThatStopsReadingIsDroppedWithWhereToResume() throws {
        let seed: UInt64 = 11
        let dir = CLI.temporaryDirectory("subscribe-slow")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 60_000))
        var lines = [[UInt8]](), events = [Event]()
        while let e = generator.next() {
            var line = [UInt8]()
            NDJSONEncoder.append(e, to: &line)
            events.append(e)
            lines.append(line)
        }
        let (server, port) = try ServerCrashTests.startServer(dir, extra: ["--subscriber-buffer", "65536"])
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }

        // Subscribes, with a small receive buffer, and then reads nothing while events arrive.
        let stalled = try Socket.connect(Endpoint(host: "127.0.0.1", port: port))
        var small: Int32 = 4096
        setsockopt(stalled.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        try stalled.write(Frame.preface + Frame(.subscribe, id: 9, text: #"{"from_seq":1}"#).encoded)
        usleep(200_000)
        let sent = ServerCrashTests.Results()
        ServerCrashTests.client(port: port, lines: lines, events: events, seed: seed, results: sent)
        let total = UInt64(lines.count)
        XCTAssertEqual(sent.acked.last?.lastSeq, total, "seed \(seed)")

        // Now it reads what it was sent before the drop, to the end of the connection.
        var parser = FrameParser(payloadBytesMax: 1 << 20)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var seqs = [UInt64](), errors = [String]()
        var prefaceLeft = Frame.preface.count
        while true {
            let n = try buffer.withUnsafeMutableBytes { try stalled.read(into: $0) }
            if n == 0 { break }
            let skip = min(prefaceLeft, n)
            prefaceLeft -= skip
            parser.feed(Array(buffer[skip..<n]))
            while let f = try parser.next() {
                switch f.type {
                case .event:
                    let text = f.text
                    let r = try XCTUnwrap(text.range(of: "\"seq\":"))
                    seqs.append(try XCTUnwrap(UInt64(text[r.upperBound...].prefix(while: { $0.isNumber }))))
                case .error: errors.append(f.text)
                default: break
                }
            }
        }
        stalled.close()
        XCTAssertEqual(errors.count, 1, "seed \(seed): \(errors)")
        let text = try XCTUnwrap(errors.first)
        let r = try XCTUnwrap(text.range(of: "from_seq "), text)
        let resume = try XCTUnwrap(UInt64(text[r.upperBound...].prefix(while: { $0.isNumber })), text)
        XCTAssertLessThan(resume, total, "seed \(seed): dropped before the end")
        XCTAssertEqual(seqs, Array(1..<resume), "seed \(seed): everything before from_seq \(resume), once, in order")

        let rest = Collected()
        Self.subscriber(port: port, request: #"{"from_seq":\#(resume)}"#, into: rest) { rest.lock.withLock { rest.seqs.last ?? 0 } >= total }
        XCTAssertEqual(rest.seqs, Array(resume...total), "seed \(seed): resubscribed at \(resume)")

        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
        XCTAssertEqual(server.terminationStatus, 0, "seed \(seed)")
    }

    func testAlertsFromTheStartThenLive() throws {
        let dir = CLI.temporaryDirectory("alerts")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (server, port) = try ServerCrashTests.startServer(dir)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        func send(_ text: String) {
            let lines = text.split(separator: "\n").map { Array(($0 + "\n").utf8) }
            let events = try! lines.map { try NDJSONDecoder().decode(line: Array($0.dropLast()), lineNumber: 1) }
            ServerCrashTests.client(port: port, lines: lines, events: events, seed: 1, results: ServerCrashTests.Results())
        }
        send("""
        {"type":"issued","ts":1000,"token":"t1","exp":999999}
        {"type":"revoked","ts":1001,"token":"t1","reason":"compromised"}
        {"type":"validated","ts":1002,"token":"t1","gateway":"gw-6"}
        """)
        let alerts = Collected()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            Self.subscriber(port: port, request: #"{"from_seq":1,"alerts":true,"events":false}"#, into: alerts) { alerts.lock.withLock { alerts.alerts.count } >= 2 }
            done.signal()
        }
        usleep(200_000)
        send(#"{"type":"validated","ts":1003,"token":"never-issued"}"#)
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "alerts: \(alerts.alerts)")
        XCTAssertEqual(alerts.alerts.count, 2, "\(alerts.alerts)")
        XCTAssertTrue(alerts.alerts.first?.contains(#""anomaly":"revoked_validated""#) ?? false, "caught up: \(alerts.alerts)")
        XCTAssertTrue(alerts.alerts.first?.contains(#""seq":3"#) ?? false, "\(alerts.alerts)")
        XCTAssertTrue(alerts.alerts.last?.contains(#""anomaly":"never_issued_validated""#) ?? false, "live: \(alerts.alerts)")
        XCTAssertTrue(alerts.lines.isEmpty, "events were not asked for")
        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
    }
}
