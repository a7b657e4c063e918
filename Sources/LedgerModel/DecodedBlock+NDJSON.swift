/// NDJSON straight from a decoded block's columns: each string of the block is escaped once, and
/// every event is then a run of byte copies. The output is byte-identical to `NDJSONEncoder` on
/// the same event (a test holds the two together).
public struct BlockNDJSONWriter {
    public let block: DecodedBlock
    private var quoted: [[UInt8]?]

    public init(_ block: DecodedBlock) {
        self.block = block
        self.quoted = Array(repeating: nil, count: block.strings.count)
    }

    private static let keys: [[UInt8]] = [
        ",\"token\":", ",\"token_type\":", ",\"sub\":", ",\"client_id\":", ",\"iss\":", ",\"aud\":", ",\"scope\":",
        ",\"parent\":", ",\"gateway\":", ",\"release\":", ",\"track\":", ",\"route\":", ",\"method\":", ",\"client_ip\":",
        ",\"request_id\":", ",\"reason\":", ",\"marker\":",
    ].map { Array($0.utf8) }
    private static let typePrefix: [[UInt8]] = (0..<256).map { raw in
        guard let t = EventType(rawValue: UInt8(raw)) else { return [] }
        return Array(",\"type\":\"\(t.name)\",\"ts\":".utf8)
    }
    private static let seqKey = Array("{\"seq\":".utf8)
    private static let expKey = Array(",\"exp\":".utf8)
    private static let statusKey = Array(",\"status\":".utf8)
    private static let weightKey = Array(",\"weight\":".utf8)
    private static let attrsKey = Array(",\"attrs\":{".utf8)
    private static let receivedKey = Array(",\"received_at\":".utf8)

    @inline(__always) private mutating func appendString(_ ref: UInt32, _ out: inout [UInt8]) {
        let r = Int(ref)
        if let q = quoted[r] { out.append(contentsOf: q); return }
        var q = [UInt8]()
        NDJSONEncoder.appendQuoted(block.strings[r], &q)
        quoted[r] = q
        out.append(contentsOf: q)
    }

    /// Appends event `i` as one line with its sequence number and received time.
    public mutating func append(_ i: Int, seq: UInt64, receivedAt: Int64, to out: inout [UInt8]) {
        out.append(contentsOf: BlockNDJSONWriter.seqKey)
        NDJSONEncoder.appendInt(Int64(bitPattern: seq), &out)
        out.append(contentsOf: BlockNDJSONWriter.typePrefix[Int(block.types[i].rawValue)])
        NDJSONEncoder.appendInt(block.ts[i], &out)
        let p = block.presence[i]
        let base = i * StringField.count
        for f in 0..<StringField.count {
            if f == StringField.parent.rawValue && p & PresenceBit.exp != 0 {
                out.append(contentsOf: BlockNDJSONWriter.expKey)
                NDJSONEncoder.appendInt(block.exp[i], &out)
            }
            if f == StringField.clientIP.rawValue && p & PresenceBit.status != 0 {
                out.append(contentsOf: BlockNDJSONWriter.statusKey)
                NDJSONEncoder.appendInt(Int64(block.status[i]), &out)
            }
            let r = block.refs[base + f]
            if r != UInt32.max {
                out.append(contentsOf: BlockNDJSONWriter.keys[f])
                appendString(r, &out)
            }
        }
        if p & PresenceBit.weight != 0 {
            out.append(contentsOf: BlockNDJSONWriter.weightKey)
            NDJSONEncoder.appendInt(Int64(block.weight[i]), &out)
        }
        if p & PresenceBit.attrs != 0 {
            out.append(contentsOf: BlockNDJSONWriter.attrsKey)
            var j = Int(block.attrStart[i])
            let end = Int(block.attrStart[i + 1])
            var first = true
            while j < end {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                appendString(block.attrRefs[j], &out)
                out.append(UInt8(ascii: ":"))
                appendString(block.attrRefs[j + 1], &out)
                j += 2
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: BlockNDJSONWriter.receivedKey)
        NDJSONEncoder.appendInt(receivedAt, &out)
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }
}
