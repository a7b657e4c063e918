import LedgerModel

extension EncodedBlock {
    /// A block from a payload someone else encoded (a binary batch from a client). The payload
    /// is decoded in full first, so nothing malformed reaches the log; it is stored as given.
    /// - Throws: `.invalidArgument` naming the payload offset of the problem.
    public init(validatedPayload raw: [UInt8]) throws(StorageError) {
        guard raw.count <= BlockLimits.rawBytesMax else {
            throw .invalidArgument("batch payload of \(raw.count) bytes exceeds \(BlockLimits.rawBytesMax)")
        }
        let decoded: DecodedBlock
        do { decoded = try BlockPayloadDecoder.decode(raw) } catch { throw .invalidArgument("batch payload: \(error)") }
        guard decoded.count > 0 else { throw .invalidArgument("batch payload holds no events") }
        let compressed = try raw.withUnsafeBytes { r in Result { () throws(StorageError) in try LZ4.compress(r) } }.get()
        self.eventCount = decoded.count
        self.minTs = decoded.ts.min()!
        self.maxTs = decoded.ts.max()!
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
