import Foundation
@testable import LedgerServer
import LedgerModel
import LedgerStorage
import LedgerWorkload
import XCTest

/// The projector at the head is fed from the committer through a bounded queue: when it stalls,
/// acknowledgements stop at the bound (nothing piles up in memory), and they resume, all of
/// them, once it catches up.
final class ProjectorBackpressureTests: XCTestCase {
    final class Acks: @unchecked Sendable {
        let lock = NSLock()
        var ids = [UInt64]()
        var count: Int { lock.withLock { ids.count } }
    }

    func testAStalledProjectorHoldsAcknowledgementsAtItsBoundThenAllArrive() throws {
        let dir = CLI.temporaryDirectory("projector-bound")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ServerOptions()
        options.listen = Endpoint(host: "127.0.0.1", port: 0)
        options.projectionQueueEventsMax = 5_000
        let server = LedgerServer(log: try SegmentLog.open(directory: dir), options: options, logger: { _ in })
        try server.start()
        defer { server.stop() }
        let live = try XCTUnwrap(server.live)

        var generator = WorkloadGenerator(WorkloadConfiguration(seed: 21, events: 20_000))
        var batches = [[UInt8]](), current = [UInt8](), inBatch = 0
        while let e = generator.next() {
            NDJSONEncoder.append(e, to: &current)
            inBatch += 1
            if inBatch == 1_000 { batches.append(current); current = []; inBatch = 0 }
        }
        XCTAssertEqual(batches.count, 20)

        // The projector is held: it cannot apply anything while this holds the state.
        let holding = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            live.withProjection(upTo: 0) { _ in
                holding.signal()
                release.wait()
            }
        }
        holding.wait()

        let client = try FramedClient(Endpoint(host: "127.0.0.1", port: server.port))
        defer { client.close() }
        let acks = Acks()
        Thread.detachNewThread {
            while let f = try? client.next() {
                XCTAssertEqual(f.type, .ack, f.text)
                acks.lock.withLock { acks.ids.append(f.id) }
            }
        }
        // The first alone: a commit is let in whole when nothing waits, whatever its size; from
        // then on, only while the total stays within the bound.
        try client.socket.write(Frame(.batch, id: 0, payload: batches[0]).encoded)
        let first = Date().addingTimeInterval(10)
        while acks.count < 1 && Date() < first { usleep(1_000) }
        for (i, b) in batches.enumerated().dropFirst() { try client.socket.write(Frame(.batch, id: UInt64(i), payload: b).encoded) }

        // Acknowledgements stop once 5,000 events wait for the projector.
        let deadline = Date().addingTimeInterval(10)
        while acks.count < 5 && Date() < deadline { usleep(10_000) }
        usleep(1_000_000)
        let held = acks.count
        XCTAssertGreaterThanOrEqual(held, 1, "the first batch is acknowledged")
        XCTAssertLessThanOrEqual(held * 1_000, 5_000, "acknowledged while the projector was held: \(held) batches")
        XCTAssertLessThanOrEqual(live.queuedEventsHighWater, 5_000)

        release.signal()
        let end = Date().addingTimeInterval(20)
        while acks.count < 20 && Date() < end { usleep(10_000) }
        XCTAssertEqual(acks.lock.withLock { acks.ids }, (0..<20).map { UInt64($0) }, "every batch, in order, once the projector caught up")
        XCTAssertEqual(live.withProjection(upTo: 20_000) { $0.lastSeq }, 20_000)
        XCTAssertEqual(live.backlog, 0)
    }

    /// The commit queue's bound, behind a held projector: the committer waits on the projector,
    /// readers of several connections wait for room in the commit queue, and all of them are
    /// woken (each by a wake-up sent after the lock is let go) once the projector moves again.
    func testReadersWaitingForRoomInTheCommitQueueAreAllWokenAndAcknowledged() throws {
        let dir = CLI.temporaryDirectory("commit-bound")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ServerOptions()
        options.listen = Endpoint(host: "127.0.0.1", port: 0)
        options.projectionQueueEventsMax = 1_000
        options.queueEventsMax = 2_000
        let server = LedgerServer(log: try SegmentLog.open(directory: dir), options: options, logger: { _ in })
        try server.start()
        defer { server.stop() }
        let live = try XCTUnwrap(server.live)

        let connections = 3, perConnection = 8
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: 22, events: connections * perConnection * 500))
        var batches = [[UInt8]](), current = [UInt8](), inBatch = 0
        while let e = generator.next() {
            NDJSONEncoder.append(e, to: &current)
            inBatch += 1
            if inBatch == 500 { batches.append(current); current = []; inBatch = 0 }
        }
        XCTAssertEqual(batches.count, connections * perConnection)

        let holding = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            live.withProjection(upTo: 0) { _ in
                holding.signal()
                release.wait()
            }
        }
        holding.wait()

        var clients = [FramedClient](), acks = [Acks]()
        for c in 0..<connections {
            let client = try FramedClient(Endpoint(host: "127.0.0.1", port: server.port))
            let a = Acks()
            clients.append(client); acks.append(a)
            Thread.detachNewThread {
                while let f = try? client.next() {
                    XCTAssertEqual(f.type, .ack, f.text)
                    a.lock.withLock { a.ids.append(f.id) }
                }
            }
            for i in 0..<perConnection {
                try client.socket.write(Frame(.batch, id: UInt64(i), payload: batches[c * perConnection + i]).encoded)
            }
        }
        defer { for c in clients { c.close() } }

        // Held: at most the projector's bound, one commit waiting to be handed to it, and the
        // commit queue's bound are acknowledged or queued; the rest wait in their readers.
        usleep(1_000_000)
        let held = acks.reduce(0) { $0 + $1.count }
        XCTAssertLessThanOrEqual(held * 500, 1_000 + 2_000, "acknowledged while the projector was held: \(held) batches")
        XCTAssertLessThanOrEqual(server.committer.queueDepth, 2_000)
        XCTAssertLessThan(held, connections * perConnection, "some batches must still be waiting for room")

        release.signal()
        let end = Date().addingTimeInterval(20)
        while acks.reduce(0, { $0 + $1.count }) < connections * perConnection && Date() < end { usleep(10_000) }
        for (c, a) in acks.enumerated() {
            XCTAssertEqual(a.lock.withLock { a.ids }, (0..<perConnection).map { UInt64($0) }, "connection \(c): every batch, in order")
        }
        let total = UInt64(connections * perConnection * 500)
        XCTAssertEqual(live.withProjection(upTo: total) { $0.lastSeq }, total)
    }
}
