import Glibc

/// Splits a byte stream (a socket, a file read in blocks) into NDJSON lines.
///
/// Feed chunks of any size with `append`, then call `nextLine()` until it returns nil; at the end
/// of the stream call `finish()` and drain `nextLine()` once more to get a last line that has no
/// newline. The results depend only on the bytes, never on how they were chunked.
///
/// - A line is the bytes before a `"\n"`, minus one trailing `"\r"`. Line numbers are 1-based and
///   count every line, including skipped ones.
/// - Blank lines (only spaces, tabs and `"\r"`) are skipped.
/// - A line longer than `lineBytesMax` is reported once, as `.oversized` with its full length,
///   when it ends; its bytes are dropped as they arrive, so an endless line costs no memory.
///   `isInOversizedLine` tells a server early that the current line is already over the limit.
///
/// Memory: besides the lines of the last chunk not yet pulled, the framer holds at most
/// `lineBytesMax + 1` bytes of the unfinished line. A `.line` shares the framer's buffer; drop it
/// before the next `append`, or that append copies the buffer.
public struct LineFramer: Sendable {
    public enum LineResult: Equatable, Sendable {
        /// A non-blank line without its `"\n"` and trailing `"\r"`.
        case line(lineNumber: Int, bytes: ArraySlice<UInt8>)
        /// A line longer than the limit; `byteCount` is its length by the same rule as a line's.
        case oversized(lineNumber: Int, byteCount: Int)
    }

    public let lineBytesMax: Int

    private var buffer: [UInt8] = []
    /// Start of the first line not yet returned.
    private var readIndex = 0
    /// `buffer[readIndex..<scanIndex]` holds no newline, so byte-at-a-time input is scanned once.
    private var scanIndex = 0
    /// Number of the last line that ended (returned, skipped or reported).
    private var lastLineNumber = 0
    /// Inside an oversized line: its bytes are counted and dropped. Holds readIndex == scanIndex.
    private var discarding = false
    private var discardedCount = 0
    private var discardedLastByte: UInt8 = 0
    private var finished = false

    public init(limits: EventLimits = .default) {
        self.lineBytesMax = limits.lineBytesMax
    }

    /// Whether the line now arriving is already known to be oversized (it is reported when it ends).
    public var isInOversizedLine: Bool { discarding }

    /// Bytes held for lines not yet returned.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    public mutating func append(_ chunk: UnsafeRawBufferPointer) {
        precondition(!finished, "LineFramer.append(_:) after finish()")
        guard let base = chunk.baseAddress, chunk.count > 0 else { return }
        var rest = UnsafeRawBufferPointer(start: base, count: chunk.count)
        compact()
        // When every buffered byte belongs to one unfinished line, decide about that line straight
        // from the chunk: an oversized line is never copied, however large the chunk.
        if scanIndex == buffer.count {
            let taken = Self.firstNewline(rest) ?? rest.count
            let last = taken > 0 ? rest[taken - 1] : (buffer.last ?? discardedLastByte)
            if discarding {
                discardedCount += taken
                discardedLastByte = last
                rest = UnsafeRawBufferPointer(rebasing: rest[taken...])
            } else if exceeds(buffer.count + taken, lastByte: last) {
                discarding = true
                discardedCount = buffer.count + taken
                discardedLastByte = last
                buffer.removeAll(keepingCapacity: true)
                readIndex = 0
                scanIndex = 0
                rest = UnsafeRawBufferPointer(rebasing: rest[taken...])
            }
        }
        buffer.append(contentsOf: rest)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Marks the end of the stream: the next `nextLine()` calls also return a last line that has
    /// no newline. Appending afterwards is a programming error.
    public mutating func finish() {
        finished = true
    }

    /// - Returns: nil when no complete line is buffered (or, after `finish()`, when all is drained).
    public mutating func nextLine() -> LineResult? {
        while true {
            let count = buffer.count
            let newline = buffer.withUnsafeBytes { bytes -> Int? in
                guard scanIndex < count, let found = memchr(bytes.baseAddress! + scanIndex, 0x0A, count - scanIndex) else { return nil }
                return UnsafeRawPointer(found) - bytes.baseAddress!
            }
            if discarding {
                let stop = newline ?? count
                if stop > readIndex {
                    discardedCount += stop - readIndex
                    discardedLastByte = buffer[stop - 1]
                }
                if let newline {
                    readIndex = newline + 1
                    scanIndex = readIndex
                    return endOversizedLine()
                }
                readIndex = count
                scanIndex = count
                return finished ? endOversizedLine() : nil
            }
            guard let newline else {
                scanIndex = count
                let partial = count - readIndex
                if partial == 0 { return nil }
                if finished {
                    let start = readIndex
                    readIndex = count
                    scanIndex = count
                    if let result = endLine(start: start, end: count) { return result }
                    return nil
                }
                if exceeds(partial, lastByte: buffer[count - 1]) {
                    discarding = true
                    discardedCount = partial
                    discardedLastByte = buffer[count - 1]
                    readIndex = count
                }
                return nil
            }
            let start = readIndex
            readIndex = newline + 1
            scanIndex = readIndex
            if let result = endLine(start: start, end: newline) { return result }
        }
    }

    // MARK: -

    /// Whether an unfinished line of `count` bytes is certain to end up over the limit: a trailing
    /// "\r" may still turn out to precede the newline, so it is not counted yet.
    @inline(__always)
    private func exceeds(_ count: Int, lastByte: UInt8) -> Bool {
        count - (lastByte == 0x0D ? 1 : 0) > lineBytesMax
    }

    /// - Returns: nil for a blank line.
    private mutating func endLine(start: Int, end: Int) -> LineResult? {
        lastLineNumber += 1
        var stop = end
        if stop > start && buffer[stop - 1] == 0x0D { stop -= 1 }
        if stop - start > lineBytesMax { return .oversized(lineNumber: lastLineNumber, byteCount: stop - start) }
        var k = start
        while k < stop {
            let c = buffer[k]
            guard c == 0x20 || c == 0x09 || c == 0x0D else { break }
            k += 1
        }
        if k == stop { return nil }
        return .line(lineNumber: lastLineNumber, bytes: buffer[start..<stop])
    }

    private mutating func endOversizedLine() -> LineResult {
        lastLineNumber += 1
        let byteCount = discardedCount - (discardedLastByte == 0x0D ? 1 : 0)
        discarding = false
        discardedCount = 0
        discardedLastByte = 0
        return .oversized(lineNumber: lastLineNumber, byteCount: byteCount)
    }

    /// Drops returned lines from the front of the buffer.
    private mutating func compact() {
        guard readIndex > 0 else { return }
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
        } else {
            buffer.removeSubrange(0..<readIndex)
        }
        scanIndex -= readIndex
        readIndex = 0
    }

    private static func firstNewline(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let base = bytes.baseAddress, bytes.count > 0, let found = memchr(base, 0x0A, bytes.count) else { return nil }
        return UnsafeRawPointer(found) - base
    }
}
