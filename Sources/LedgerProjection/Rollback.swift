// Rollback as a projection (PRODUCT.md "Rollback semantics"): from the state now and a past
// marker, which tokens to revoke, which to keep, which stay revoked. History is never rewritten:
// applying a plan appends a `rollback` marker and `revoked` events.
import LedgerModel
import LedgerStorage

public enum RollbackPolicy: String, Sendable, CaseIterable {
    /// Revoke active tokens created after the marker by a release no marker up to it names.
    case revoke
    /// List them, revoke nothing (the marker is still appended).
    case keep
}

public struct RollbackError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

public struct RollbackPlan: Sendable, Equatable {
    public var marker: MarkerRecord
    public var policy: RollbackPolicy
    public var headSeq: UInt64
    public var headClock: Int64
    /// Releases named by markers at or before the target marker, sorted.
    public var knownReleases: [String]
    /// Releases of the tokens to revoke (or, with policy keep, kept despite), sorted.
    public var rolledBackReleases: [String]
    /// Token ids to revoke, in creation order.
    public var revoke: [String]
    /// With policy keep: the tokens the revoke policy would have revoked.
    public var keptUnknownRelease: Int
    /// Active tokens created after the marker by a release known at it.
    public var keptKnown: Int
    /// Active tokens created after the marker with no release.
    public var unattributed: Int
    /// Tokens revoked after the marker: they stay revoked.
    public var stayRevoked: Int

    public var json: String {
        var w = JSONObjectWriter()
        w.string("marker", marker.marker)
        w.int("marker_seq", Int64(marker.seq)); w.int("marker_ts", marker.ts)
        w.string("marker_release", marker.release); w.string("marker_track", marker.track)
        w.string("policy", policy.rawValue)
        w.int("head_seq", Int64(headSeq)); w.int("head_clock", headClock)
        w.strings("known_releases", knownReleases)
        w.strings("rolled_back_releases", rolledBackReleases)
        w.strings("revoke", revoke)
        w.int("revoke_count", Int64(revoke.count))
        w.int("kept_known", Int64(keptKnown))
        w.int("kept_unknown_release", Int64(keptUnknownRelease))
        w.int("unattributed", Int64(unattributed))
        w.int("stay_revoked", Int64(stayRevoked))
        return w.finish()
    }
}

extension Projection {
    /// Marker ids are meant to be unique; where one repeats, the first marker with it is the one
    /// meant, so the answer never depends on how much of the ledger was read.
    public func marker(named id: String) -> MarkerRecord? {
        markerRecords.first(where: { $0.marker == id })
    }

    /// The plan to roll back to marker `id`, judged on this projection as the state now (its
    /// clock is the head's).
    public func rollbackPlan(to id: String, policy: RollbackPolicy) throws(RollbackError) -> RollbackPlan {
        guard let m = marker(named: id) else {
            let known = markerRecords.map(\.marker)
            let list = known.isEmpty ? "the ledger has no markers" : "known markers: " + known.suffix(12).joined(separator: ", ")
            throw RollbackError(message: "unknown marker \"\(id)\" (\(list))")
        }
        var knownNames = Set<String>()
        for k in markerRecords where k.seq <= m.seq { if let r = k.release { knownNames.insert(r) } }
        var knownNumbers = Set<UInt32>()
        for n in knownNames { if let i = names.index[n] { knownNumbers.insert(i) } }

        let clock = headClock
        var revoke = [(UInt64, UInt32)]()
        var rolledBack = Set<UInt32>()
        var keptKnown = 0, unattributed = 0, stayRevoked = 0, keptUnknown = 0
        for p in records.pages.indices {
            let page = records.pages[p]
            let used = min(RecordPages.pageCount, records.count - p * RecordPages.pageCount)
            for j in 0..<used {
                let r = page[j]
                if r.revokedSeq > m.seq { stayRevoked += 1; continue }
                guard r.createdSeq > m.seq, r.status(clock: clock) == .active else { continue }
                if r.release == TokenRecord.none {
                    unattributed += 1
                } else if knownNumbers.contains(r.release) {
                    keptKnown += 1
                } else {
                    rolledBack.insert(r.release)
                    if policy == .revoke { revoke.append((r.createdSeq, UInt32(p * RecordPages.pageCount + j))) } else { keptUnknown += 1 }
                }
            }
        }
        revoke.sort { $0.0 < $1.0 }
        return RollbackPlan(marker: m, policy: policy, headSeq: lastSeq, headClock: clock, knownReleases: knownNames.sorted(),
                            rolledBackReleases: rolledBack.compactMap { names.name($0) }.sorted(),
                            revoke: revoke.map { ids.id($0.1) }, keptUnknownRelease: keptUnknown, keptKnown: keptKnown,
                            unattributed: unattributed, stayRevoked: stayRevoked)
    }

