/// What a forensic query asks for (`replay` and `GET /v1/events`): one definition of a match, so
/// the CLI and the HTTP API cannot disagree about which events a filter selects.
public struct EventFilter: Sendable {
    public var token: String?
    public var sub: String?
    public var types: Set<EventType> = []
    public var release: String?
    public var gateway: String?
    public var fromSeq: UInt64?
    public var toSeq: UInt64?
    /// Gateway time (`ts`), inclusive.
    public var since: Int64?
    public var until: Int64?

    public init() {}

    /// Indices of the block's events that pass. String filters compare the block's string
    /// numbers, so a block without the string costs one lookup.
    public func matchingIndices(_ block: DecodedBlock, firstSeq: UInt64) -> [Int] {
        var conditions = [(StringField, UInt32)]()
        for (field, value) in [(StringField.token, token), (.sub, sub), (.release, release), (.gateway, gateway)] {
            guard let value else { continue }
            guard let number = block.stringNumber(of: value) else { return [] }
            conditions.append((field, number))
        }
        var result = [Int]()
        let start = fromSeq.map { $0 > firstSeq ? Int(min($0 - firstSeq, UInt64(block.count))) : 0 } ?? 0
        for i in start..<block.count {
            if let to = toSeq, firstSeq + UInt64(i) > to { break }
            if let since, block.ts[i] < since { continue }
            if let until, block.ts[i] > until { continue }
            if !types.isEmpty && !types.contains(block.types[i]) { continue }
            var ok = true
            for (field, number) in conditions where block.refs[i * StringField.count + field.rawValue] != number { ok = false; break }
            if ok { result.append(i) }
        }
        return result
    }

    /// The same test for one event with its sequence number.
    public func matches(_ e: Event, seq: UInt64) -> Bool {
        if let fromSeq, seq < fromSeq { return false }
        if let toSeq, seq > toSeq { return false }
        if let since, e.ts < since { return false }
        if let until, e.ts > until { return false }
        if !types.isEmpty && !types.contains(e.type) { return false }
        if let token, e.token != token { return false }
        if let sub, e.sub != sub { return false }
        if let release, e.release != release { return false }
        if let gateway, e.gateway != gateway { return false }
        return true
    }
}
