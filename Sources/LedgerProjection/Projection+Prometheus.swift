// Metrics in the Prometheus text exposition format (version 0.0.4): counters end in `_total`,
// times are in seconds, and no token or user id is ever a label value (labels are event type,
// release, track, gateway, reason, status and anomaly kind).
import LedgerModel

public struct MetricsOptions: Sendable {
    /// Issue, expiration and invalidation rates are taken over this much event time before the clock.
    public var rateWindowMs: Int64 = 300_000
    /// At most this many values per label; the rest are summed under "other", so hostile input
    /// cannot make the exposition unbounded.
    public var labelValuesMax = 200
    public init() {}
}

/// The per-token part of the metrics (status gauges, active tokens by release, rates), gathered
/// `chunk` records at a time so a server can let lookups through between chunks: one walk over
/// 10M tokens under the state's lock would stall them for about a second per scrape. Chunks
/// walked at different moments may disagree by the events applied in between; that is the price.
public struct TokenMetricsWalk: Sendable {
    public let clock: Int64
    let windowStart: Int64
    /// About half a millisecond of walking: what a lookup may wait behind a scrape.
    public static let chunk = 8192
    var nextRecord = 0
    var byStatus: [TokenStatus: UInt64] = [:]
    /// Active tokens by (release << 32 | track) name numbers; labels are applied when rendering.
    var activeBy: [UInt64: UInt64] = [:]
    var issued: UInt64 = 0, expired: UInt64 = 0, revoked: UInt64 = 0
}

extension Projection {
    public func tokenMetricsWalk(clock: Int64, options: MetricsOptions = MetricsOptions()) -> TokenMetricsWalk {
        let windowStart = clock.subtractingReportingOverflow(options.rateWindowMs).overflow ? Int64.min : clock - options.rateWindowMs
        return TokenMetricsWalk(clock: clock, windowStart: windowStart)
    }

    /// Adds the next `TokenMetricsWalk.chunk` token records to `w`.
    /// - Returns: false once every record has been walked (then nothing was added).
    @discardableResult
    public func continueWalk(_ w: inout TokenMetricsWalk) -> Bool {
        let start = w.nextRecord
        guard start < records.count else { return false }
        let end = min(records.count, start + TokenMetricsWalk.chunk)
        w.nextRecord = end
        let clock = w.clock, windowStart = w.windowStart
        var i = start
        while i < end {
            // Within one record page at a time: the pages are the storage, the chunk the lock's unit.
            let p = i >> RecordPages.shift
            let page = records.pages[p]
            let stop = min(end, (p + 1) << RecordPages.shift)
            for j in (i & (RecordPages.pageCount - 1))..<(stop - (p << RecordPages.shift)) {
                let r = page[j]
                let status = r.status(clock: clock)
                w.byStatus[status, default: 0] += 1
                if status == .active { w.activeBy[UInt64(r.release) << 32 | UInt64(r.track), default: 0] += 1 }
                if r.isCreated && r.issuedAt > windowStart && r.issuedAt <= clock { w.issued += 1 }
                if r.isCreated && r.exp != .max && r.exp > windowStart && r.exp <= clock && status == .expired { w.expired += 1 }
                if r.isRevoked && r.revokedAt > windowStart && r.revokedAt <= clock { w.revoked += 1 }
            }
            i = stop
        }
        return true
    }

    /// - Parameter walk: the per-token part gathered beforehand with `continueWalk` (a server
    ///   does it a page at a time); nil walks every token now.
    public func prometheusText(clock: Int64, options: MetricsOptions = MetricsOptions(), extra: [(String, String, String, Double)] = [],
                               walk: TokenMetricsWalk? = nil) -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
            out += name
            if !labels.isEmpty {
                out += "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            out += " " + format(value) + "\n"
        }