    /// The events that apply `plan`: a `rollback` marker restoring the target marker's release
    /// and track, then one `revoked` event (reason `rollback`) per token, all at `ts`.
    public func rollbackEvents(_ plan: RollbackPlan, ts: Int64, markerID: String) -> [Event] {
        var events = [Event]()
        events.reserveCapacity(plan.revoke.count + 1)
        events.append(Event(type: .rollback, ts: ts, release: plan.marker.release, track: plan.marker.track, marker: markerID,
                            weight: plan.marker.weight,
                            attrs: ["to_marker": plan.marker.marker, "policy": plan.policy.rawValue,
                                    "revoked": String(plan.revoke.count)]))
        for id in plan.revoke {
            let view = token(id, clock: ts)
            events.append(Event(type: .revoked, ts: ts, token: id, tokenType: view?.tokenType, sub: view?.sub,
                                clientID: view?.clientID, release: view?.release, track: view?.track, reason: "rollback",
                                attrs: ["rollback_marker": markerID]))
        }
        return events
    }
}

/// A rollback checked and ready to append: the plan, and (unless a dry run) the events.
public struct PreparedRollback: Sendable {
    public let plan: RollbackPlan
    /// The chain verified up to the target marker.
    public let verified: VerifyReport
    public let markerID: String
    public let ts: Int64
    /// Empty for a dry run.
    public let events: [Event]
}

extension Projection {
    /// Everything a rollback does before appending, in one place for the CLI and the server:
    /// the marker must exist and not be dated after `nowMs`; the chain must verify up to it;
    /// then the plan, and the events under a marker id not already on the ledger.
    /// - Parameter ledgerDirectory: the segment files to verify (this projection's ledger).
    public func prepareRollback(to id: String, policy: RollbackPolicy, dryRun: Bool, markerID: String?, nowMs: Int64,
                                ledgerDirectory: String) throws(RollbackError) -> PreparedRollback {
        guard let marker = marker(named: id) else {
            let known = markerRecords.map(\.marker)
            throw RollbackError(message: "unknown marker \"\(id)\" (" + (known.isEmpty ? "the ledger has no markers" : "known: " + known.suffix(12).joined(separator: ", ")) + "); nothing changed")
        }
        guard marker.ts <= nowMs else {
            throw RollbackError(message: "marker \(id) is dated \(Timestamp.formatRFC3339(epochMilliseconds: marker.ts) ?? String(marker.ts)), which is not in the past (now \(Timestamp.formatRFC3339(epochMilliseconds: nowMs) ?? String(nowMs))); nothing changed")
        }
        // The decision rests on the history up to the marker: prove it first.
        var verifier = Verifier(directory: ledgerDirectory)
        verifier.stopAtSeq = marker.seq
        let report: VerifyReport
        do { report = try verifier.run() } catch { throw RollbackError(message: "cannot verify the ledger: \(error); nothing changed") }
        if let problem = report.problem {
            throw RollbackError(message: "the ledger's history up to marker \(id) (seq \(marker.seq)) does not verify: \(problem); nothing changed")
        }
        let plan: RollbackPlan
        do { plan = try rollbackPlan(to: id, policy: policy) } catch { throw RollbackError(message: "\(error); nothing changed") }
        let newID = markerID ?? "rollback-\(lastSeq + 1)"
        guard dryRun || self.marker(named: newID) == nil else { throw RollbackError(message: "marker id \(newID) is already on the ledger; nothing changed") }
        let ts = max(nowMs, headClock)
        return PreparedRollback(plan: plan, verified: report, markerID: newID, ts: ts,
                                events: dryRun ? [] : rollbackEvents(plan, ts: ts, markerID: newID))
    }
}
