import Foundation
@testable import LedgerServer
import LedgerModel
import LedgerStorage
import LedgerWorkload
import XCTest

/// The server on a ledger whose disk fills up or whose fsync fails (the simulated file system's
/// fault model): every batch gets an answer, the one that hit the fault and every one after it
/// an ERROR saying it was not committed; the server does not crash or hang; and after a crash and
/// reopening, the ledger holds every acknowledged event, in order, and verifies.
final class ServerFaultTests: XCTestCase {
    enum Fault: CustomStringConvertible {
        case noSpaceAfter(Int)
        case syncsBeforeFailure(Int)
        var description: String {
            switch self {
            case let .noSpaceAfter(n): "no space after \(n) bytes"
            case let .syncsBeforeFailure(n): "fsync fails after \(n)"
            }
        }
    }

    final class Log: @unchecked Sendable {
        let lock = NSLock()
        var lines = [String]()
    }

    func testAFullDiskOrAFailingFsyncAnswersEveryBatchAndKeepsEveryAcknowledgedEvent() throws {
        for seed: UInt64 in 1...6 {
            var rng = SplitMix64(seed: seed)
            let fault: Fault = seed % 2 == 1 ? .noSpaceAfter(Int(rng.next() % 40_000) + 2_000) : .syncsBeforeFailure(Int(rng.next() % 6))
            try run(seed: seed, fault: fault)
        }
    }

    private func run(seed: UInt64, fault: Fault) throws {
        let context = "seed \(seed), \(fault)"
        let fs = SimulatedFileSystem()
        let directory = "/ledger"
        var options = ServerOptions()
        options.listen = Endpoint(host: "127.0.0.1", port: 0)
        options.alerts = false
        let logged = Log()
        let server = LedgerServer(log: try SegmentLog.open(directory: directory, fileSystem: fs), options: options,
                                  logger: { line in logged.lock.withLock { logged.lines.append(line) } })
        try server.start()

        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: 4_000))
        var batches = [[UInt8]](), events = [[Event]](), payload = [UInt8](), batchEvents = [Event]()
        let decoder = NDJSONDecoder()
        while let e = generator.next() {
            var line = [UInt8]()
            NDJSONEncoder.append(e, to: &line)
            payload += line
            // As the ledger stores it (a raw bearer token becomes its fingerprint, and so on).
            batchEvents.append(try decoder.decode(line: Array(line.dropLast()), lineNumber: 1))
            if batchEvents.count == 200 {
                batches.append(payload); events.append(batchEvents)
                payload = []; batchEvents = []
            }
        }
        switch fault {
        case let .noSpaceAfter(n): fs.noSpaceAfterBytes = n
        case let .syncsBeforeFailure(n): fs.syncsBeforeFailure = n
        }

        // One batch at a time, so each reply says exactly what became of that batch.
        let client = try FramedClient(Endpoint(host: "127.0.0.1", port: server.port))
        var acknowledged = [Event](), refused = 0, lastAckSeq: UInt64 = 0
        for (i, b) in batches.enumerated() {
            try client.socket.write(Frame(.batch, id: UInt64(i), payload: b).encoded)
            let reply = try XCTUnwrap(try client.next(), "\(context): batch \(i) got no reply")
            XCTAssertEqual(reply.id, UInt64(i), context)
            if let ack = reply.ack {
                XCTAssertEqual(refused, 0, "\(context): batch \(i) acknowledged after a refusal")
                XCTAssertEqual(ack.firstSeq, lastAckSeq + 1, context)
                XCTAssertEqual(ack.count, 200, context)
                lastAckSeq = ack.lastSeq
                acknowledged += events[i]
            } else {
                XCTAssertEqual(reply.type, .error, "\(context): batch \(i): \(reply.type) \(reply.text)")
                XCTAssertTrue(reply.text.contains("not committed"), "\(context): batch \(i): \(reply.text)")
                if refused == 0, case .noSpaceAfter = fault {
                    XCTAssertTrue(reply.text.contains("No space left") || reply.text.contains("ENOSPC") || reply.text.contains("errno 28"),
                                  "\(context): the first refusal names the cause: \(reply.text)")
                }
                refused += 1
            }
        }
        client.close()
        XCTAssertGreaterThan(refused, 0, "\(context): the fault was never hit")
        XCTAssertNotNil(server.committer.failed, context)
        // The server still answers other connections after the ledger failed.
        let other = try FramedClient(Endpoint(host: "127.0.0.1", port: server.port))
        try other.socket.write(Frame(.ping, id: 7, payload: [1, 2, 3]).encoded)
        XCTAssertEqual(try other.next()?.type, .pong, context)
        other.close()
        server.stop()

        // Power is lost: only what was synced survives. Every acknowledged event is there.
        fs.crash(seed: seed)
        fs.noSpaceAfterBytes = nil
        fs.syncsBeforeFailure = nil
        let reopened = try SegmentLog.open(directory: directory, fileSystem: fs)
        var stored = [Event]()
        for location in reopened.locateBlocks() { stored += try reopened.readBlock(location).events }
        XCTAssertGreaterThanOrEqual(stored.count, acknowledged.count, context)
        let lost = acknowledged.indices.first { $0 >= stored.count || stored[$0] != acknowledged[$0] }
        XCTAssertNil(lost, "\(context): acknowledged event \(lost.map { $0 + 1 } ?? 0) differs or was lost")
        // Anything after them is whole batches that were written but not acknowledged, in order.
        let unacknowledged = events[(acknowledged.count / 200)...].joined()
        XCTAssertTrue(Array(stored.dropFirst(acknowledged.count)) == Array(unacknowledged.prefix(stored.count - acknowledged.count)),
                      "\(context): what survived past the acknowledged events is the next batches, in order")
        var verifier = Verifier(directory: directory, fileSystem: fs)
        verifier.decodePayloads = true
        XCTAssertNil(try verifier.run().problem, context)
        XCTAssertTrue(logged.lock.withLock { logged.lines }.contains { $0.contains("the ledger failed") }, "\(context): the failure is logged")
    }
}
