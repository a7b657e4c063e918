import LedgerCrypto
import LedgerModel

/// A block's payload, encoded and compressed but not yet placed in the log: it has no sequence
/// numbers or chain hash yet, so many can be built in parallel and then committed in order.
public struct EncodedBlock: Sendable {
    public let eventCount: Int
    public let minTs: Int64
    public let maxTs: Int64
    /// The canonical payload (what the chain hash covers).
    public let raw: [UInt8]
    /// What is stored on disk (`raw` compressed by `codec`).
    public let stored: [UInt8]
    public let codec: BlockHeader.Codec

    public init(events: some Collection<Event>) throws(StorageError) {
        precondition(!events.isEmpty, "a block holds at least one event")
        var encoder = BlockPayloadEncoder(expectedEvents: events.count)
        for e in events { encoder.append(e) }
        try self.init(encoder: encoder)
    }

    /// Encodes `events` into blocks of at most `blockEventsMax`, each deployment marker ending
    /// its block (FORMAT.md "Block"), so a marker's chain hash is a block's.
    public static func blocks(_ events: [Event], blockEventsMax: Int) throws(StorageError) -> [EncodedBlock] {
        var builder = BlockBuilder(blockEventsMax: blockEventsMax, keepColumns: false)
        for e in events { try builder.append(e) }
        return try builder.finish().blocks
    }

    public init(encoder: BlockPayloadEncoder) throws(StorageError) {
        // What the decoder (and the block header check) would refuse must never be acknowledged:
        // it would be unreadable, and recovery would take its header for a torn tail.
        if let problem = encoder.invalidEvent { throw .invalidArgument("block payload: \(problem)") }
        guard encoder.count <= BlockPayloadDecoder.eventsMax else {
            throw .invalidArgument("block of \(encoder.count) events exceeds \(BlockPayloadDecoder.eventsMax)")
        }
        let raw = encoder.finish()
        guard raw.count <= BlockLimits.rawBytesMax else {
            throw .invalidArgument("block payload of \(raw.count) bytes exceeds \(BlockLimits.rawBytesMax)")
        }
        try self.init(raw: raw, eventCount: encoder.count, minTs: encoder.minTs, maxTs: encoder.maxTs)
    }
}

extension EncodedBlock {
    /// Compresses a finished canonical payload. Random-looking payloads do not shrink; storing
    /// them as-is keeps reads cheap.
    init(raw: [UInt8], eventCount: Int, minTs: Int64, maxTs: Int64) throws(StorageError) {
        let compressed = try raw.withUnsafeBytes { r in Result { () throws(StorageError) in try LZ4.compress(r) } }.get()
        self.eventCount = eventCount
        self.minTs = minTs
        self.maxTs = maxTs
        self.raw = raw
        if compressed.count < raw.count {
            self.stored = compressed
            self.codec = .lz4
        } else {
            self.stored = raw
            self.codec = .none
        }
    }
}

/// Decodes a block read from disk after checking its stored bytes.
public enum BlockReader {
    public enum Problem: Error, CustomStringConvertible, Sendable {
        case payloadChecksum, decompression, payload(BlockPayloadError), countMismatch(UInt32, Int), timeRange
        public var description: String {
            switch self {
            case .payloadChecksum: "payload checksum mismatch"
            case .decompression: "payload does not decompress to its recorded size"
            case let .payload(e): "payload does not decode: \(e)"
            case let .countMismatch(header, payload): "header says \(header) events, payload holds \(payload)"
            case .timeRange: "events' timestamps fall outside the header's time range"
            }
        }
    }

    /// Checks the stored bytes and returns the raw (uncompressed) payload.
    public static func rawPayload(header: BlockHeader, stored: UnsafeRawBufferPointer) -> Result<[UInt8], Problem> {
        guard XXH64.hash(stored) == header.payloadChecksum else { return .failure(.payloadChecksum) }
        switch header.codec {
        case .none:
            guard stored.count == Int(header.rawBytes) else { return .failure(.decompression) }
            return .success(Array(stored))
        case .lz4:
            var raw = [UInt8](repeating: 0, count: Int(header.rawBytes))
            let ok = raw.withUnsafeMutableBytes { LZ4.decompress(stored, into: $0) }
            return ok ? .success(raw) : .failure(.decompression)
        }
    }

    public static func decode(header: BlockHeader, raw: [UInt8]) -> Result<DecodedBlock, Problem> {
        let decoded: DecodedBlock
        do { decoded = try BlockPayloadDecoder.decode(raw) } catch { return .failure(.payload(error)) }
        guard decoded.count == Int(header.eventCount) else { return .failure(.countMismatch(header.eventCount, decoded.count)) }
        for t in decoded.ts where t < header.minTs || t > header.maxTs { return .failure(.timeRange) }
        return .success(decoded)
    }
}

/// Encodes events into blocks as they arrive (no array of events held): at most
/// `blockEventsMax` per block, each deployment marker ending its block (FORMAT.md "Block").
/// With `keepColumns` it also gives each block's `DecodedBlock`, which is what a server hands
/// its projection and subscribers.
public struct BlockBuilder {
    public let blockEventsMax: Int
    public let keepColumns: Bool
    private var encoder: BlockPayloadEncoder?
    private var blocks: [EncodedBlock] = []
    private var decoded: [DecodedBlock] = []
    public private(set) var eventCount = 0

    public init(blockEventsMax: Int, keepColumns: Bool = true) {
        // Zero or less would make empty blocks forever.
        self.blockEventsMax = max(1, blockEventsMax)
        self.keepColumns = keepColumns
    }

    /// - Throws: when the event holds a value a block cannot (check
    ///   `BlockPayloadEncoder.unencodable` first to refuse just that event).
    public mutating func append(_ event: Event) throws(StorageError) {
        if encoder == nil { encoder = BlockPayloadEncoder(expectedEvents: min(blockEventsMax, 4096), keepColumns: keepColumns) }
        encoder!.append(event)
        eventCount += 1
        if encoder!.count >= blockEventsMax || event.type.isMarker { try seal() }
    }

    /// Decodes one NDJSON line straight into the current block (`NDJSONDecoder`'s direct path).
    /// - Throws: `EventDecodeError` for a line that is refused (nothing of it is kept), or a
    ///   `StorageError` when the block it completes cannot be stored.
    public mutating func append(line: UnsafeRawBufferPointer, lineNumber: Int, decoder: NDJSONDecoder, gateway: String? = nil) throws {
        if encoder == nil { encoder = BlockPayloadEncoder(expectedEvents: min(blockEventsMax, 4096), keepColumns: keepColumns) }
        let type = try decoder.decode(line: line, lineNumber: lineNumber, into: &encoder!, gateway: gateway)
        eventCount += 1
        if encoder!.count >= blockEventsMax || type.isMarker { try seal() }
    }

    private mutating func seal() throws(StorageError) {
        guard let e = encoder, e.count > 0 else { return }
        encoder = nil
        blocks.append(try EncodedBlock(encoder: e))
        if keepColumns { decoded.append(e.decodedBlock()) }
    }

    /// The blocks so far (and their decoded forms); the builder starts over empty.
    public mutating func finish() throws(StorageError) -> (blocks: [EncodedBlock], decoded: [DecodedBlock]) {
        defer { encoder = nil; blocks = []; decoded = []; eventCount = 0 }
        try seal()
        return (blocks, decoded)
    }
}
