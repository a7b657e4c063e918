// A naive model of PRODUCT.md "Token state rules" and "Rollback semantics", written apart from
// the projection to check it. It keeps every event, and each token's list of the events that
// name it, and answers every question by scanning that list again: no incremental facts, no
// interning, no flags. Slow on purpose; only for the tests' few thousand events.
//
// Rules as the tests read them (the brief's numbering):
//  2. a token's facts come from events naming it as `token`, or as `parent` of a `refreshed`;
//  3. the first `issued`, or `refreshed` naming it as `token`, creates it and fixes createdSeq,
//     issuedAt, exp, release, track, token type, scope (none stays none: a refresh without
//     one does not inherit the parent's); later ones only count as duplicates;
//  4. the first `revoked` fixes revokedSeq, revokedAt, reason;
//  5. an `expired` event sets a flag;
//  6. a `refreshed` with parent P supersedes P; first such child / parent links win, never self;
//  7. revoked > superseded > expired (flag, or exp <= clock) > active (created) > unknown;
//  8. a `validated` event raises revoked_validated / expired_accepted / never_issued_validated
//     from the token's status before it, at the event's own ts;
//  9. lastSeen = max ts naming it as `token`; sub and client from the first event carrying them;
// 10. rejection rate per (release, track) against the stable track, once per pair;
// 11. markers recorded in order;
// 12. rollback plans on the state at the head.
import LedgerModel
@testable import LedgerProjection

/// One applied event and its sequence number (a class: the model's lists share, not copy, it).
final class Entry {
    let seq: UInt64
    let event: Event

    init(seq: UInt64, event: Event) {
        self.seq = seq
        self.event = event
    }
}

struct ModelToken: Equatable {
    var id: String
    var status: String
    var sub: String?
    var clientID: String?
    var release: String?
    var track: String?
    var tokenType: String?
    var scope: String?
    var createdSeq: UInt64?
    var issuedAt: Int64?
    var exp: Int64?
    var lastSeen: Int64?
    var useCount: UInt64
    var revokedSeq: UInt64?
    var revokedAt: Int64?
    var revocationReason: String?
    var parent: String?
    var child: String?
}

struct ModelSummary: Equatable {
    var seq: UInt64
    var clock: Int64
    var events: UInt64
    var tokens: UInt64
    var active: UInt64
    var expired: UInt64
    var revoked: UInt64
    var superseded: UInt64
    var unknown: UInt64
    /// Anomaly kind name -> count; kinds that never happened are absent.
    var anomalies: [String: UInt64]
}

struct ModelAnomaly: Equatable {
    var seq: UInt64
    var ts: Int64
    var kind: String
    var token: String?
    var release: String?
    var track: String?
    var gateway: String?
    var rate: Double?
    var stableRate: Double?
}

struct ModelMarker: Equatable {
    var seq: UInt64
    var ts: Int64
    var type: String
    var marker: String
    var release: String?
    var track: String?
    var weight: Int?
}

struct ModelPlan: Equatable {
    var markerSeq: UInt64
    var headSeq: UInt64
    var headClock: Int64
    var knownReleases: [String]
    var rolledBackReleases: [String]
    var revoke: [String]
    var keptUnknownRelease: Int
    var keptKnown: Int
    var unattributed: Int
    var stayRevoked: Int
}

final class NaiveModel {
    let entries: [Entry]
    let factor: Double
    let samplesMin: UInt64
    /// Per token id: indices into `entries` of the events naming it (as `token`, or as `parent`
    /// of a `refreshed`), in seq order.
    private(set) var history: [String: [Int]] = [:]
    /// Every named id, in the order first named (the tests compare sets, not this order).
    private(set) var ids: [String] = []
    private(set) var anomalies: [ModelAnomaly] = []
    /// Rejection-rate checks that found the pair's rate exactly at the threshold (no alert: the
    /// rule is "greater than"). Only for the coverage test.
    private(set) var thresholdTies = 0

    /// - Parameter entries: the events to apply, in increasing seq order (gaps allowed).
    init(_ entries: [Entry], factor: Double = 3, samplesMin: UInt64 = 500) {
        self.entries = entries
        self.factor = factor
        self.samplesMin = samplesMin
        var largest: Int64?
        for e in entries where largest == nil || e.event.ts > largest! { largest = e.event.ts }
        maxTs = largest
        for (i, e) in entries.enumerated() where !e.event.type.isMarker {
            var named: [String] = []
            if let t = e.event.token { named.append(t) }
            if e.event.type == .refreshed, let p = e.event.parent, !named.contains(p) { named.append(p) }
            for id in named {
                if history[id] == nil { ids.append(id) }
                history[id, default: []].append(i)
            }
        }
        anomalies = computeAnomalies()
    }

