import Glibc
import LedgerModel

// Encodes drafts straight to NDJSON bytes, identical to `NDJSONEncoder.append(draft.materialize())`
// (a test pins this) but about five times faster: every catalog string, with its key, is encoded
// once, through `NDJSONEncoder.appendQuoted` itself, and an event is then a handful of memcpys.
// Field order and formats follow NDJSONEncoder; keep the two in step.

/// Byte strings stored back to back; entry i is `bytes[offsets[i]..<offsets[i+1]]`.
final class ByteTable {
    private let storage: UnsafeMutablePointer<UInt8>
    private let offsets: UnsafeMutablePointer<Int>
    let count: Int
    let longest: Int

    init(_ items: [[UInt8]]) {
        count = items.count
        longest = items.map(\.count).max() ?? 0
        let total = items.reduce(0) { $0 + $1.count }
        storage = .allocate(capacity: max(total, 1))
        offsets = .allocate(capacity: items.count + 1)
        var at = 0
        for (i, item) in items.enumerated() {
            offsets[i] = at
            item.withUnsafeBufferPointer { (storage + at).update(from: $0.baseAddress!, count: item.count) }
            at += item.count
        }
        offsets[items.count] = at
    }

    deinit {
        storage.deallocate()
        offsets.deallocate()
    }

    @inline(__always) func write(_ i: Int, to out: UnsafeMutablePointer<UInt8>) -> Int {
        let start = offsets[i], length = offsets[i + 1] - start
        out.update(from: storage + start, count: length)
        return length
    }

    /// `,"key":"value"` for each value, escaped exactly as NDJSONEncoder does.
    static func field(_ key: String, _ values: [String]) -> ByteTable {
        ByteTable(values.map { value in
            var bytes = Array(",\"\(key)\":".utf8)
            NDJSONEncoder.appendQuoted(value, &bytes)
            return bytes
        })
    }
}

/// The encoded forms of everything a draft refers to by index.
final class DraftEncoder {
    private let typePrefixes: ByteTable
    private let tokenTypes = ByteTable.field("token_type", TokenType.allCases.map(\.text))
    /// Machine subjects' names; users' are written digit by digit.
    private let machineNames: ByteTable
    private let subjectTable: SubjectTable
    private let clients = ByteTable.field("client_id", Catalog.allClients.map(\.id))
    private let claims: ByteTable
    private let gateways = ByteTable.field("gateway", Catalog.gateways)
    private let releases = ByteTable.field("release", Release.allCases.map(\.text))
    private let tracks = ByteTable.field("track", Track.allCases.map(\.text))
    private let routes: ByteTable
    /// Machine subjects' addresses, then the attacker's; users' are written digit by digit.
    private let machineAddresses: ByteTable
    private let reasons = ByteTable.field("reason", Reason.allCases.map(\.text))
    private let markers = ByteTable.field("marker", WorkloadScenario.markerPlan.map(\.id))

    /// Longest line without the variable strings (token, parent, request id), with room to spare.
    let fixedBytesMax: Int

    init(subjects table: SubjectTable) {
        typePrefixes = ByteTable((0..<32).map { raw in
            guard let type = EventType(rawValue: UInt8(raw)) else { return [] }
            return Array("{\"type\":\"\(type.name)\"".utf8)
        })
        subjectTable = table
        machineNames = ByteTable.field("sub", Catalog.machineSubjects.map(\.name))
        claims = ByteTable(Catalog.allClients.map { client in
            var bytes = [UInt8]()
            for (key, value) in [("iss", client.iss), ("aud", client.aud), ("scope", client.scope)] {
                bytes += Array(",\"\(key)\":".utf8)
                NDJSONEncoder.appendQuoted(value, &bytes)
            }
            return bytes
        })
        routes = ByteTable(Catalog.routes.map { route in
            var bytes = Array(",\"route\":".utf8)
            NDJSONEncoder.appendQuoted(route.path, &bytes)
            bytes += Array(",\"method\":".utf8)
            NDJSONEncoder.appendQuoted(route.method, &bytes)
            return bytes
        })
        machineAddresses = ByteTable.field("client_ip", Catalog.machineSubjects.map(\.ip) + [Catalog.attackerIP])
        let tables = [typePrefixes, tokenTypes, machineNames, clients, claims, gateways, releases, tracks, routes, machineAddresses,
                      reasons, markers]
        // Pre-encoded fields at their longest, plus the keys and digits of the integer fields and
        // the keys and quotes of the variable strings, with room to spare.
        fixedBytesMax = tables.reduce(0) { $0 + $1.longest } + table.userNameBytesMax + SubjectTable.userIPBytesMax + 256
    }

    /// Bytes `encode` may write for `draft` at most.
    @inline(__always) func bytesMax(_ draft: EventDraft) -> Int {
        fixedBytesMax + 6 * ((draft.token?.utf8.count ?? 0) + (draft.parent?.utf8.count ?? 0) + (draft.requestID?.utf8.count ?? 0))
    }

