/// NDJSON straight from a decoded block's columns: each string of the block is escaped once into
/// one flat table, and every event is then a run of memcpys. The output is byte-identical to
/// `NDJSONEncoder` on the same event (a test holds the two together).
public struct BlockNDJSONWriter {
    public let block: DecodedBlock
    private let tables: Tables

    /// Flat byte tables behind raw pointers: per-field copies of small arrays (and the retain and
    /// release each costs) were half the time of a replay.
    final class Tables {
        let quoted: UnsafeMutablePointer<UInt8>
        let quotedStart: UnsafeMutablePointer<Int>   // count + 1 offsets
        let keys: UnsafeMutablePointer<UInt8>
        let keyStart: UnsafeMutablePointer<Int>
        let typePrefix: UnsafeMutablePointer<UInt8>
        let typeStart: UnsafeMutablePointer<Int>      // 257 offsets, by raw type value

        init(strings: [String]) {
            var flat = [UInt8]()
            var starts = [Int]()
            starts.reserveCapacity(strings.count + 1)
            for s in strings {
                starts.append(flat.count)
                NDJSONEncoder.appendQuoted(s, &flat)
            }
            starts.append(flat.count)
            quoted = Tables.copy(flat)
            quotedStart = Tables.copy(starts)

            var keyBytes = [UInt8]()
            var keyStarts = [Int]()
            for name in BlockNDJSONWriter.keyNames {
                keyStarts.append(keyBytes.count)
                keyBytes += Array(name.utf8)
            }
            keyStarts.append(keyBytes.count)
            keys = Tables.copy(keyBytes)
            keyStart = Tables.copy(keyStarts)

            var typeBytes = [UInt8]()
            var typeStarts = [Int]()
            for raw in 0..<256 {
                typeStarts.append(typeBytes.count)
                if let t = EventType(rawValue: UInt8(raw)) { typeBytes += Array(",\"type\":\"\(t.name)\",\"ts\":".utf8) }
            }
            typeStarts.append(typeBytes.count)
            typePrefix = Tables.copy(typeBytes)
            typeStart = Tables.copy(typeStarts)
        }

        static func copy<T>(_ array: [T]) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(1, array.count))
            _ = UnsafeMutableBufferPointer(start: p, count: array.count).initialize(from: array)
            return p
        }

        deinit {
            quoted.deallocate(); quotedStart.deallocate(); keys.deallocate(); keyStart.deallocate()
            typePrefix.deallocate(); typeStart.deallocate()
        }
    }

    /// Keys in StringField order, then the non-string fields.
    static let keyNames = [
        ",\"token\":", ",\"token_type\":", ",\"sub\":", ",\"client_id\":", ",\"iss\":", ",\"aud\":", ",\"scope\":",
        ",\"parent\":", ",\"gateway\":", ",\"release\":", ",\"track\":", ",\"route\":", ",\"method\":", ",\"client_ip\":",
        ",\"request_id\":", ",\"reason\":", ",\"marker\":",
        "{\"seq\":", ",\"exp\":", ",\"status\":", ",\"weight\":", ",\"attrs\":{", ",\"received_at\":",
    ]
    private static let seqKey = 17, expKey = 18, statusKey = 19, weightKey = 20, attrsKey = 21, receivedKey = 22

    public init(_ block: DecodedBlock) {
        self.block = block
        self.tables = Tables(strings: block.strings)
    }

    /// Writes into space reserved up front, so a line costs one array resize, not one per field.
    struct LineCursor {
        var p: UnsafeMutablePointer<UInt8>
        @inline(__always) mutating func put(_ base: UnsafeMutablePointer<UInt8>, _ starts: UnsafeMutablePointer<Int>, _ i: Int) {
            let start = starts[i]
            let n = starts[i + 1] - start
            p.update(from: base + start, count: n)
            p += n
        }
        @inline(__always) mutating func byte(_ b: UInt8) { p.pointee = b; p += 1 }
        @inline(__always) mutating func int(_ value: Int64) {
            if value == 0 { byte(UInt8(ascii: "0")); return }
            var magnitude = value.magnitude
            if value < 0 { byte(UInt8(ascii: "-")) }
            var digits = 0
            var probe = magnitude
            while probe > 0 { digits += 1; probe /= 10 }
            var q = p + digits - 1
            while magnitude > 0 {
                q.pointee = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                q -= 1
            }
            p += digits
        }
    }

    @inline(__always) private func quotedLength(_ ref: UInt32) -> Int {
        tables.quotedStart[Int(ref) + 1] - tables.quotedStart[Int(ref)]
    }

    /// Appends event `i` as one line with its sequence number and received time.
    public func append(_ i: Int, seq: UInt64, receivedAt: Int64, to out: inout [UInt8]) {
        let p = block.presence[i]
        let base = i * StringField.count
        // Upper bound of the line: every key, every present string, 8 integers of at most 20
        // characters, punctuation.
        var bound = 320
        for f in 0..<StringField.count where block.refs[base + f] != UInt32.max { bound += quotedLength(block.refs[base + f]) }
        if p & PresenceBit.attrs != 0 {
            for j in Int(block.attrStart[i])..<Int(block.attrStart[i + 1]) { bound += quotedLength(block.attrRefs[j]) + 2 }
        }
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: bound))
        let used: Int = out.withUnsafeMutableBufferPointer { buffer in
            let origin = buffer.baseAddress! + start
            var c = LineCursor(p: origin)
            let t = tables
            c.put(t.keys, t.keyStart, BlockNDJSONWriter.seqKey)
            c.int(Int64(bitPattern: seq))
            c.put(t.typePrefix, t.typeStart, Int(block.types[i].rawValue))
            c.int(block.ts[i])
            block.refs.withUnsafeBufferPointer { refs in
                for f in 0..<StringField.count {
                    if f == StringField.parent.rawValue && p & PresenceBit.exp != 0 {
                        c.put(t.keys, t.keyStart, BlockNDJSONWriter.expKey)
                        c.int(block.exp[i])
                    }
                    if f == StringField.clientIP.rawValue && p & PresenceBit.status != 0 {
                        c.put(t.keys, t.keyStart, BlockNDJSONWriter.statusKey)
                        c.int(Int64(block.status[i]))
                    }
                    let r = refs[base + f]
                    if r != UInt32.max {
                        c.put(t.keys, t.keyStart, f)
                        c.put(t.quoted, t.quotedStart, Int(r))
                    }
                }
            }
            if p & PresenceBit.weight != 0 {
                c.put(t.keys, t.keyStart, BlockNDJSONWriter.weightKey)
                c.int(Int64(block.weight[i]))
            }
            if p & PresenceBit.attrs != 0 {
                c.put(t.keys, t.keyStart, BlockNDJSONWriter.attrsKey)
                var j = Int(block.attrStart[i])
                let end = Int(block.attrStart[i + 1])
                var first = true
                while j < end {
                    if !first { c.byte(UInt8(ascii: ",")) }
                    first = false
                    c.put(t.quoted, t.quotedStart, Int(block.attrRefs[j]))
                    c.byte(UInt8(ascii: ":"))
                    c.put(t.quoted, t.quotedStart, Int(block.attrRefs[j + 1]))
                    j += 2
                }
                c.byte(UInt8(ascii: "}"))
            }
            c.put(t.keys, t.keyStart, BlockNDJSONWriter.receivedKey)
            c.int(receivedAt)
            c.byte(UInt8(ascii: "}"))
            c.byte(UInt8(ascii: "\n"))
            return c.p - origin
        }
        out.removeLast(bound - used)
    }
}
