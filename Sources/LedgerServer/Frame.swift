// Framed mode's wire unit (PROTOCOL.md "Framed mode"): a little-endian length, a type, a
// request id and a payload. `FrameParser` takes bytes in whatever pieces the socket gives and
// hands back whole frames; it never trusts a length it has not checked against the limit.

public enum FrameType: UInt8, Sendable, CaseIterable {
    // Client → server
    case hello = 0x01
    case batch = 0x02
    case subscribe = 0x03
    case ping = 0x04
    case rollback = 0x05
    case binaryBatch = 0x06
    // Server → client
    case welcome = 0x81
    case ack = 0x82
    case nack = 0x83
    case event = 0x84
    case alert = 0x85
    case pong = 0x86
    case subscribed = 0x87
    case rollbackResult = 0x88
    case error = 0x8F
}

public struct Frame: Sendable, Equatable {
    /// The 8 bytes a framed-mode client sends first (and the server answers with).
    public static let preface: [UInt8] = Array("TLFRAME1".utf8)
    /// Bytes of the header after the length field: type, flags, reserved, id.
    public static let headerBytes = 12
    public static let lengthBytes = 4

    public var type: FrameType
    public var id: UInt64
    public var payload: [UInt8]

    public init(_ type: FrameType, id: UInt64, payload: [UInt8] = []) {
        self.type = type; self.id = id; self.payload = payload
    }

    public init(_ type: FrameType, id: UInt64, text: String) {
        self.init(type, id: id, payload: Array(text.utf8))
    }

    public var text: String { String(decoding: payload, as: UTF8.self) }

    public func encode(into out: inout [UInt8]) {
        let length = UInt32(Frame.headerBytes + payload.count)
        withUnsafeBytes(of: length.littleEndian) { out.append(contentsOf: $0) }
        out.append(type.rawValue)
        out.append(0)
        out.append(0); out.append(0)
        withUnsafeBytes(of: id.littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: payload)
    }

    public var encoded: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Frame.lengthBytes + Frame.headerBytes + payload.count)
        encode(into: &out)
        return out
    }

    /// The ACK payload: first seq, last seq, event count, chain hash after the batch.
    public static func ackPayload(firstSeq: UInt64, lastSeq: UInt64, count: UInt64, chainHash: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        for v in [firstSeq, lastSeq, count] { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        out.append(contentsOf: chainHash)
        return out
    }

    public struct Ack: Sendable, Equatable {
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var count: UInt64
        public var chainHash: [UInt8]
    }

    public var ack: Ack? {
        guard type == .ack, payload.count == 56 else { return nil }
        func get(_ at: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(payload[at + i]) << (8 * UInt64(i)) }
            return v
        }
        return Ack(firstSeq: get(0), lastSeq: get(8), count: get(16), chainHash: Array(payload[24..<56]))
    }
}

public struct FrameError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset in the connection's stream where the bad frame starts.
    public let offset: UInt64
    public let reason: String
    public var description: String { "frame at stream byte \(offset): \(reason)" }
}

/// Cuts a byte stream into frames. Feed it what the socket returned, or let it `receive` from
/// the socket itself; take frames until nil.
///
/// A large frame (a batch) is read straight into its own payload array once its header is in:
/// `receive` then reads into that array, so the payload is never copied after the kernel wrote
/// it (a 1000-event NDJSON batch is about 290 KB; two copies of it were 7% of a reader's time).
public struct FrameParser {
    public let payloadBytesMax: Int
    /// Bytes `buffer[start..<used]` are the stream's next; the rest is room to read into.
    private var buffer: [UInt8] = []
    private var start = 0
    private var used = 0
    /// Stream offset of `buffer[start]` (of the pending frame's length field, while there is one).
    private var offset: UInt64 = 0
    /// A large frame whose header was read and whose payload is being filled in place.
    private var pending: Pending?
    private struct Pending {
        let type: FrameType
        let id: UInt64
        var payload: [UInt8]
        var filled: Int
    }
    /// Payloads at least this large are read in place (smaller frames come many to a read).
    public static let inPlacePayloadBytesMin = 64 << 10
    /// The most `receive` reads into the buffer at once.
    public static let readBytesMax = 256 << 10

    public init(payloadBytesMax: Int) {
        self.payloadBytesMax = payloadBytesMax
    }