        // Label values by total events, so folding keeps the busiest.
        let entries = counters.entries
        func keep(_ field: (CounterKey) -> UInt32) -> Set<UInt32> {
            var totals = [UInt32: UInt64]()
            for (k, v) in entries { totals[field(k), default: 0] += v }
            return Set(totals.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(options.labelValuesMax).map(\.key))
        }
        let releases = keep(\.release), tracks = keep(\.track), gateways = keep(\.gateway), reasons = keep(\.reason)
        func label(_ n: UInt32, _ kept: Set<UInt32>) -> String {
            n == TokenRecord.none ? "" : kept.contains(n) ? names.names[Int(n)] : "other"
        }
        var folded = [[String]: UInt64]()
        for (k, v) in entries {
            let type = EventType(rawValue: k.type)?.name ?? "unknown"
            folded[[type, label(k.release, releases), label(k.track, tracks), label(k.gateway, gateways), label(k.reason, reasons)], default: 0] += v
        }
        family("tokenledger_events_total", "counter", "Events on the ledger up to the projection's point, by type, release, track, gateway and reason.")
        for (labels, v) in folded.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            sample("tokenledger_events_total", zip(["type", "release", "track", "gateway", "reason"], labels).filter { !$0.1.isEmpty }.map { ($0.0, $0.1) }, Double(v))
        }

        // One walk over the tokens gives the status gauges, active tokens by release and the rates.
        var w = walk ?? tokenMetricsWalk(clock: clock, options: options)
        if walk == nil { while continueWalk(&w) {} }
        var byStatus = [TokenStatus: UInt64]()
        for (k, v) in w.byStatus { byStatus[k] = v }
        var activeBy = [[String]: UInt64]()
        for (key, v) in w.activeBy {
            activeBy[[label(UInt32(key >> 32), releases), label(UInt32(key & 0xFFFF_FFFF), tracks)], default: 0] += v
        }
        let issuedInWindow = w.issued, expiredInWindow = w.expired, revokedInWindow = w.revoked
        family("tokenledger_tokens", "gauge", "Tokens by status at the projection's clock (unknown: seen only in validations or rejections).")
        for s in TokenStatus.allCases { sample("tokenledger_tokens", [("status", s.rawValue)], Double(byStatus[s] ?? 0)) }
        family("tokenledger_active_tokens", "gauge", "Active tokens by issuing release and track.")
        for (labels, v) in activeBy.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            sample("tokenledger_active_tokens", zip(["release", "track"], labels).filter { !$0.1.isEmpty }.map { ($0.0, $0.1) }, Double(v))
        }
        let window = Double(options.rateWindowMs) / 1000
        family("tokenledger_rate_window_seconds", "gauge", "Event time over which the rates below are taken, ending at the clock.")
        sample("tokenledger_rate_window_seconds", [], window)
        family("tokenledger_token_issue_rate", "gauge", "Tokens created per second of event time over the rate window.")
        sample("tokenledger_token_issue_rate", [], Double(issuedInWindow) / window)
        family("tokenledger_token_expiration_rate", "gauge", "Tokens whose expiry fell in the rate window, per second.")
        sample("tokenledger_token_expiration_rate", [], Double(expiredInWindow) / window)
        family("tokenledger_token_invalidation_rate", "gauge", "Tokens revoked per second of event time over the rate window.")
        sample("tokenledger_token_invalidation_rate", [], Double(revokedInWindow) / window)

        family("tokenledger_anomalies_total", "counter", "Anomalies raised, by kind.")
        for k in AnomalyKind.allCases { sample("tokenledger_anomalies_total", [("kind", k.name)], Double(anomalyRecords.count(of: k))) }

        family("tokenledger_release_rejection_ratio", "gauge", "Rejections over validations plus rejections, by release and non-stable track; stable track as release=\"\".")
        sample("tokenledger_release_rejection_ratio", [("track", ProjectionOptions.stableTrack)], stable.rate)
        for (key, s) in rejection.sorted(by: { $0.key < $1.key }) {
            let release = names.names[Int(key >> 32)], track = names.names[Int(key & 0xFFFF_FFFF)]
            sample("tokenledger_release_rejection_ratio", [("release", release), ("track", track)], s.rate)
        }

        family("tokenledger_markers", "gauge", "Deployment markers on the ledger up to the projection's point.")
        sample("tokenledger_markers", [], Double(markerRecords.count))
        family("tokenledger_head_sequence", "gauge", "Sequence number of the last event in the projection.")
        sample("tokenledger_head_sequence", [], Double(lastSeq))
        family("tokenledger_clock_seconds", "gauge", "The projection's clock (event time), in seconds since the Unix epoch.")
        sample("tokenledger_clock_seconds", [], Double(clock) / 1000)
        for (name, type, help, value) in extra {
            family(name, type, help)
            sample(name, [], value)
        }
        return out
    }
}

private func escape(_ s: String) -> String {
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}

private func format(_ v: Double) -> String {
    if v.isNaN { return "NaN" }
    if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
    if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
    return "\(v)"
}