    /// Writes the line (with its newline) at `out`, which has room for `bytesMax(draft)` bytes.
    /// - Returns: the number of bytes written.
    func encode(_ draft: EventDraft, to out: UnsafeMutablePointer<UInt8>) -> Int {
        var n = typePrefixes.write(Int(draft.type.rawValue), to: out)
        n += writeKey(",\"ts\":", out + n)
        n += writeInt(draft.ts, out + n)
        if let token = draft.token { n += writeString(",\"token\":", token, out + n) }
        if let tokenType = draft.tokenType { n += tokenTypes.write(tokenType.rawValue, to: out + n) }
        if draft.subject >= 0 { n += writeSubject(Int(draft.subject), out + n) }
        if draft.client >= 0 {
            n += clients.write(Int(draft.client), to: out + n)
            if draft.claims { n += claims.write(Int(draft.client), to: out + n) }
        }
        if let exp = draft.exp {
            n += writeKey(",\"exp\":", out + n)
            n += writeInt(exp, out + n)
        }
        if let parent = draft.parent { n += writeString(",\"parent\":", parent, out + n) }
        if draft.gateway >= 0 { n += gateways.write(Int(draft.gateway), to: out + n) }
        if let release = draft.release { n += releases.write(release.rawValue, to: out + n) }
        if let track = draft.track { n += tracks.write(track.rawValue, to: out + n) }
        if draft.route >= 0 { n += routes.write(Int(draft.route), to: out + n) }
        if draft.status != 0 {
            n += writeKey(",\"status\":", out + n)
            n += writeInt(Int64(draft.status), out + n)
        }
        if draft.clientIP >= 0 {
            n += writeAddress(Int(draft.clientIP), out + n)
        } else if draft.clientIP == EventDraft.attackerAddress {
            n += machineAddresses.write(machineAddresses.count - 1, to: out + n)
        }
        if let requestID = draft.requestID { n += writeString(",\"request_id\":", requestID, out + n) }
        if let reason = draft.reason { n += reasons.write(reason.rawValue, to: out + n) }
        if draft.marker >= 0 { n += markers.write(Int(draft.marker), to: out + n) }
        if draft.weight >= 0 {
            n += writeKey(",\"weight\":", out + n)
            n += writeInt(Int64(draft.weight), out + n)
        }
        out[n] = UInt8(ascii: "}")
        out[n + 1] = UInt8(ascii: "\n")
        return n + 2
    }

    /// `,"sub":"user-00042"`, as `SubjectTable.userName` spells it.
    private func writeSubject(_ subject: Int, _ out: UnsafeMutablePointer<UInt8>) -> Int {
        if subject < subjectTable.userBase { return machineNames.write(subject, to: out) }
        var n = writeKey(",\"sub\":\"user-", out)
        let user = Int64(subject - subjectTable.userBase)
        var digits = 1
        var probe = user
        while probe >= 10 { digits += 1; probe /= 10 }
        while digits < 5 { out[n] = UInt8(ascii: "0"); n += 1; digits += 1 }
        n += writeInt(user, out + n)
        out[n] = 0x22
        return n + 1
    }

    /// `,"client_ip":"a.b.c.d"`, as `SubjectTable.ip` spells it.
    private func writeAddress(_ subject: Int, _ out: UnsafeMutablePointer<UInt8>) -> Int {
        if subject < subjectTable.userBase { return machineAddresses.write(subject, to: out) }
        let (a, b, c, d) = subjectTable.userOctets(subject)
        var n = writeKey(",\"client_ip\":\"", out)
        n += writeInt(Int64(a), out + n)
        out[n] = UInt8(ascii: "."); n += 1
        n += writeInt(Int64(b), out + n)
        out[n] = UInt8(ascii: "."); n += 1
        n += writeInt(Int64(c), out + n)
        out[n] = UInt8(ascii: "."); n += 1
        n += writeInt(Int64(d), out + n)
        out[n] = 0x22
        return n + 1
    }

    @inline(__always) private func writeKey(_ key: StaticString, _ out: UnsafeMutablePointer<UInt8>) -> Int {
        out.update(from: key.utf8Start, count: key.utf8CodeUnitCount)
        return key.utf8CodeUnitCount
    }

    private func writeString(_ key: StaticString, _ value: String, _ out: UnsafeMutablePointer<UInt8>) -> Int {
        var n = writeKey(key, out)
        var value = value
        value.withUTF8 { bytes in
            var plain = true
            for c in bytes where c < 0x20 || c == 0x22 || c == 0x5C { plain = false; break }
            if plain {
                out[n] = 0x22
                (out + n + 1).update(from: bytes.baseAddress!, count: bytes.count)
                out[n + 1 + bytes.count] = 0x22
                n += bytes.count + 2
            } else {
                var escaped = [UInt8]()
                NDJSONEncoder.appendQuoted(String(decoding: bytes, as: UTF8.self), &escaped)
                escaped.withUnsafeBufferPointer { (out + n).update(from: $0.baseAddress!, count: $0.count) }
                n += escaped.count
            }
        }
        return n
    }

    @inline(__always) private func writeInt(_ value: Int64, _ out: UnsafeMutablePointer<UInt8>) -> Int {
        if value == 0 { out[0] = UInt8(ascii: "0"); return 1 }
        var n = 0
        if value < 0 { out[0] = UInt8(ascii: "-"); n = 1 }
        var magnitude = value.magnitude
        var digits = 0
        var probe = magnitude
        while probe > 0 { digits += 1; probe /= 10 }
        var i = n + digits - 1
        while magnitude > 0 {
            out[i] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
            i -= 1
        }
        return n + digits
    }
}
