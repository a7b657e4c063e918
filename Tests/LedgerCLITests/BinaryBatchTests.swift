import Foundation
import LedgerModel
import LedgerServer
import LedgerStorage
import XCTest

/// Client-encoded batches (BINARY_BATCH): stored as given once they decode and keep the same
/// promises as NDJSON input; anything else is refused with nothing stored.
final class BinaryBatchTests: XCTestCase {
    func payload(_ events: [Event]) -> [UInt8] {
        var encoder = BlockPayloadEncoder(expectedEvents: events.count)
        for e in events { encoder.append(e) }
        return encoder.finish()
    }

    func testBinaryBatchesAreCheckedThenStoredAsGiven() throws {
        let dir = CLI.temporaryDirectory("binary")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (server, port) = try ServerCrashTests.startServer(dir)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let good = (0..<300).map { Event(type: .validated, ts: 1_000 + Int64($0), token: "t-\($0 % 17)", gateway: "gw-1", release: "v1", track: "stable") }
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
        var garbage = payload(good)
        garbage[garbage.count / 2] ^= 0xFF
        let frames = [
            Frame(.binaryBatch, id: 1, payload: payload(good)),
            Frame(.binaryBatch, id: 2, payload: payload([Event(type: .validated, ts: 5, token: jwt)])),
            Frame(.binaryBatch, id: 3, payload: payload([Event(type: .deploy, ts: 6, release: "v2", track: "canary", marker: "m-1"),
                                                         Event(type: .issued, ts: 7, token: "after-marker")])),
            Frame(.binaryBatch, id: 4, payload: garbage),
            Frame(.binaryBatch, id: 5, payload: payload([Event(type: .issued, ts: 8, token: "last", exp: 99)])),
        ]
        let client = try FramedClient(Endpoint(host: "127.0.0.1", port: port), payloadBytesMax: 1 << 20, first: frames)
        var replies = [Frame]()
        while replies.count < frames.count, let f = try client.next() { replies.append(f) }
        client.close()
        XCTAssertEqual(replies.map(\.type), [.ack, .nack, .nack, .nack, .ack], "\(replies.map(\.text))")
        XCTAssertTrue(replies[1].text.contains("raw bearer token"), replies[1].text)
        XCTAssertFalse(replies[1].text.contains(jwt), "the refusal never quotes the token")
        XCTAssertTrue(replies[2].text.contains("marker must be the last event"), replies[2].text)
        XCTAssertEqual(replies[0].ack?.firstSeq, 1)
        XCTAssertEqual(replies[0].ack?.lastSeq, 300)
        XCTAssertEqual(replies[4].ack?.firstSeq, 301)
        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()

        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        var events = [Event]()
        for l in log.locateBlocks() { events += try log.readBlock(l).events }
        XCTAssertEqual(events, good + [Event(type: .issued, ts: 8, token: "last", exp: 99)])
        XCTAssertTrue(try Verifier(directory: dir).run().ok)
    }

    /// `send --binary` encodes on the client; what lands is what the NDJSON said, and a batch
    /// with a bad line still goes as NDJSON so the server names the line.
    func testSendBinaryStoresWhatTheNDJSONSaid() throws {
        let dir = CLI.temporaryDirectory("send-binary")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (server, port) = try ServerCrashTests.startServer(dir)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let gen = try CLI.run(["gen", "--events", "3000", "--seed", "11"])
        XCTAssertEqual(gen.status, 0)
        let sent = try CLI.run(["send", "--to", "127.0.0.1:\(port)", "--binary", "--batch-events", "500"], stdin: Data(gen.stdout.utf8))
        XCTAssertEqual(sent.status, 0, sent.stderr)
        XCTAssertTrue(sent.stdout.contains("acknowledged 3000 events, last seq 3000"), sent.stdout)
        let bad = Data((gen.stdout.split(separator: "\n").prefix(5).joined(separator: "\n") + "\n{\"type\":\"validated\",\"ts\":true,\"token\":\"x\"}\n").utf8)
        let refused = try CLI.run(["send", "--to", "127.0.0.1:\(port)", "--binary"], stdin: bad)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("lines 1-6") && refused.stderr.contains("line 6, byte 25"), refused.stderr)
        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        var onDisk = [Event]()
        for l in log.locateBlocks() { onDisk += try log.readBlock(l).events }
        let decoder = NDJSONDecoder()
        let expected = try gen.stdout.split(separator: "\n").map { try decoder.decode(line: String($0)) }
        XCTAssertEqual(onDisk, expected, "the refused batch left nothing; the binary batches hold exactly the NDJSON's events")
    }
}
