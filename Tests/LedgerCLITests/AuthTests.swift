import Foundation
import LedgerModel
import LedgerServer
import LedgerStorage
import XCTest

/// `serve --keys`: an unauthenticated or wrongly authenticated client is refused clearly and
/// nothing it sent reaches the ledger; an authenticated gateway's events carry its id and it
/// cannot speak for another gateway.
final class AuthTests: XCTestCase {
    static let keys = "# test keys\ngw-01 0123456789abcdef0123\ngw-02\tfedcba9876543210fedc\n"

    func startServer(_ dir: String) throws -> (Process, UInt16) {
        let keyFile = dir + ".keys"
        try Self.keys.write(toFile: keyFile, atomically: true, encoding: .utf8)
        return try ServerCrashTests.startServer(dir, extra: ["--keys", keyFile, "--no-alerts"])
    }

    /// Sends `frames` after the preface and returns the replies until the server closes or
    /// `count` replies came.
    func exchange(_ port: UInt16, _ frames: [Frame], count: Int) throws -> [Frame] {
        let client = try FramedClient(Endpoint(host: "127.0.0.1", port: port), payloadBytesMax: 1 << 20, first: frames)
        defer { client.close() }
        var replies = [Frame]()
        while replies.count < count, let f = try client.next() { replies.append(f) }
        return replies
    }

    func lineExchange(_ port: UInt16, _ text: String) throws -> String {
        let socket = try Socket.connect(Endpoint(host: "127.0.0.1", port: port))
        defer { socket.close() }
        try socket.write(Array(text.utf8))
        socket.shutdownWrite()
        var got = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try socket.read(into: $0) }
            if n == 0 { break }
            got += buffer[0..<n]
        }
        return String(decoding: got, as: UTF8.self)
    }

    func hello(_ gateway: String, _ key: String) -> Frame {
        Frame(.hello, id: 1, text: #"{"gateway":"\#(gateway)","key":"\#(key)"}"#)
    }

    func testUnauthenticatedClientsAreRefusedAndNothingTheySentIsKept() throws {
        let dir = CLI.temporaryDirectory("auth")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (server, port) = try startServer(dir)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let batch = Frame(.batch, id: 2, text: #"{"type":"issued","ts":1,"token":"refused-1"}"# + "\n")

        // No HELLO: the batch is refused and the connection closed.
        var replies = try exchange(port, [batch], count: 2)
        XCTAssertEqual(replies.map(\.type), [.error], "\(replies.map(\.text))")
        XCTAssertTrue(replies.first?.text.contains("authentication required") ?? false)
        // Wrong key, unknown gateway: refused too.
        for h in [hello("gw-01", "not-the-right-key-at-all"), hello("gw-99", "0123456789abcdef0123"), Frame(.hello, id: 1, text: "not json")] {
            replies = try exchange(port, [h, batch], count: 2)
            XCTAssertEqual(replies.map(\.type), [.error], "\(h.text): \(replies.map(\.text))")
            XCTAssertTrue(replies.first?.text.contains("authentication failed") ?? false, h.text)
        }
        // Subscriptions need it as well.
        replies = try exchange(port, [Frame(.subscribe, id: 3, text: "{}")], count: 2)
        XCTAssertEqual(replies.map(\.type), [.error])
        // Line mode: the first line must authenticate.
        let refusedLine = try lineExchange(port, #"{"type":"issued","ts":1,"token":"refused-2"}"# + "\n")
        XCTAssertTrue(refusedLine.contains("authentication required"), refusedLine)
        let wrongLine = try lineExchange(port, #"{"auth":{"gateway":"gw-02","key":"0123456789abcdef0123"}}"# + "\n" + #"{"type":"issued","ts":1,"token":"refused-3"}"# + "\n")
        XCTAssertTrue(wrongLine.contains("authentication required"), wrongLine)

        // Authenticated: taken, stamped with the gateway; another gateway's name is refused.
        replies = try exchange(port, [hello("gw-01", "0123456789abcdef0123"), batch,
                                      Frame(.batch, id: 4, text: #"{"type":"issued","ts":2,"token":"other","gateway":"gw-02"}"# + "\n"),
                                      Frame(.batch, id: 5, text: #"{"type":"issued","ts":3,"token":"mine","gateway":"gw-01"}"# + "\n")], count: 4)
        XCTAssertEqual(replies.map(\.type), [.welcome, .ack, .nack, .ack], "\(replies.map(\.text))")
        XCTAssertTrue(replies[2].text.contains("not the authenticated gateway"), replies[2].text)
        let okLine = try lineExchange(port, #"{"auth":{"gateway":"gw-02","key":"fedcba9876543210fedc"}}"# + "\n" + #"{"type":"issued","ts":4,"token":"by-line"}"# + "\n")
        XCTAssertEqual(okLine, "", "an authenticated line-mode client gets no reply")
        usleep(300_000)
        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()

        let log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true))
        var events = [Event]()
        for l in log.locateBlocks() { events += try log.readBlock(l).events }
        XCTAssertEqual(events.map(\.token), ["refused-1", "mine", "by-line"], "only what authenticated clients sent")
        XCTAssertEqual(events.map(\.gateway), ["gw-01", "gw-01", "gw-02"])
    }
}
