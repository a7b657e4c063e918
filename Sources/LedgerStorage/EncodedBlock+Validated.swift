import LedgerModel

extension EncodedBlock {
    /// A block from a payload someone else encoded (a binary batch from a client). The payload
    /// is decoded in full first, so nothing malformed reaches the log; it is stored as given.
    /// - Throws: `.invalidArgument` naming the payload offset of the problem.
    public init(validatedPayload raw: [UInt8]) throws(StorageError) {
        try self.init(validatedPayload: raw, decoded: nil)
    }

    /// As above, also handing back the decoded events (the server's subscribers need them).
    public init(validatedPayload raw: [UInt8], decoded out: UnsafeMutablePointer<DecodedBlock?>?) throws(StorageError) {
        guard raw.count <= BlockLimits.rawBytesMax else {
            throw .invalidArgument("batch payload of \(raw.count) bytes exceeds \(BlockLimits.rawBytesMax)")
        }
        let decoded: DecodedBlock
        do { decoded = try BlockPayloadDecoder.decode(raw) } catch { throw .invalidArgument("batch payload: \(error)") }
        guard decoded.count > 0 else { throw .invalidArgument("batch payload holds no events") }
        try self.init(raw: raw, eventCount: decoded.count, minTs: decoded.ts.min()!, maxTs: decoded.ts.max()!)
        out?.pointee = decoded
    }
}
