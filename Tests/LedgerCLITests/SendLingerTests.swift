import Foundation
import Glibc
import LedgerModel
import LedgerServer
import LedgerStorage
import XCTest

/// `tokenledger send` on a live pipe: a partial batch goes once its linger is up, while input
/// that is already there still fills whole batches.
final class SendLingerTests: XCTestCase {
    /// The server's head, asked with HELLO on a fresh connection.
    func head(_ server: ServerProcess) throws -> UInt64 {
        let c = try TestConnection(server.endpoint)
        defer { c.close() }
        try c.openFramed()
        try c.write(Frame(.hello, id: 1, text: "{}"))
        guard let f = try c.readFrame(), f.type == .welcome, let h = jsonObject(f)?["head_seq"] as? String, let n = UInt64(h) else {
            throw TestFailure("no WELCOME with head_seq")
        }
        return n
    }

    func waitForHead(_ server: ServerProcess, _ seq: UInt64, timeout: TimeInterval) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try head(server) >= seq { return true }
            usleep(20_000)
        }
        return try head(server) >= seq
    }

    func testLinesOnAnOpenPipeAreSentAfterTheLingerNotHeldForAFullBatch() throws {
        let dir = CLI.temporaryDirectory("send-linger")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir)
        defer { server.killIfRunning() }

        let send = Process()
        send.executableURL = URL(fileURLWithPath: CLI.binary)
        send.arguments = ["send", "--to", "127.0.0.1:\(server.port)", "--batch-events", "4096", "--linger-ms", "20"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        send.standardInput = input
        send.standardOutput = output
        send.standardError = errors
        try send.run()
        defer { if send.isRunning { kill(send.processIdentifier, SIGKILL) } }

        input.fileHandleForWriting.write(Data("{\"type\":\"issued\",\"ts\":1,\"token\":\"a\",\"exp\":9}\n{\"type\":\"validated\",\"ts\":2,\"token\":\"a\"}\n".utf8))
        XCTAssertTrue(try waitForHead(server, 2, timeout: 10), "two lines on an open pipe reached the ledger without waiting for 4096")
        // A line written in two pieces is one event, sent when it is whole.
        input.fileHandleForWriting.write(Data("{\"type\":\"revoked\",\"ts\":3,".utf8))
        usleep(100_000)
        XCTAssertEqual(try head(server), 2, "half a line is not an event")
        input.fileHandleForWriting.write(Data("\"token\":\"a\",\"reason\":\"leak\"}\n".utf8))
        XCTAssertTrue(try waitForHead(server, 3, timeout: 10))
        try input.fileHandleForWriting.close()
        send.waitUntilExit()
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(send.terminationStatus, 0, String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        XCTAssertTrue(out.contains("acknowledged 3 events, last seq 3"), out)
        XCTAssertEqual(server.terminate(), 0)
        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        XCTAssertEqual(try log.locateBlocks().flatMap { try log.readBlock($0).events }.map(\.type), [.issued, .validated, .revoked])
    }

    /// The promise for `send`: when the connection drops, it still says how much made it
    /// (the count and the last sequence number acknowledged) and exits non-zero.
    func testAServerKilledMidStreamLeavesSendSayingWhatWasAcknowledgedAndFailing() throws {
        let dir = CLI.temporaryDirectory("send-drop")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir)
        defer { server.killIfRunning() }

        let send = Process()
        send.executableURL = URL(fileURLWithPath: CLI.binary)
        send.arguments = ["send", "--to", "127.0.0.1:\(server.port)", "--batch-events", "1000", "--linger-ms", "20"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        send.standardInput = input
        send.standardOutput = output
        send.standardError = errors
        try send.run()
        defer { if send.isRunning { kill(send.processIdentifier, SIGKILL) } }

        input.fileHandleForWriting.write(Data("{\"type\":\"issued\",\"ts\":1,\"token\":\"a\",\"exp\":9}\n{\"type\":\"validated\",\"ts\":2,\"token\":\"a\"}\n{\"type\":\"validated\",\"ts\":3,\"token\":\"a\"}\n".utf8))
        XCTAssertTrue(try waitForHead(server, 3, timeout: 10))
        usleep(300_000)  // the acknowledgement follows the commit at once; give it time to arrive
        server.killIfRunning()
        // More input after the server is gone: send finds the connection dead and stops.
        var more = ""
        for i in 0..<5_000 { more += "{\"type\":\"validated\",\"ts\":\(i + 4),\"token\":\"a\"}\n" }
        signal(SIGPIPE, SIG_IGN)
        try? input.fileHandleForWriting.write(contentsOf: Data(more.utf8))
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(20)
        while send.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(send.isRunning, "send must end once its server is gone")
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertNotEqual(send.terminationStatus, 0, "a dropped connection is a failure; stderr: \(err)")
        XCTAssertTrue(out.contains("acknowledged 3 events, last seq 3"), "stdout: \(out); stderr: \(err)")
        XCTAssertTrue(err.contains("connection lost"), err)

        // What send reported acknowledged is on the ledger.
        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        XCTAssertEqual(try log.locateBlocks().flatMap { try log.readBlock($0).events }.prefix(3).map(\.type), [.issued, .validated, .validated])
    }

    func testInputAlreadyThereStillGoesInFullBatches() throws {
        let dir = CLI.temporaryDirectory("send-full-batches")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir)
        defer { server.killIfRunning() }
        var lines = ""
        for i in 0..<10_000 { lines += "{\"type\":\"validated\",\"ts\":\(i + 1),\"token\":\"t\(i % 97)\"}\n" }
        let file = dir + "-input.ndjson"
        defer { unlink(file) }
        try Data(lines.utf8).write(to: URL(fileURLWithPath: file))
        // Linger 0: a batch goes as soon as no more input is ready, and a file always is.
        let sent = try CLI.run(["send", "--to", "127.0.0.1:\(server.port)", "--batch-events", "4096", "--linger-ms", "0", file])
        XCTAssertEqual(sent.status, 0, sent.stderr)
        XCTAssertTrue(sent.stdout.contains("acknowledged 10000 events, last seq 10000"), sent.stdout)
        XCTAssertEqual(server.terminate(), 0)
        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        XCTAssertEqual(log.locateBlocks().map(\.header.eventCount), [4096, 4096, 1808], "one block per full batch")
    }
}
