// Offline NDJSON import as a three-stage pipeline:
//
//   caller thread      reads input and cuts it into chunks of whole lines (one bulk copy each;
//                      only a line split across reads is carried over)
//   worker threads     parse and encode chunks concurrently (DispatchQueue.global)
//   committer thread   takes finished chunks strictly in input order and commits all that are
//                      ready as one group commit: one SegmentLog.append, one fsync
//
// At most `inflightChunksMax` chunks exist at once (a semaphore), so a slow disk slows the reader
// instead of growing memory. The SegmentLog is touched only by the committer thread while the
// pipeline runs, and only by the caller before and after.
import Dispatch
import Foundation
import Glibc
import LedgerModel
import LedgerStorage

struct ImportChunk: Sendable {
    var bytes: [UInt8] = []
    /// (start, length) of each line in `bytes`; length -1 marks a line over the size limit.
    var lines: [(Int32, Int32)] = []
    var firstLine = 1
    var oversizedLengths: [Int: Int] = [:]
}

struct ImportedChunk: Sendable {
    var blocks: [EncodedBlock] = []
    var events = 0
    var errors: [EventDecodeError] = []
    /// A block that could not be encoded: the import must stop, never drop it.
    var failure: String?
}

final class NDJSONImporter: @unchecked Sendable {
    struct Options: Sendable {
        var skipInvalid = false
        var chunkLines = 16384
        var inflightChunksMax = 8
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
    /// Called on the committer thread after every commit with the last committed sequence number.
    var onCommit: ((UInt64) -> Void)?

    // Caller-thread state.
    private var current = ImportChunk()
    private var carry: [UInt8] = []
    private var carryOversized = false
    private var carryLength = 0
    private var nextLine = 1
    private var submitted = 0

    // Shared with the committer; guarded by `state`.
    private let state = NSCondition()
    private var results: [Int: ImportedChunk] = [:]
    private var submittedTotal = -1
    private var stopped = false
    private var failure: CLIError?
    private var outcome = Outcome()

    private let inflight: DispatchSemaphore
    private let committerDone = DispatchSemaphore(value: 0)
    private var committerStarted = false
    private let progress: Progress

    init(log: SegmentLog, options: Options) {
        self.log = log
        self.options = options
        self.inflight = DispatchSemaphore(value: options.inflightChunksMax)
        self.progress = Progress(label: "append", enabled: options.showProgress)
        outcome.firstSeq = log.lastSeq + 1
        outcome.lastSeq = log.lastSeq
    }

    private var isStopped: Bool {
        state.lock(); defer { state.unlock() }
        return stopped
    }

