// Offline NDJSON import: split input into chunks of whole lines, parse and encode chunks on every
// core, and commit them in input order, one group commit (one fsync) per window of chunks.
//
// Threading: the calling thread reads, splits and commits; `DispatchQueue.concurrentPerform`
// parses and encodes the chunks of one window in parallel. Chunks never share state.
import Dispatch
import Glibc
import LedgerModel
import LedgerStorage

struct ImportChunk {
    var bytes: [UInt8] = []
    /// (start, length) of each line in `bytes`; length -1 marks a line over the size limit.
    var lines: [(Int32, Int32)] = []
    var firstLine = 1
    var oversizedLengths: [Int: Int] = [:]
}

struct ImportedChunk {
    var blocks: [EncodedBlock] = []
    var events = 0
    var errors: [EventDecodeError] = []
    var linesConsumed = 0
    /// A block that could not be encoded: the import must stop, never drop it.
    var failure: String?
}

final class NDJSONImporter {
    struct Options {
        var skipInvalid = false
        var chunkLines = 16384
        var windowChunks = 8
        var limits = EventLimits.default
        var showProgress = true
    }

    struct Outcome {
        var events: UInt64 = 0
        var firstSeq: UInt64 = 0
        var lastSeq: UInt64 = 0
        var lines = 0
        var skipped: [EventDecodeError] = []
        var skippedCount = 0
        var stoppedAt: EventDecodeError?
    }

    let log: SegmentLog
    let options: Options
    private var outcome = Outcome()
    private var pending: [ImportChunk] = []
    private var current = ImportChunk()
    private var carry: [UInt8] = []
    private var carryOversized = false
    private var carryLength = 0
    private var nextLine = 1
    private var stopped = false
    private let progress: Progress
    /// Called after every durable commit with the last committed sequence number.
    var onCommit: ((UInt64) -> Void)?

    init(log: SegmentLog, options: Options) {
        self.log = log
        self.options = options
        self.progress = Progress(label: "append", enabled: options.showProgress)
        outcome.firstSeq = log.lastSeq + 1
        outcome.lastSeq = log.lastSeq
        current.firstLine = 1
    }

    /// Imports everything readable from `fd`.
    func run(fd: Int32) throws(CLIError) -> Outcome {
        let bufferSize = 8 << 20
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        while !stopped {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, bufferSize) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .failure("append", "reading input: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            // A short read means the producer is slower than us: commit what is here rather
            // than hold data in memory waiting for a full chunk.
            let fed = buffer.withUnsafeBytes { raw in
                Result { () throws(CLIError) in try feed(UnsafeRawBufferPointer(rebasing: raw[0..<n]), flush: n < bufferSize) }
            }
            try fed.get()
        }
        return try finish()
    }

    /// Adds input bytes; with `flush`, commits the lines complete so far.
    func feed(_ bytes: UnsafeRawBufferPointer, flush: Bool = false) throws(CLIError) {
        guard !stopped else { return }
        split(bytes)
        if flush && !current.lines.isEmpty { sealChunk() }
        if pending.count >= options.windowChunks || (flush && !pending.isEmpty) { try processWindow() }
    }

    /// Commits what is left (a last line without a newline included).
    func finish() throws(CLIError) -> Outcome {
        if !stopped {
            if !carry.isEmpty || carryOversized { endLine(final: true) }
            if !current.lines.isEmpty { sealChunk() }
            while !pending.isEmpty && !stopped { try processWindow() }
        }
        outcome.lines = nextLine - 1
        progress.update(force: true, "\(outcome.events) events committed through seq \(outcome.lastSeq) in \(String(format1: progress.elapsedSeconds)) s")
        return outcome
    }

    private func split(_ bytes: UnsafeRawBufferPointer) {
        var start = 0
        let limit = options.limits.lineBytesMax
        while start < bytes.count {
            let base = bytes.baseAddress! + start
            if let nl = memchr(base, 0x0A, bytes.count - start) {
                let length = UnsafeRawPointer(nl) - UnsafeRawPointer(base)
                appendToCarry(UnsafeRawBufferPointer(start: base, count: length), limit: limit)
                endLine(final: false)
                start += length + 1
            } else {
                appendToCarry(UnsafeRawBufferPointer(start: base, count: bytes.count - start), limit: limit)
                break
            }
        }
    }

    private func appendToCarry(_ part: UnsafeRawBufferPointer, limit: Int) {
        carryLength += part.count
        if carryOversized { return }
        if carryLength > limit {
            carryOversized = true
            carry.removeAll(keepingCapacity: true)
            return
        }
        carry.append(contentsOf: part)
    }

    private func endLine(final: Bool) {
        let line = nextLine
        nextLine += 1
        if carryOversized {
            current.lines.append((Int32(current.bytes.count), -1))
            current.oversizedLengths[line] = carryLength
        } else {
            current.lines.append((Int32(current.bytes.count), Int32(carry.count)))
            current.bytes.append(contentsOf: carry)
        }
        carry.removeAll(keepingCapacity: true)
        carryOversized = false
        carryLength = 0
        if current.lines.count >= options.chunkLines { sealChunk() }
    }

