// Questions asked of a projection with a clock: token views, the summary, per-status walks.
import LedgerModel

/// One token's state at a clock, with names resolved.
public struct TokenView: Sendable, Equatable {
    public var id: String
    public var status: TokenStatus
    public var sub: String?
    public var clientID: String?
    public var release: String?
    public var track: String?
    public var tokenType: String?
    /// `scope` of the event that created it (ARCHITECTURE.md "Projection rules").
    public var scope: String?
    /// Sequence number and `ts` of the event that created it (nil when nothing did).
    public var createdSeq: UInt64?
    public var issuedAt: Int64?
    public var exp: Int64?
    public var lastSeen: Int64?
    /// `validated` events naming it.
    public var useCount: UInt64
    public var revokedSeq: UInt64?
    public var revokedAt: Int64?
    public var revocationReason: String?
    public var parent: String?
    public var child: String?

    /// RFC 7662's sense of the word.
    public var isActive: Bool { status == .active }

    public var json: String {
        var w = JSONObjectWriter()
        w.string("token", id)
        w.string("status", status.rawValue)
        w.bool("active", isActive)
        w.string("sub", sub); w.string("client_id", clientID); w.string("release", release); w.string("track", track)
        w.string("token_type", tokenType); w.string("scope", scope)
        w.int("created_seq", createdSeq.map { Int64($0) }); w.int("issued_at", issuedAt); w.int("exp", exp)
        w.int("last_seen", lastSeen); w.int("use_count", Int64(useCount))
        w.int("revoked_seq", revokedSeq.map { Int64($0) }); w.int("revoked_at", revokedAt)
        w.string("revocation_reason", revocationReason)
        w.string("parent", parent); w.string("child", child)
        return w.finish()
    }
}

/// The summary object of PRODUCT.md: `seq`, `clock`, counts by status, anomalies by kind.
public struct StateSummary: Sendable, Equatable {
    public var seq: UInt64
    public var clock: Int64
    public var events: UInt64
    /// Tokens with a status (active + expired + revoked + superseded).
    public var tokens: UInt64
    public var active: UInt64
    public var expired: UInt64
    public var revoked: UInt64
    public var superseded: UInt64
    /// Tokens seen only in `validated`/`rejected` events (an anomaly, not a status count).
    public var unknown: UInt64
    public var anomalies: [AnomalyKind: UInt64]

    public var json: String {
        var w = JSONObjectWriter()
        w.int("seq", Int64(seq)); w.int("clock", clock)
        w.string("clock_time", Timestamp.formatRFC3339(epochMilliseconds: clock))
        w.int("events", Int64(events))
        w.int("tokens", Int64(tokens)); w.int("active", Int64(active)); w.int("expired", Int64(expired))
        w.int("revoked", Int64(revoked)); w.int("superseded", Int64(superseded)); w.int("unknown", Int64(unknown))
        var a = JSONObjectWriter()
        for kind in AnomalyKind.allCases { a.int(kind.name, Int64(anomalies[kind] ?? 0)) }
        w.raw("anomalies", a.finish())
        return w.finish()
    }
}

extension Projection {
    /// The clock "at the head": the largest `ts` applied (0 before any event).
    public var headClock: Int64 { maxTs ?? 0 }

    public func status(of id: String, clock: Int64) -> TokenStatus? {
        guard let i = ids.find(id) else { return nil }
        return records[i].status(clock: clock)
    }

    public func token(_ id: String, clock: Int64) -> TokenView? {
        guard let i = ids.find(id) else { return nil }
        return view(i, clock: clock)
    }

    func view(_ i: UInt32, clock: Int64) -> TokenView {
        let r = records[i]
        return TokenView(id: ids.id(i), status: r.status(clock: clock), sub: names.name(r.sub), clientID: names.name(r.client),
                         release: names.name(r.release), track: names.name(r.track), tokenType: names.name(r.tokenType),
                         scope: names.name(r.scope),
                         createdSeq: r.isCreated ? r.createdSeq : nil, issuedAt: r.isCreated ? r.issuedAt : nil,
                         exp: r.exp == .max ? nil : r.exp, lastSeen: r.lastSeen == .min ? nil : r.lastSeen,
                         useCount: UInt64(r.useCount), revokedSeq: r.isRevoked ? r.revokedSeq : nil,
                         revokedAt: r.isRevoked ? r.revokedAt : nil, revocationReason: names.name(r.revokeReason),
                         parent: r.parent == TokenRecord.none ? nil : ids.id(r.parent),
                         child: r.child == TokenRecord.none ? nil : ids.id(r.child))
    }

