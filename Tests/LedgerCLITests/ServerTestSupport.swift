import Foundation
import Glibc
import LedgerModel
import LedgerServer
import LedgerStorage
import LedgerWorkload
import XCTest

/// A real `tokenledger serve` child process on a free loopback port. Its stderr (the server log)
/// is collected as it comes, so a test can wait for a log line and inspect it afterwards.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let directory: String
    private(set) var port: UInt16 = 0
    private let lock = NSCondition()
    private var stderrData = Data()
    private var stdoutData = Data()
    private var stdoutEnded = false

    /// - Parameter launcher: a command that execs the server (as `setpriv --reuid=nobody`).
    ///   With `binary` nil the launcher names the program itself.
    init(directory: String, arguments: [String] = [], launcher: [String] = [], binary: String? = CLI.binary) throws {
        self.directory = directory
        let command = launcher + (binary.map { [$0] } ?? []) + ["serve", "--data", directory, "--listen", "127.0.0.1:0"] + arguments
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let outHandle = out.fileHandleForReading, errHandle = err.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let d = outHandle.availableData
                lock.lock()
                if d.isEmpty { stdoutEnded = true } else { stdoutData.append(d) }
                lock.broadcast()
                lock.unlock()
                if d.isEmpty { return }
            }
        }
        Thread.detachNewThread { [self] in
            while true {
                let d = errHandle.availableData
                if d.isEmpty { return }
                lock.lock(); stderrData.append(d); lock.broadcast(); lock.unlock()
            }
        }
        // The first stdout line is "listening 127.0.0.1:PORT".
        let deadline = Date().addingTimeInterval(20)
        lock.lock()
        while !stdoutData.contains(0x0A) && !stdoutEnded && lock.wait(until: deadline) {}
        let text = String(decoding: stdoutData, as: UTF8.self)
        lock.unlock()
        let first = text.split(separator: "\n").first.map(String.init) ?? ""
        guard first.hasPrefix("listening 127.0.0.1:"), let p = UInt16(first.dropFirst("listening 127.0.0.1:".count)) else {
            killIfRunning()
            throw TestFailure("the server did not print \"listening 127.0.0.1:PORT\" first; stdout: \(text); stderr: \(stderr)")
        }
        port = p
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }
    var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: stderrData, as: UTF8.self) }

    /// Waits until the server log satisfies `predicate`. - Returns: false on timeout.
    func waitForLog(timeout: TimeInterval = 10, _ predicate: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock(); defer { lock.unlock() }
        while true {
            if predicate(String(decoding: stderrData, as: UTF8.self)) { return true }
            if !lock.wait(until: deadline) { return predicate(String(decoding: stderrData, as: UTF8.self)) }
        }
    }

    /// Sends SIGTERM and waits for the exit. - Returns: the exit status, or nil when the server
    /// did not exit in time (it is then killed) or died of a signal.
    func terminate(timeout: TimeInterval = 20) -> Int32? {
        guard process.isRunning else { return process.terminationReason == .exit ? process.terminationStatus : nil }
        kill(process.processIdentifier, SIGTERM)
        return waitForExit(timeout: timeout)
    }

    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning {
            killIfRunning()
            return nil
        }
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    func killIfRunning() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A client socket with read/write timeouts (a server that stops answering fails the test
/// instead of hanging it) and a frame reader.
final class TestConnection: @unchecked Sendable {
    let socket: Socket
    private var parser = FrameParser(payloadBytesMax: 32 << 20)
    private var raw = [UInt8]()
    private var buffer = [UInt8](repeating: 0, count: 256 << 10)
    private(set) var ended = false

    init(_ endpoint: Endpoint, timeoutSeconds: Int = 20) throws {
        socket = try Socket.connect(endpoint)
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    var localPort: UInt16 { socket.localPort }

    func write(_ bytes: [UInt8]) throws { try socket.write(bytes) }
    func write(_ frame: Frame) throws { try socket.write(frame.encoded) }

    /// Sends the preface and checks the server answers with it.
    func openFramed() throws {
        try write(Frame.preface)
        try readPreface()
    }

    func readPreface() throws {
        while raw.count < Frame.preface.count {
            guard try fill() else { throw TestFailure("connection ended before the server's preface (got \(raw))") }
        }
        guard Array(raw.prefix(Frame.preface.count)) == Frame.preface else {
            throw TestFailure("the server answered \(String(decoding: raw, as: UTF8.self).debugDescription), not the preface")
        }
        parser.feed(Array(raw.dropFirst(Frame.preface.count)))
        raw = []
        prefaceDone = true
    }

    private var prefaceDone = false

    /// - Returns: false at end of stream.
    private func fill() throws -> Bool {
        if ended { return false }
        let n = try buffer.withUnsafeMutableBytes { try socket.read(into: $0) }
        if n == 0 { ended = true; return false }
        if prefaceDone { parser.feed(Array(buffer[0..<n])) } else { raw += buffer[0..<n] }
        return true
    }

    /// - Returns: the next frame, or nil at end of stream (bytes of an unfinished frame then
    ///   are an error).
    func readFrame() throws -> Frame? {
        precondition(prefaceDone)
        while true {
            if let f = try parser.next() { return f }
            guard try fill() else {
                if parser.bufferedBytes > 0 { throw TestFailure("stream ended inside a frame (\(parser.bufferedBytes) bytes)") }
                return nil
            }
        }
    }

    /// Everything the server sends until it closes (for line mode / refused connections).
    func readToEnd() throws -> [UInt8] {
        precondition(!prefaceDone)
        while try fill() {}
        return raw
    }

    /// Sends FIN (end of our stream) but keeps reading.
    func shutdownWrite() { _ = Glibc.shutdown(socket.fd, Int32(SHUT_WR)) }

    /// Closes with a TCP reset (SO_LINGER 0), like a client that crashed with unread data.
    func resetAndClose() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        socket.close()
    }

    func close() { socket.close() }

    /// Waits until the peer's TCP has acknowledged every byte written (TIOCOUTQ is 0), i.e. the
    /// bytes are in the server's kernel. - Returns: false on timeout.
    func waitUntilSent(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var unsent: Int32 = 0
            guard ioctl(socket.fd, UInt(TIOCOUTQ), &unsent) == 0 else { return false }
            if unsent == 0 { return true }
            if Date() > deadline { return false }
            usleep(200)
        }
    }
}