    private func sealChunk() {
        pending.append(current)
        current = ImportChunk()
        current.firstLine = nextLine
    }

    private func processWindow() throws(CLIError) {
        let window = pending
        pending.removeAll()
        var results = [ImportedChunk](repeating: ImportedChunk(), count: window.count)
        let opts = options
        let blockEventsMax = log.options.blockEventsMax
        window.withUnsafeBufferPointer { chunksBuffer in
            results.withUnsafeMutableBufferPointer { out in
                // Each iteration reads one chunk and writes only its own result slot.
                nonisolated(unsafe) let outBase = out.baseAddress!
                nonisolated(unsafe) let chunks = chunksBuffer
                DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
                    outBase[i] = NDJSONImporter.process(chunks[i], options: opts, blockEventsMax: blockEventsMax)
                }
            }
        }
        var blocks = [EncodedBlock]()
        var stopError: EventDecodeError?
        for r in results {
            if let failure = r.failure {
                if !blocks.isEmpty, let result = try? log.append(encoded: blocks) { outcome.lastSeq = result.lastSeq; onCommit?(result.lastSeq) }
                throw .failure("append", "\(failure)\nkept every event before that chunk (through seq \(outcome.lastSeq))")
            }
            blocks += r.blocks
            outcome.events += UInt64(r.events)
            for e in r.errors {
                if opts.skipInvalid {
                    outcome.skippedCount += 1
                    if outcome.skipped.count < 100 { outcome.skipped.append(e) }
                    if outcome.skippedCount <= 20 { printError("append: skipped \(e)") }
                    else if outcome.skippedCount == 21 { printError("append: (further skipped lines are counted, not printed)") }
                } else {
                    stopError = e
                }
            }
            if stopError != nil { break }
        }
        if !blocks.isEmpty {
            let result: AppendResult
            do { result = try log.append(encoded: blocks) } catch {
                throw .failure("append", "\(error)\nkept \(outcome.lastSeq - outcome.firstSeq + 1) events (through seq \(outcome.lastSeq)); input from the batch that failed on was not imported")
            }
            outcome.lastSeq = result.lastSeq
            onCommit?(result.lastSeq)
        }
        if let stopError {
            outcome.stoppedAt = stopError
            stopped = true
        }
        let rate = progress.elapsedSeconds > 0 ? Double(outcome.events) / progress.elapsedSeconds : 0
        progress.update("\(formatCount(Double(outcome.events))) events, committed through seq \(outcome.lastSeq) (\(formatCount(rate))/s)")
    }

    static func process(_ chunk: ImportChunk, options: Options, blockEventsMax: Int) -> ImportedChunk {
        var result = ImportedChunk()
        let decoder = NDJSONDecoder(limits: options.limits)
        var encoder = BlockPayloadEncoder(expectedEvents: min(chunk.lines.count, blockEventsMax))
        func sealBlock() {
            guard encoder.count > 0 else { return }
            do { result.blocks.append(try EncodedBlock(encoder: encoder)) } catch {
                if result.failure == nil { result.failure = "lines \(chunk.firstLine)-\(chunk.firstLine + chunk.lines.count - 1): \(error)" }
            }
            encoder = BlockPayloadEncoder(expectedEvents: blockEventsMax)
        }
        chunk.bytes.withUnsafeBytes { raw in
            for (index, (start, length)) in chunk.lines.enumerated() {
                let lineNumber = chunk.firstLine + index
                result.linesConsumed += 1
                if length < 0 {
                    let size = chunk.oversizedLengths[lineNumber] ?? 0
                    result.errors.append(EventDecodeError(line: lineNumber, byteOffset: options.limits.lineBytesMax, field: nil,
                                                          reason: "line of \(size) bytes is longer than the \(options.limits.lineBytesMax)-byte limit"))
                    if !options.skipInvalid { break }
                    continue
                }
                let line = UnsafeRawBufferPointer(rebasing: raw[Int(start)..<(Int(start) + Int(length))])
                if isBlank(line) { continue }
                do {
                    let event = try decoder.decode(line: line, lineNumber: lineNumber)
                    encoder.append(event)
                    result.events += 1
                    if encoder.count >= blockEventsMax { sealBlock() }
                } catch {
                    result.errors.append(error as? EventDecodeError ?? EventDecodeError(line: lineNumber, reason: "\(error)"))
                    if !options.skipInvalid { break }
                }
            }
        }
        sealBlock()
        return result
    }

    @inline(__always) static func isBlank(_ line: UnsafeRawBufferPointer) -> Bool {
        for c in line where c != 0x20 && c != 0x09 && c != 0x0D { return false }
        return true
    }
}