    /// The state at time `t`: only events with ts <= t, still in seq order.
    static func atTime(_ events: [Event], _ t: Int64, factor: Double = 3, samplesMin: UInt64 = 500) -> NaiveModel {
        NaiveModel(events.enumerated().filter { $0.element.ts <= t }.map { Entry(seq: UInt64($0.offset + 1), event: $0.element) },
                   factor: factor, samplesMin: samplesMin)
    }

    var lastSeq: UInt64 { entries.last?.seq ?? 0 }
    /// The clock "at seq N": the largest ts applied; nil with no events.
    let maxTs: Int64?
    var eventCount: UInt64 { UInt64(entries.count) }
    var allIDs: Set<String> { Set(history.keys) }

    /// Creating events beyond each token's first.
    var duplicateCreations: UInt64 {
        var n: UInt64 = 0
        for (id, list) in history {
            let creations = list.filter { i in
                let e = entries[i].event
                return (e.type == .issued || e.type == .refreshed) && e.token == id
            }.count
            if creations > 1 { n += UInt64(creations - 1) }
        }
        return n
    }

    private(set) lazy var markerEntries: [Entry] = entries.filter { $0.event.type.isMarker }

    var markers: [ModelMarker] {
        markerEntries.map {
            ModelMarker(seq: $0.seq, ts: $0.event.ts, type: $0.event.type.name, marker: $0.event.marker ?? "",
                        release: $0.event.release, track: $0.event.track, weight: $0.event.weight)
        }
    }

    // MARK: One token, by scanning its history

    /// The token as the events with seq < `before` leave it, at `clock`; nil if none named it.
    func token(_ id: String, clock: Int64, before: UInt64 = .max) -> ModelToken? {
        guard let list = history[id], entries[list[0]].seq < before else { return nil }
        var t = ModelToken(id: id, status: "", useCount: 0)
        var created = false, revoked = false, expiredEvent = false, superseded = false
        for i in list {
            let x = entries[i]
            let seq = x.seq
            if seq >= before { break }
            if x.event.token == id {
                let e = x.event
                switch e.type {
                case .issued, .refreshed:
                    if !created {
                        created = true
                        t.createdSeq = seq; t.issuedAt = e.ts; t.exp = e.exp
                        t.release = e.release; t.track = e.track; t.tokenType = e.tokenType
                        t.scope = e.scope  // the creating event's, never the parent's
                    }
                    if e.type == .refreshed, t.parent == nil, let p = e.parent, p != id { t.parent = p }
                case .revoked:
                    if !revoked { revoked = true; t.revokedSeq = seq; t.revokedAt = e.ts; t.revocationReason = e.reason }
                case .expired:
                    expiredEvent = true
                case .validated:
                    t.useCount += 1
                default:
                    break
                }
                t.lastSeen = max(t.lastSeen ?? e.ts, e.ts)
                if t.sub == nil { t.sub = e.sub }
                if t.clientID == nil { t.clientID = e.clientID }
            }
            if x.event.type == .refreshed && x.event.parent == id {
                superseded = true
                if t.child == nil, let c = x.event.token, c != id { t.child = c }
            }
        }
        if revoked {
            t.status = "revoked"
        } else if superseded {
            t.status = "superseded"
        } else if expiredEvent || (created && t.exp.map { $0 <= clock } ?? false) {
            t.status = "expired"
        } else if created {
            t.status = "active"
        } else {
            t.status = "unknown"
        }
        return t
    }

    /// The summary at `clock` of the events with seq <= `through` (all by default): the same as
    /// a model built from those events alone, since anomalies only look back.
    func summary(clock: Int64, through: UInt64 = .max) -> ModelSummary {
        var byStatus: [String: UInt64] = [:]
        for id in history.keys {
            guard let t = token(id, clock: clock, before: through == .max ? .max : through + 1) else { continue }
            byStatus[t.status, default: 0] += 1
        }
        var kinds: [String: UInt64] = [:]
        for a in anomalies where a.seq <= through { kinds[a.kind, default: 0] += 1 }
        let active = byStatus["active"] ?? 0, expired = byStatus["expired"] ?? 0
        let revoked = byStatus["revoked"] ?? 0, superseded = byStatus["superseded"] ?? 0
        let applied = entries.filter { $0.seq <= through }
        return ModelSummary(seq: applied.last?.seq ?? 0, clock: clock, events: UInt64(applied.count),
                            tokens: active + expired + revoked + superseded,
                            active: active, expired: expired, revoked: revoked, superseded: superseded,
                            unknown: byStatus["unknown"] ?? 0, anomalies: kinds)
    }