    /// Bytes held that do not yet make a whole frame.
    public var bufferedBytes: Int {
        used - start + (pending.map { Frame.lengthBytes + Frame.headerBytes + $0.filled } ?? 0)
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes
        while !rest.isEmpty {
            // The same path as a socket read: into a pending payload first, then the buffer.
            let n = receive { (room: UnsafeMutableRawBufferPointer) -> Int in
                let k = min(room.count, rest.count)
                room.baseAddress!.copyMemory(from: rest.baseAddress!, byteCount: k)
                return k
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// Reads once from the stream with `read` (which returns the byte count, 0 at its end):
    /// into the pending frame's payload, up to its end, when there is one to fill, else into
    /// the buffer, up to `readBytesMax`.
    public mutating func receive<E: Error>(_ read: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> Int {
        var result: Result<Int, E> = .success(0)
        if var p = pending, p.filled < p.payload.count {
            // Taken out first, so the payload is written in place (one reference).
            pending = nil
            let filled = p.filled
            p.payload.withUnsafeMutableBytes { raw in
                result = Result { () throws(E) -> Int in try read(UnsafeMutableRawBufferPointer(rebasing: raw[filled...])) }
            }
            if case let .success(n) = result { p.filled += n }
            pending = p
        } else {
            makeRoom(Self.readBytesMax)
            let at = used
            buffer.withUnsafeMutableBytes { raw in
                result = Result { () throws(E) -> Int in try read(UnsafeMutableRawBufferPointer(rebasing: raw[at..<(at + Self.readBytesMax)])) }
            }
            if case let .success(n) = result { used += n }
        }
        return try result.get()
    }

    /// Room for `count` more bytes after `used`, moving the held bytes to the front first when
    /// enough of the buffer has been consumed.
    private mutating func makeRoom(_ count: Int) {
        if start > 0 && (start >= 1 << 16 || start * 2 >= used) {
            let held = used - start
            if held > 0 {
                let from = start
                buffer.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: UnsafeRawPointer($0.baseAddress!.advanced(by: from)), byteCount: held) }
            }
            start = 0
            used = held
        }
        if buffer.count < used + count {
            buffer.append(contentsOf: repeatElement(0, count: max(used + count, 2 * buffer.count) - buffer.count))
        }
    }

    /// - Returns: the next whole frame, or nil when more bytes are needed.
    /// - Throws: a length over the limit or under the header size, or an unknown type. The
    ///   stream cannot be resynchronised after that; the connection should be closed.
    public mutating func next() throws(FrameError) -> Frame? {
        if let p = pending {
            guard p.filled == p.payload.count else { return nil }
            pending = nil
            offset += UInt64(Frame.lengthBytes + Frame.headerBytes + p.payload.count)
            return Frame(p.type, id: p.id, payload: p.payload)
        }
        let available = used - start
        guard available >= Frame.lengthBytes + Frame.headerBytes else {
            if available >= Frame.lengthBytes { try checkLength() }
            return nil
        }
        let length = try checkLength()
        let typeByte = buffer[start + 4]
        guard let type = FrameType(rawValue: typeByte) else {
            throw FrameError(offset: offset, reason: "unknown frame type 0x\(String(typeByte, radix: 16))")
        }
        guard buffer[start + 5] == 0, buffer[start + 6] == 0, buffer[start + 7] == 0 else {
            throw FrameError(offset: offset, reason: "flags and reserved bytes must be zero")
        }
        var id: UInt64 = 0
        for i in 0..<8 { id |= UInt64(buffer[start + 8 + i]) << (8 * UInt64(i)) }
        let payloadStart = start + Frame.lengthBytes + Frame.headerBytes
        let payloadCount = length - Frame.headerBytes
        guard available >= Frame.lengthBytes + length else {
            if payloadCount >= Self.inPlacePayloadBytesMin {
                // The rest of this payload will be read into its own array.
                let have = used - payloadStart
                let payload = [UInt8](unsafeUninitializedCapacity: payloadCount) { out, initialized in
                    buffer.withUnsafeBytes { out.baseAddress!.initialize(from: $0.baseAddress!.advanced(by: payloadStart).assumingMemoryBound(to: UInt8.self), count: have) }
                    // The rest is written by `receive` or `feed` before the frame is handed out.
                    out.baseAddress!.advanced(by: have).initialize(repeating: 0, count: payloadCount - have)
                    initialized = payloadCount
                }
                pending = Pending(type: type, id: id, payload: payload, filled: have)
                start = used
            }
            return nil
        }
        let end = start + Frame.lengthBytes + length
        let frame = Frame(type, id: id, payload: Array(buffer[payloadStart..<end]))
        offset += UInt64(end - start)
        start = end
        return frame
    }

    @discardableResult
    private func checkLength() throws(FrameError) -> Int {
        let length = Int(UInt32(buffer[start]) | UInt32(buffer[start + 1]) << 8 | UInt32(buffer[start + 2]) << 16 | UInt32(buffer[start + 3]) << 24)
        guard length >= Frame.headerBytes else {
            throw FrameError(offset: offset, reason: "length \(length) is shorter than the \(Frame.headerBytes)-byte header")
        }
        guard length - Frame.headerBytes <= payloadBytesMax else {
            throw FrameError(offset: offset, reason: "payload of \(length - Frame.headerBytes) bytes is over the \(payloadBytesMax)-byte limit")
        }
        return length
    }
}

/// The client side of framed mode: connects, sends the preface (and any first frames), then
/// reads the server's preface and its frames.
public final class FramedClient: @unchecked Sendable {
    public let socket: Socket
    private var parser: FrameParser
    private var prefaceRead = [UInt8]()
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var pending = [Frame]()

    public init(_ endpoint: Endpoint, payloadBytesMax: Int = 64 << 20, first: [Frame] = []) throws(SocketError) {
        socket = try Socket.connect(endpoint)
        parser = FrameParser(payloadBytesMax: payloadBytesMax)
        var out = Frame.preface
        for f in first { out += f.encoded }
        try socket.write(out)
    }

    public func send(_ frame: Frame) throws(SocketError) {
        try socket.write(frame.encoded)
    }

    /// - Returns: the next frame from the server; nil when the connection ended.
    /// - Throws: when the server does not speak framed mode (naming what it said instead), or
    ///   sends a frame that does not parse.
    public func next() throws(FrameError) -> Frame? {
        while true {
            if !pending.isEmpty { return pending.removeFirst() }
            if let f = try parser.next() { return f }
            let n = (try? buffer.withUnsafeMutableBytes { try socket.read(into: $0) }) ?? 0
            if n == 0 { return nil }
            var bytes = Array(buffer[0..<n])
            if prefaceRead.count < Frame.preface.count {
                let take = min(Frame.preface.count - prefaceRead.count, bytes.count)
                prefaceRead += bytes.prefix(take)
                bytes.removeFirst(take)
                guard Frame.preface.starts(with: prefaceRead) else {
                    throw FrameError(offset: 0, reason: "the server did not answer in framed mode: " + String(decoding: (prefaceRead + bytes).prefix(200), as: UTF8.self))
                }
            }
            parser.feed(bytes)
        }
    }

    public func close() { socket.close() }
}
