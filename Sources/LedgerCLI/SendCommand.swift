import Glibc
import LedgerModel
import LedgerServer
import LedgerStorage

enum SendCommand {
    static let usage = """
    usage: tokenledger send --to HOST:PORT [FILE] [--batch-events N] [--window W] [--binary]
                           [--linger-ms MS] [--gateway ID --key-file FILE]

    Streams NDJSON (FILE or stdin) to a ledger server in framed mode: batches of N lines
    (default 4096), up to W batches in flight (default 32). When the input pauses (a live
    pipe: `tail -F access.log | tokenledger send ...`), a partial batch goes once its first
    line has waited MS milliseconds (default 5; 0 sends whenever no more input is ready), so
    a revocation is not held back for N lines. Prints how many events were
    acknowledged and the last sequence number, also when the connection drops (then it exits
    1), so an operator always knows what made it. A batch the server refuses is reported with
    the input lines it held; the others still go.

      --binary   encode the batches here (BINARY_BATCH: the server skips JSON parsing, the
                 fastest path); a batch with a bad line, or a marker before its end, still
                 goes as NDJSON so the server names the problem

    """ + ClientAuth.help

    final class Shared: @unchecked Sendable {
        let cond = Condition()
        var inFlight = 0
        var acknowledgedEvents: UInt64 = 0
        var lastSeq: UInt64 = 0
        var chainHash = ""
        var refused = 0
        var closed = false
        var firstLineOfBatch: [UInt64: Int] = [:]
        var lastLineOfBatch: [UInt64: Int] = [:]
        var unacknowledged = Set<UInt64>()
        var readerFinished = false
        var serverPrefaceOK = true
        var serverErrors = 0
    }

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: Set(["to", "batch-events", "window", "linger-ms"]).union(ClientAuth.options), flags: ["binary"], positionalsMax: 1),
                                 command: "send")
        let lingerMs = Int(try args.int("linger-ms", range: 0...60_000) ?? 5)
        guard let endpoint = Endpoint(parsing: try args.required("to")) else { throw .usage("send", "--to expects HOST:PORT") }
        let batchLines = Int(try args.int("batch-events", range: 1...65_536) ?? 4096)
        let binary = args.has("binary")
        let decoder = NDJSONDecoder()
        /// The batch encoded here (BINARY_BATCH), which spares the server the JSON parsing. A
        /// batch this side cannot encode as one binary block (a bad line, so the server's NACK
        /// names it; a marker before the end) goes as NDJSON instead.
        func binaryFrame(_ bytes: [UInt8], id: UInt64, firstLine: Int) -> Frame {
            var encoder = BlockPayloadEncoder(expectedEvents: batchLines)
            var ok = true
            bytes.withUnsafeBytes { raw in
                var start = 0
                var n = 0
                while start < raw.count, ok {
                    let end = memchr(raw.baseAddress! + start, 0x0A, raw.count - start).map { UnsafeRawPointer($0) - raw.baseAddress! } ?? raw.count
                    var line = UnsafeRawBufferPointer(rebasing: raw[start..<end])
                    if line.last == 0x0D { line = UnsafeRawBufferPointer(rebasing: line.dropLast()) }
                    start = end + 1
                    n += 1
                    if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                    guard let e = try? decoder.decode(line: line, lineNumber: firstLine + n - 1), !(e.type.isMarker && start < raw.count) else {
                        ok = false
                        return
                    }
                    encoder.append(e)
                }
            }
            guard ok, encoder.count > 0, encoder.invalidEvent == nil else { return Frame(.batch, id: id, payload: bytes) }
            return Frame(.binaryBatch, id: id, payload: encoder.finish())
        }
        let window = Int(try args.int("window", range: 1...1024) ?? 32)
        var fd: Int32 = 0
        var name = "stdin"
        if let path = args.positionals.first, path != "-" {
            fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw .failure("send", "cannot open \(path): \(String(cString: strerror(errno)))") }
            name = path
        }
        defer { if fd > 0 { close(fd) } }

        let hello = try ClientAuth.hello(args)
        let client: FramedClient
        do { client = try FramedClient(endpoint, payloadBytesMax: 1 << 20, first: hello.map { [$0] } ?? []) } catch { throw .failure("send", "\(error)") }
        let socket = client.socket
        let shared = Shared()
        let inputName = name

        startThread(name: "tl-send-acks") {
            while true {
                let frame: Frame
                do throws(FrameError) {
                    guard let f = try client.next() else { break }
                    frame = f
                } catch {
                    if error.reason.hasPrefix("the server did not answer") { shared.cond.mutex.locked { shared.serverPrefaceOK = false } }
                    printError("tokenledger send: \(error.reason)")
                    break
                }
                shared.cond.mutex.locked {
                    switch frame.type {
                    case .ack:
                        if let a = frame.ack {
                            shared.acknowledgedEvents += a.count
                            shared.lastSeq = max(shared.lastSeq, a.lastSeq)
                            shared.chainHash = a.chainHash.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
                        }
                    case .nack:
                        shared.refused += 1
                        let first = shared.firstLineOfBatch[frame.id] ?? 0, last = shared.lastLineOfBatch[frame.id] ?? 0
                        printError("tokenledger send: batch \(frame.id) (\(inputName) lines \(first)-\(last)) refused, nothing from it committed: \(frame.text)")
                    case .welcome:
                        break
                    case .error:
                        shared.serverErrors += 1
                        printError("tokenledger send: server refused" + (frame.id == 0 ? "" : " batch \(frame.id)") + ": \(frame.text)")
                    default:
                        printError("tokenledger send: server: \(frame.type) \(frame.text)")
                    }
                    if frame.type == .ack || frame.type == .nack || frame.type == .error {
                        if shared.unacknowledged.remove(frame.id) != nil { shared.inFlight -= 1 }
                    }
                    shared.cond.broadcast()
                }
            }
            shared.cond.mutex.locked { shared.closed = true; shared.readerFinished = true; shared.cond.broadcast() }
        }

        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var carry = [UInt8]()
        var batch = [UInt8]()
        var linesInBatch = 0
        var lineNumber = 0
        var batchID: UInt64 = 0
        /// When the current batch's first line was read (linger).
        var batchStartedNs: UInt64 = 0
        var sentEvents = 0
        var lost = false
        func sendBatch() {
            guard linesInBatch > 0 else { return }
            batchID += 1
            let ok: Bool = shared.cond.mutex.locked {
                while shared.inFlight >= window && !shared.closed { shared.cond.wait() }
                if shared.closed { return false }
                shared.inFlight += 1
                shared.unacknowledged.insert(batchID)
                shared.firstLineOfBatch[batchID] = lineNumber - linesInBatch + 1
                shared.lastLineOfBatch[batchID] = lineNumber
                return true
            }
            if ok {
                let frame = binary ? binaryFrame(batch, id: batchID, firstLine: lineNumber - linesInBatch + 1) : Frame(.batch, id: batchID, payload: batch)
                do { try socket.write(frame.encoded) } catch { lost = true }
                sentEvents += linesInBatch
            } else {
                lost = true
            }
            batch.removeAll(keepingCapacity: true)
            linesInBatch = 0
        }
        reading: while !lost {
            if linesInBatch > 0 {
                // Wait for more input only until the batch's linger is up; a file or a pipe
                // with data waiting is readable at once, so full-speed input still fills batches.
                let waitedMs = Int((monotonicNanoseconds() - batchStartedNs) / 1_000_000)
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&p, 1, Int32(max(0, lingerMs - waitedMs)))
                if ready < 0 && errno == EINTR { continue }
                if ready == 0 {
                    sendBatch()
                    if lost { break reading }
                    continue
                }
            }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw .failure("send", "reading \(name): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            var start = 0
            for i in 0..<n where buffer[i] == 0x0A {
                lineNumber += 1
                if !carry.isEmpty { batch += carry; carry.removeAll() }
                batch += buffer[start...i]
                start = i + 1
                if linesInBatch == 0 { batchStartedNs = monotonicNanoseconds() }
                linesInBatch += 1
                if linesInBatch >= batchLines || batch.count >= 4 << 20 { sendBatch(); if lost { break reading } }
            }
            carry += buffer[start..<n]
        }
        if !carry.isEmpty && !lost { lineNumber += 1; batch += carry; batch.append(0x0A); linesInBatch += 1 }
        if !lost { sendBatch() }
        shared.cond.mutex.locked { while shared.inFlight > 0 && !shared.closed { shared.cond.wait() } }
        socket.shutdownBoth()
        shared.cond.mutex.locked { while !shared.readerFinished { shared.cond.wait() } }
        socket.close()

        let (acked, lastSeq, chain, refused, missing, serverPrefaceOK, serverErrors) = shared.cond.mutex.locked {
            (shared.acknowledgedEvents, shared.lastSeq, shared.chainHash, shared.refused, shared.unacknowledged.count, shared.serverPrefaceOK,
             shared.serverErrors)
        }
        let summary = "acknowledged \(acked) events" + (lastSeq > 0 ? ", last seq \(lastSeq)" + (chain.isEmpty ? "" : " (chain \(chain))") : "")
        if !serverPrefaceOK || lost || missing > 0 {
            printError("tokenledger send: connection lost with \(missing) batches unacknowledged; \(summary); lines after the last acknowledged batch may not be on the ledger")
            print(summary)
            return 1
        }
        print(summary + (refused > 0 ? "; \(refused) batches refused" : ""))
        return refused > 0 || serverErrors > 0 ? 1 : 0
    }
}