    // MARK: Anomalies, by walking the log

    private func computeAnomalies() -> [ModelAnomaly] {
        var out: [ModelAnomaly] = []
        var stableValidated: UInt64 = 0, stableRejected: UInt64 = 0
        var pairValidated: [String: [String: UInt64]] = [:]
        var pairRejected: [String: [String: UInt64]] = [:]
        var alerted: [String: Set<String>] = [:]
        for e in entries {
            let ev = e.event
            if ev.type == .validated, let id = ev.token {
                let before = token(id, clock: ev.ts, before: e.seq)?.status ?? "unknown"
                let kind: String? = switch before {
                case "revoked": "revoked_validated"
                case "expired": "expired_accepted"
                case "unknown": "never_issued_validated"
                default: nil
                }
                if let kind {
                    out.append(ModelAnomaly(seq: e.seq, ts: ev.ts, kind: kind, token: id, release: ev.release, track: ev.track,
                                            gateway: ev.gateway))
                }
            }
            guard ev.type == .validated || ev.type == .rejected, let release = ev.release, let track = ev.track else { continue }
            let rejected = ev.type == .rejected
            if track == "stable" {
                if rejected { stableRejected += 1 } else { stableValidated += 1 }
                continue
            }
            if rejected { pairRejected[release, default: [:]][track, default: 0] += 1 } else { pairValidated[release, default: [:]][track, default: 0] += 1 }
            let v = pairValidated[release]?[track] ?? 0, r = pairRejected[release]?[track] ?? 0
            let stableSamples = stableValidated + stableRejected
            let rate = Double(r) / Double(v + r)
            let stableRate = stableSamples == 0 ? 0 : Double(stableRejected) / Double(stableSamples)
            let armed = !(alerted[release]?.contains(track) ?? false) && v + r >= samplesMin && stableSamples >= samplesMin
            if armed && rate == factor * stableRate { thresholdTies += 1 }
            if armed && rate > factor * stableRate {
                alerted[release, default: []].insert(track)
                out.append(ModelAnomaly(seq: e.seq, ts: ev.ts, kind: "rejection_rate", token: nil, release: release, track: track,
                                        gateway: ev.gateway, rate: rate, stableRate: stableRate))
            }
        }
        return out
    }

    // MARK: Rollback

    /// Every token at the head clock (computed once: every plan is judged on the same state).
    private(set) lazy var tokensAtHead: [ModelToken] = {
        let clock = maxTs ?? 0
        return history.keys.map { token($0, clock: clock)! }
    }()

    /// - Returns: nil when no marker has that id.
    func rollbackPlan(to markerID: String, policy: RollbackPolicy) -> ModelPlan? {
        guard let m = markerEntries.last(where: { $0.event.marker == markerID }) else { return nil }
        let known = Set(markerEntries.filter { $0.seq <= m.seq }.compactMap { $0.event.release })
        let clock = maxTs ?? 0
        var revoke: [(UInt64, String)] = []
        var rolledBack = Set<String>()
        var keptUnknown = 0, keptKnown = 0, unattributed = 0, stayRevoked = 0
        for t in tokensAtHead {
            let id = t.id
            if let r = t.revokedSeq, r > m.seq { stayRevoked += 1 }
            guard t.status == "active", let created = t.createdSeq, created > m.seq else { continue }
            guard let release = t.release else { unattributed += 1; continue }
            if known.contains(release) {
                keptKnown += 1
            } else {
                rolledBack.insert(release)
                if policy == .revoke { revoke.append((created, id)) } else { keptUnknown += 1 }
            }
        }
        return ModelPlan(markerSeq: m.seq, headSeq: lastSeq, headClock: clock, knownReleases: known.sorted(),
                         rolledBackReleases: rolledBack.sorted(), revoke: revoke.sorted { $0.0 < $1.0 }.map(\.1),
                         keptUnknownRelease: keptUnknown, keptKnown: keptKnown, unattributed: unattributed,
                         stayRevoked: stayRevoked)
    }
}