enum WorkloadStart {
    static let ms = WorkloadConfiguration.defaultStartMs
}

/// Seeded event streams. Every event carries `request_id` "<tag>-<n>", so a test can tell which
/// client and which line an event on the ledger came from.
struct TestStream {
    /// NDJSON lines, each ending in "\n".
    var lines: [[UInt8]]
    /// What the decoder makes of each line (what the ledger must hold).
    var events: [Event]

    init(seed: UInt64, count: Int, tag: String) throws {
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: count, tokens: 200, subjects: 500))
        var lines = [[UInt8]](), events = [Event]()
        lines.reserveCapacity(count); events.reserveCapacity(count)
        let decoder = NDJSONDecoder()
        var n = 0
        while var e = generator.next() {
            n += 1
            e.requestID = "\(tag)-\(n)"
            var line = [UInt8]()
            NDJSONEncoder.append(e, to: &line)
            events.append(try decoder.decode(line: Array(line.dropLast()), lineNumber: n))
            lines.append(line)
        }
        self.lines = lines
        self.events = events
    }

    /// Cuts the stream into consecutive batches of the given sizes.
    func batches(_ sizes: [Int]) -> [(payload: [UInt8], events: [Event])] {
        var out = [(payload: [UInt8], events: [Event])]()
        var at = 0
        for size in sizes {
            var payload = [UInt8]()
            for l in lines[at..<at + size] { payload += l }
            out.append((payload, Array(events[at..<at + size])))
            at += size
        }
        return out
    }
}

/// What a stopped server left on disk, read the way a reader of the ledger would.
struct LedgerContents {
    /// Event at seq s is `events[s - 1]`.
    var events: [Event] = []
    /// Chain hash of each block, keyed by the block's last seq.
    var chainHashAt: [UInt64: [UInt8]] = [:]
    var blockCount = 0

    init(directory: String) throws {
        let log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true))
        defer { try? log.close() }
        for location in log.blocks {
            guard location.header.firstSeq == UInt64(events.count) + 1 else {
                throw TestFailure("block at \(location.segment)+\(location.offset) starts at seq \(location.header.firstSeq), expected \(events.count + 1)")
            }
            let block = try log.readBlock(location)
            events += block.events
            chainHashAt[location.header.lastSeq] = location.header.chainHash.array
            blockCount += 1
        }
    }

    func events(_ first: UInt64, _ last: UInt64) -> [Event] {
        guard first >= 1, last >= first, last <= UInt64(events.count) else { return [] }
        return Array(events[Int(first - 1)..<Int(last)])
    }

    /// Events whose request_id starts with "<tag>-", in ledger order.
    func tagged(_ tag: String) -> [Event] {
        events.filter { $0.requestID?.hasPrefix(tag + "-") == true }
    }
}

extension SplitMix64 {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A frame header written by hand (for frames the `Frame` type cannot express).
func rawFrameHeader(length: UInt32, type: UInt8, flags: UInt8 = 0, id: UInt64) -> [UInt8] {
    var out = [UInt8]()
    withUnsafeBytes(of: length.littleEndian) { out += $0 }
    out += [type, flags, 0, 0]
    withUnsafeBytes(of: id.littleEndian) { out += $0 }
    return out
}

/// The JSON object of a NACK/ERROR payload.
func jsonObject(_ frame: Frame) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(frame.payload))) as? [String: Any]
}