    /// Every token (unknown ones too), in the order the ledger first named them.
    public func forEachToken<E: Error>(clock: Int64, _ body: (TokenView) throws(E) -> Void) throws(E) {
        for i in 0..<UInt32(records.count) { try body(view(i, clock: clock)) }
    }

    public func summary(clock: Int64) -> StateSummary {
        var counts = [UInt64](repeating: 0, count: 5)
        for p in records.pages.indices {
            let page = records.pages[p]
            let used = min(RecordPages.pageCount, records.count - p * RecordPages.pageCount)
            for j in 0..<used {
                switch page[j].status(clock: clock) {
                case .active: counts[0] += 1
                case .expired: counts[1] += 1
                case .revoked: counts[2] += 1
                case .superseded: counts[3] += 1
                case .unknown: counts[4] += 1
                }
            }
        }
        var anomalies = [AnomalyKind: UInt64]()
        for k in AnomalyKind.allCases where anomalyRecords.count(of: k) > 0 { anomalies[k] = anomalyRecords.count(of: k) }
        return StateSummary(seq: lastSeq, clock: clock, events: eventCount, tokens: counts[0] + counts[1] + counts[2] + counts[3],
                            active: counts[0], expired: counts[1], revoked: counts[2], superseded: counts[3],
                            unknown: counts[4], anomalies: anomalies)
    }

    /// The refresh chain through `id`: oldest ancestor first, then `id`, then its descendants.
    public func refreshChain(of id: String) -> [String] {
        guard let start = ids.find(id) else { return [] }
        var before = [UInt32](), seen: Set<UInt32> = [start]
        var p = records[start].parent
        while p != TokenRecord.none && seen.insert(p).inserted { before.append(p); p = records[p].parent }
        var after = [UInt32]()
        var c = records[start].child
        while c != TokenRecord.none && seen.insert(c).inserted { after.append(c); c = records[c].child }
        return (before.reversed() + [start] + after).map { ids.id($0) }
    }
}

/// A minimal JSON object writer: keys in call order, nil values left out.
public struct JSONObjectWriter {
    var out: [UInt8] = [UInt8(ascii: "{")]
    var first = true

    public init() {}

    mutating func key(_ k: String) {
        if !first { out.append(UInt8(ascii: ",")) }
        first = false
        NDJSONEncoder.appendQuoted(k, &out)
        out.append(UInt8(ascii: ":"))
    }

    public mutating func string(_ k: String, _ v: String?) {
        guard let v else { return }
        key(k); NDJSONEncoder.appendQuoted(v, &out)
    }

    public mutating func int(_ k: String, _ v: Int64?) {
        guard let v else { return }
        key(k); NDJSONEncoder.appendInt(v, &out)
    }

    public mutating func double(_ k: String, _ v: Double?) {
        guard let v else { return }
        key(k)
        out.append(contentsOf: (v.isFinite ? "\(v)" : "null").utf8)
    }

    public mutating func bool(_ k: String, _ v: Bool?) {
        guard let v else { return }
        key(k); out.append(contentsOf: (v ? "true" : "false").utf8)
    }

    /// `v` must already be JSON.
    public mutating func raw(_ k: String, _ v: String) {
        key(k); out.append(contentsOf: v.utf8)
    }

    public mutating func strings(_ k: String, _ v: [String]) {
        key(k)
        out.append(UInt8(ascii: "["))
        for (n, s) in v.enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            NDJSONEncoder.appendQuoted(s, &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    public func finish() -> String {
        var o = out
        o.append(UInt8(ascii: "}"))
        return String(decoding: o, as: UTF8.self)
    }
}