    /// Imports everything readable from `fd`.
    func run(fd: Int32) throws(CLIError) -> Outcome {
        let bufferSize = 8 << 20
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        while !isStopped {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, bufferSize) }
            if n < 0 {
                if errno == EINTR { continue }
                let message = String(cString: strerror(errno))
                _ = try? finish()
                throw .failure("append", "reading input: \(message)")
            }
            if n == 0 { break }
            // Pipes always read short, so a short read alone says nothing; an input that stays
            // idle for a few milliseconds does: then commit what is here rather than hold it
            // waiting for a full chunk (a slow shipper must still see its events land).
            let idle = n < bufferSize && !NDJSONImporter.inputReady(fd, waitMs: 5)
            buffer.withUnsafeBytes { feed(UnsafeRawBufferPointer(rebasing: $0[0..<n]), flush: idle) }
        }
        return try finish()
    }

    /// Adds input bytes; with `flush`, also submits the lines complete so far.
    func feed(_ bytes: UnsafeRawBufferPointer, flush: Bool = false) {
        startCommitter()
        guard !isStopped, let base = bytes.baseAddress else { return }
        let limit = options.limits.lineBytesMax
        var position = 0
        let end = bytes.count
        // A line carried over from the previous read ends at the first newline.
        if !carry.isEmpty || carryOversized || carryLength > 0 {
            guard let nl = memchr(base, 0x0A, end) else {
                appendToCarry(bytes, limit: limit)
                return
            }
            let length = UnsafeRawPointer(nl) - base
            appendToCarry(UnsafeRawBufferPointer(start: base, count: length), limit: limit)
            endCarriedLine()
            position = length + 1
        }
        // Whole lines go to chunks with one copy per chunk.
        var regionStart = position
        while position < end, let nl = memchr(base + position, 0x0A, end - position) {
            let lineEnd = UnsafeRawPointer(nl) - base
            let length = lineEnd - position
            let offsetInChunk = current.bytes.count + (position - regionStart)
            if length > limit {
                current.lines.append((Int32(offsetInChunk), -1))
                current.oversizedLengths[nextLine] = length
            } else {
                current.lines.append((Int32(offsetInChunk), Int32(length)))
            }
            nextLine += 1
            position = lineEnd + 1
            if current.lines.count >= options.chunkLines || current.bytes.count + (position - regionStart) > (1 << 30) {
                current.bytes.append(contentsOf: UnsafeRawBufferPointer(start: base + regionStart, count: position - regionStart))
                regionStart = position
                submitCurrent()
            }
        }
        if position > regionStart {
            current.bytes.append(contentsOf: UnsafeRawBufferPointer(start: base + regionStart, count: position - regionStart))
        }
        if position < end { appendToCarry(UnsafeRawBufferPointer(start: base + position, count: end - position), limit: limit) }
        if flush && !current.lines.isEmpty { submitCurrent() }
    }

    /// Commits what is left (a last line without a newline included) and waits for the pipeline.
    func finish() throws(CLIError) -> Outcome {
        startCommitter()
        if !isStopped {
            if !carry.isEmpty || carryOversized || carryLength > 0 { endCarriedLine() }
            if !current.lines.isEmpty { submitCurrent() }
        }
        state.lock()
        submittedTotal = submitted
        state.broadcast()
        state.unlock()
        committerDone.wait()
        state.lock()
        var result = outcome
        let error = failure
        state.unlock()
        result.lines = nextLine - 1
        progress.update(force: true, "\(result.events) events committed through seq \(result.lastSeq) in \(String(format1: progress.elapsedSeconds)) s")
        if let error { throw error }
        return result
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

    private func endCarriedLine() {
        if carryOversized {
            current.lines.append((Int32(current.bytes.count), -1))
            current.oversizedLengths[nextLine] = carryLength
        } else {
            current.lines.append((Int32(current.bytes.count), Int32(carry.count)))
            current.bytes.append(contentsOf: carry)
        }
        nextLine += 1
        carry.removeAll(keepingCapacity: true)
        carryOversized = false
        carryLength = 0
        if current.lines.count >= options.chunkLines { submitCurrent() }
    }

    private func submitCurrent() {
        let chunk = current
        current = ImportChunk()
        current.firstLine = nextLine
        inflight.wait()
        if isStopped { inflight.signal(); return }
        let index = submitted
        submitted += 1
        let opts = options
        let blockEventsMax = log.options.blockEventsMax
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            let result = NDJSONImporter.process(chunk, options: opts, blockEventsMax: blockEventsMax)
            state.lock()
            results[index] = result
            state.broadcast()
            state.unlock()
        }
    }

    private func startCommitter() {
        guard !committerStarted else { return }
        committerStarted = true
        let thread = Thread { [self] in commitLoop(); committerDone.signal() }
        thread.name = "tokenledger-commit"
        thread.start()
    }

    private func commitLoop() {
        var next = 0
        while true {
            state.lock()
            while results[next] == nil && !(submittedTotal >= 0 && next >= submittedTotal) { state.wait() }
            if results[next] == nil { state.unlock(); return }
            var batch = [ImportedChunk]()
            while batch.count < 64, let r = results.removeValue(forKey: next) {
                batch.append(r)
                next += 1
            }
            let isStopped = stopped
            state.unlock()
            if !isStopped { commit(batch) }
            for _ in batch { inflight.signal() }
        }
    }

    /// Commits one batch of chunks in order; runs on the committer thread.
    private func commit(_ batch: [ImportedChunk]) {
        var blocks = [EncodedBlock]()
        var events = 0
        var stopError: EventDecodeError?
        var skippedErrors = [EventDecodeError]()
        var encodeFailure: String?
        for r in batch {
            if let f = r.failure { encodeFailure = f; break }
            blocks += r.blocks
            events += r.events
            if options.skipInvalid {
                skippedErrors += r.errors
            } else if let e = r.errors.first {
                stopError = e
                break
            }
        }
        var appendError: CLIError?
        var lastSeq: UInt64?
        if !blocks.isEmpty {
            do { lastSeq = try log.append(encoded: blocks).lastSeq } catch {
                appendError = .failure("append", "\(error)")
            }
        }
        state.lock()
        if let lastSeq {
            outcome.lastSeq = lastSeq
            outcome.events += UInt64(events)
        }
        for e in skippedErrors {
            outcome.skippedCount += 1
            if outcome.skipped.count < 100 { outcome.skipped.append(e) }
            if outcome.skippedCount <= 20 { printError("append: skipped \(e)") }
            else if outcome.skippedCount == 21 { printError("append: (further skipped lines are counted, not printed)") }
        }
        if let appendError {
            failure = CLIError(message: "\(appendError.message)\nkept \(outcome.events) events (through seq \(outcome.lastSeq)); input from the batch that failed was not imported", exitCode: 1)
            stopped = true
        } else if let encodeFailure {
            failure = .failure("append", "\(encodeFailure)\nkept every event before it (through seq \(outcome.lastSeq))")
            stopped = true
        } else if let stopError {
            outcome.stoppedAt = stopError
            stopped = true
        }
        let snapshot = outcome
        state.unlock()
        if let lastSeq { onCommit?(lastSeq) }
        let rate = progress.elapsedSeconds > 0 ? Double(snapshot.events) / progress.elapsedSeconds : 0
        progress.update("\(formatCount(Double(snapshot.events))) events, committed through seq \(snapshot.lastSeq) (\(formatCount(rate))/s)")
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
                    // Straight into the block: no Event, no String per repeated value.
                    let type = try decoder.decode(line: line, lineNumber: lineNumber, into: &encoder)
                    result.events += 1
                    // A marker ends its block, so the chain hash "at the marker" is a block's hash
                    // that verify can check and a rollback can verify up to exactly.
                    if encoder.count >= blockEventsMax || type.isMarker { sealBlock() }
                } catch {
                    result.errors.append(error as? EventDecodeError ?? EventDecodeError(line: lineNumber, reason: "\(error)"))
                    if !options.skipInvalid { break }
                }
            }
        }
        sealBlock()
        return result
    }

    /// - Returns: true when `fd` has input (or end of file) within `waitMs`.
    static func inputReady(_ fd: Int32, waitMs: Int32) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, waitMs) > 0
    }

    @inline(__always) static func isBlank(_ line: UnsafeRawBufferPointer) -> Bool {
        for c in line where c != 0x20 && c != 0x09 && c != 0x0D { return false }
        return true
    }
}
