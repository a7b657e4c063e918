// Seeded random event streams for the model tests. Each stream mixes the cases the token rules
// have to get right: refresh chains over several generations, revoke-then-validate, validations
// after and exactly at `exp`, gateways whose clocks lag (ts going backwards), duplicate issues,
// tokens revoked before they are issued, `expired` events, validations of ids never issued,
// rejections with and without a token, events without release/track, markers back to back, a
// canary release with a high rejection rate, and releases no marker names.
//
// The generator keeps only the bookkeeping it needs to aim at those cases; it never decides
// what a token's state is (that is the model's job).
import Foundation
import LedgerModel

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same on every platform.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<n` (`n` > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    mutating func between(_ lo: Int64, _ hi: Int64) -> Int64 { lo + Int64(next() % UInt64(hi - lo + 1)) }

    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }

    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// With probability `p` one of `items`, else nil.
    mutating func maybe<T>(_ p: Double, from items: [T]) -> T? { chance(p) ? pick(items) : nil }
}

/// The seeds every test loops over. `PROJECTION_SEED=n` runs only seed n (to reproduce one).
enum Seeds {
    static var all: [UInt64] { single.map { [$0] } ?? Array(1...40) }

    static var single: UInt64? { ProcessInfo.processInfo.environment["PROJECTION_SEED"].flatMap { UInt64($0) } }

    /// Whether checks over all seeds together (coverage, "some seed did X") apply.
    static var isFullRun: Bool { single == nil }

    /// The stream length for a seed: 200...3000 events, short ones more often (the tests that
    /// rebuild state at every marker cost the square of the length).
    static func length(_ seed: UInt64) -> Int {
        var r = SplitMix64(seed: seed ^ 0x5EED_1E46)
        let u = Double(r.below(1_000_001)) / 1_000_000
        return 200 + Int(2800 * u * u)
    }
}

struct RandomStream {
    /// Releases markers may name.
    static let markedReleases = ["r1", "r2", "r3", "r4", "r-canary"]
    /// Releases no marker ever names (unless `allReleasesNamed`).
    static let rogueReleases = ["r-rogue", "r-hotfix"]
    static let canaryRelease = "r-canary"

    let seed: UInt64
    let events: [Event]

    /// - Parameters:
    ///   - allReleasesNamed: no rogue releases, and at 90% of the stream, markers naming every
    ///     release no marker named yet (token events follow them).
    ///   - longIDs: token ids of 115-128 bytes (not over the 128 that get fingerprinted), so a
    ///     long stream's ids fill more than one 1 MiB page of the projection's id arena.
    init(seed: UInt64, count: Int? = nil, allReleasesNamed: Bool = false, longIDs: Bool = false) {
        self.seed = seed
        var g = Generator(seed: seed, allReleasesNamed: allReleasesNamed)
        if longIDs { g.idPadding = "-" + String(repeating: "0123456789", count: 11).dropLast() }  // ids up to 128 bytes
        events = g.run(count: count ?? Seeds.length(seed))
    }
}

private struct Generator {
    let seed: UInt64
    var rng: SplitMix64
    let allReleasesNamed: Bool
    /// Appended to every token id (long ids); empty by default.
    var idPadding = ""
    var out: [Event] = []
    var now: Int64
    var serial = 0
    /// In every fifth seed no rejection at all before this many events: both sides of the
    /// rejection-rate comparison sit at 0 while they pass the sample minimum (0 > 0 is false).
    var quietUntil = 0

    /// Ids created by `issued`/`refreshed` (in creation order), with the exp they were given.
    var created: [String] = []
    var expOf: [String: Int64] = [:]
    /// Newest token of each refresh chain.
    var tips: [String] = []
    var revokedIDs: [String] = []
    var ghosts: [String] = []
    /// Named (revoked, validated) before anything issued them; the issue path takes some.
    var issueLater: [String] = []
    var releasesOnMarkers = Set<String>()

    let gateways = ["gw-a", "gw-b", "gw-c", "gw-lag"]
    let subs = (0..<40).map { "user-\($0)" }
    let clients = (0..<6).map { "app-\($0)" }
    let tokenTypes: [String?] = ["access", "refresh", "api_key", "id", nil]
    /// Scopes of creating events; a refresh sometimes narrows or widens its parent's, or has none.
    let scopes: [String?] = ["openid profile", "orders:read", "orders:read orders:write", "admin", "", nil]

    init(seed: UInt64, allReleasesNamed: Bool) {
        self.seed = seed
        rng = SplitMix64(seed: seed)
        self.allReleasesNamed = allReleasesNamed
        now = 1_700_000_000_000 + Int64(seed % 1000) * 86_400_000
    }

    var quiet: Bool { out.count < quietUntil }

    var releases: [String] { allReleasesNamed ? RandomStream.markedReleases : RandomStream.markedReleases + RandomStream.rogueReleases }

    mutating func newID(_ prefix: String) -> String {
        serial += 1
        return prefix == "m-" ? "\(prefix)\(serial)" : "\(prefix)\(serial)\(idPadding)"
    }

    /// A gateway and the ts it stamps: `gw-lag` runs up to 2.5 s behind, others jitter a little.
    mutating func stamp() -> (String, Int64) {
        let gw = rng.pick(gateways)
        if gw == "gw-lag" { return (gw, now - rng.between(0, 2500)) }
        return (gw, now + rng.between(-3, 3))
    }

    mutating func run(count: Int) -> [Event] {
        if seed % 5 == 0 { quietUntil = count / 3 }
        // A first marker so most streams have history before and after markers.
        if rng.chance(0.7) { marker() }
        var namedAll = false
        while out.count < count {
            now += rng.between(0, 40)
            if allReleasesNamed && !namedAll && out.count >= count * 9 / 10 {
                // Back-to-back markers naming every release no marker named yet; tokens follow.
                for r in Set(RandomStream.markedReleases).subtracting(releasesOnMarkers).sorted() {
                    out.append(Event(type: .deploy, ts: now, gateway: "ctl", release: r, track: "stable",
                                     marker: newID("m-"), weight: 100))
                    releasesOnMarkers.insert(r)
                }
                namedAll = true
            }
            switch rng.below(83) {  // 78...82: a canary burst, several events
            case 0..<14: issue()
            case 14..<24: refresh()
            case 24..<54: verdict()
            case 54..<58: validateAtOrAfterExp()
            case 58..<62: revoke()
            case 62..<64: revokeBeforeIssue()
            case 64..<67: expiredEvent()
            case 67..<70: duplicateIssue()
            case 70..<73: validateGhost()
            case 73..<75: marker()
            case 75..<78: refreshOddity()
            default: canaryBurst()
            }
        }
        if out.count > count { out.removeLast(out.count - count) }
        return out
    }

    // MARK: Token events

    mutating func claims() -> (String?, String?) {
        (rng.maybe(0.7, from: subs), rng.maybe(0.6, from: clients))
    }

    mutating func releaseAndTrack() -> (String?, String?) {
        let release = rng.maybe(0.85, from: releases)
        let track = rng.maybe(0.8, from: ["stable", "canary", "blue", "green"])
        return (release, track)
    }

    mutating func expiry(_ ts: Int64) -> Int64? {
        rng.chance(0.85) ? ts + rng.between(200, 30_000) : nil
    }

    mutating func issue() {
        let id: String
        if !issueLater.isEmpty && rng.chance(0.3) {
            id = issueLater.removeFirst()  // revoked before it was issued
        } else {
            id = newID("t")
        }
        let (gw, ts) = stamp()
        let (sub, client) = claims()
        let (release, track) = releaseAndTrack()
        let exp = expiry(ts)
        out.append(Event(type: .issued, ts: ts, token: id, tokenType: rng.pick(tokenTypes), sub: sub, clientID: client,
                         scope: rng.pick(scopes), exp: exp, gateway: gw, release: release, track: track))
        created.append(id)
        if let exp { expOf[id] = exp }
        tips.append(id)
    }

    /// A refresh, usually of a chain's newest token, so chains grow over generations.
    mutating func refresh() {
        let parent: String
        if !tips.isEmpty && rng.chance(0.8) {
            let i = rng.below(tips.count)
            parent = tips[i]
            tips.remove(at: i)
        } else if !created.isEmpty {
            parent = rng.pick(created)  // may already be superseded: a second child
        } else {
            parent = newID("ghost-parent-")
        }
        let id = newID("t")
        let (gw, ts) = stamp()
        let (sub, client) = claims()
        let (release, track) = releaseAndTrack()
        let exp = expiry(ts)
        out.append(Event(type: .refreshed, ts: ts, token: id, tokenType: rng.pick(tokenTypes), sub: sub, clientID: client,
                         scope: rng.pick(scopes), exp: exp, parent: parent, gateway: gw, release: release, track: track))
        created.append(id)
        if let exp { expOf[id] = exp }
        tips.append(id)
    }

    /// Refreshes the rules treat specially: token == parent, no token, a refresh re-creating an
    /// existing token, a parent never issued.
    mutating func refreshOddity() {
        let (gw, ts) = stamp()
        switch rng.below(4) {
        case 0:
            let id = created.isEmpty ? newID("t") : rng.pick(created)
            out.append(Event(type: .refreshed, ts: ts, token: id, exp: expiry(ts), parent: id, gateway: gw))
        case 1:
            guard let p = created.isEmpty ? nil : rng.pick(created) else { return }
            out.append(Event(type: .refreshed, ts: ts, parent: p, gateway: gw, release: rng.pick(releases)))
        case 2:
            guard !created.isEmpty else { return }
            let id = rng.pick(created)
            let p = rng.pick(created)
            out.append(Event(type: .refreshed, ts: ts, token: id, sub: rng.pick(subs), scope: "re-created", exp: expiry(ts), parent: p,
                             gateway: gw, release: rng.pick(releases), track: "blue"))
        default:
            let id = newID("t")
            out.append(Event(type: .refreshed, ts: ts, token: id, exp: expiry(ts), parent: newID("ghost-parent-"),
                             gateway: gw, release: rng.maybe(0.5, from: releases)))
            created.append(id)
            tips.append(id)
        }
    }

    mutating func duplicateIssue() {
        guard !created.isEmpty else { return issue() }
        let id = rng.pick(created)
        let (gw, ts) = stamp()
        out.append(Event(type: .issued, ts: ts, token: id, tokenType: rng.pick(tokenTypes), sub: rng.pick(subs),
                         scope: "duplicate-issue", exp: ts + rng.between(-5_000, 60_000), gateway: gw, release: rng.pick(releases),
                         track: rng.pick(["stable", "canary"])))
    }

    /// Any token the ledger has named, weighted towards recent and revoked ones.
    mutating func someToken() -> String? {
        let r = rng.below(100)
        if r < 10, !revokedIDs.isEmpty { return rng.pick(revokedIDs) }
        if r < 15, !ghosts.isEmpty { return rng.pick(ghosts) }
        guard !created.isEmpty else { return nil }
        if r < 70 { return created[max(0, created.count - 1 - rng.below(min(created.count, 60)))] }
        return rng.pick(created)
    }

    /// Where a verdict was served: (release, track, rejection probability).
    mutating func serving() -> (String?, String?, Double) {
        switch rng.below(100) {
        case 0..<55: return (rng.pick(["r1", "r2"]), "stable", 0.08)
        case 55..<70: return (RandomStream.canaryRelease, "canary", 0.5)
        case 70..<78: return ("r3", "blue", 0.1)
        case 78..<84: return (rng.pick(releases), nil, 0.2)  // release without track
        case 84..<88: return (nil, "stable", 0.2)  // track without release
        default: return (nil, nil, 0.2)
        }
    }

    mutating func verdict() {
        let (release, track, pReject) = serving()
        let (gw, ts) = stamp()
        if rng.chance(pReject) && !quiet {
            let token = rng.chance(0.15) ? nil : someToken()
            let reason = rng.pick(["invalid_signature", "expired", "revoked", "malformed", "missing", "insufficient_scope"])
            out.append(Event(type: .rejected, ts: ts, token: token, sub: rng.maybe(0.2, from: subs), gateway: gw,
                             release: release, track: track, status: 401, reason: reason))
        } else {
            guard let token = someToken() else { return }
            // A `parent` field on a non-refresh event means nothing, even naming an id never seen.
            let parent = !created.isEmpty && rng.chance(0.05) ? rng.pick(created) : rng.chance(0.02) ? newID("stray-parent-") : nil
            out.append(Event(type: .validated, ts: ts, token: token, sub: rng.maybe(0.3, from: subs),
                             clientID: rng.maybe(0.3, from: clients), scope: parent == nil ? nil : "validation-scope", parent: parent, gateway: gw,
                             release: release, track: track, status: 200))
        }
    }

    /// Stable and canary traffic in one run, the canary rejecting far more often.
    mutating func canaryBurst() {
        for _ in 0..<rng.below(7) + 3 {
            let canary = rng.chance(0.4)
            let rejected = rng.chance(canary ? 0.6 : 0.05) && !quiet
            let (gw, ts) = stamp()
            let token = someToken()
            out.append(Event(type: rejected ? .rejected : .validated, ts: ts, token: rejected && rng.chance(0.3) ? nil : token,
                             gateway: gw, release: canary ? RandomStream.canaryRelease : "r1",
                             track: canary ? "canary" : "stable", reason: rejected ? "invalid_signature" : nil))
            now += rng.between(0, 5)
        }
    }

    /// A validation exactly at a token's exp, or after it; and sometimes another event at exactly
    /// that exp, so `exp == clock` comes up at "at seq N".
    mutating func validateAtOrAfterExp() {
        guard !created.isEmpty else { return }
        // Prefer a token whose exp is near now.
        var best: (String, Int64)?
        for _ in 0..<8 {
            let id = rng.pick(created)
            guard let e = expOf[id] else { continue }
            if best == nil || abs(e - now) < abs(best!.1 - now) { best = (id, e) }
        }
        guard let (id, exp) = best else { return }
        let gw = rng.pick(gateways)
        let ts = rng.chance(0.6) ? exp : max(exp, now) + rng.between(1, 3_000)
        let type: EventType = rng.chance(0.85) || quiet ? .validated : .rejected
        out.append(Event(type: type, ts: ts, token: id, gateway: gw, release: "r1", track: "stable",
                         reason: type == .rejected ? "expired" : nil))
    }

    mutating func revoke() {
        guard let id = someToken() else { return }
        let (gw, ts) = stamp()
        out.append(Event(type: .revoked, ts: ts, token: id, sub: rng.maybe(0.2, from: subs), gateway: gw,
                         reason: rng.maybe(0.8, from: ["user_logout", "compromised", "admin", "password_change"])))
        revokedIDs.append(id)
        // Revoke, then validate right away (a gateway with a stale cache).
        if rng.chance(0.5) {
            let (gw2, ts2) = stamp()
            out.append(Event(type: .validated, ts: ts2, token: id, gateway: gw2, release: "r2", track: "stable"))
        }
    }

    mutating func revokeBeforeIssue() {
        let id = newID("pre")
        let (gw, ts) = stamp()
        out.append(Event(type: .revoked, ts: ts, token: id, gateway: gw, reason: "compromised"))
        issueLater.append(id)
        revokedIDs.append(id)
    }

    mutating func expiredEvent() {
        let id: String
        if rng.chance(0.1) { id = newID("never-") } else if let t = someToken() { id = t } else { return }
        let (gw, ts) = stamp()
        out.append(Event(type: .expired, ts: ts, token: id, gateway: gw))
    }

    /// A validation (or rejection) of an id nothing issued; sometimes issued later.
    mutating func validateGhost() {
        let id = ghosts.isEmpty || rng.chance(0.6) ? newID("ghost") : rng.pick(ghosts)
        ghosts.append(id)
        let (gw, ts) = stamp()
        out.append(Event(type: rng.chance(0.8) ? .validated : .rejected, ts: ts, token: id, sub: rng.maybe(0.5, from: subs),
                         gateway: gw, release: rng.maybe(0.5, from: ["r1"]), track: rng.maybe(0.5, from: ["stable"]),
                         reason: "unknown"))
        if rng.chance(0.2) { issueLater.append(id) }  // the issue path may create it later
    }

    // MARK: Markers

    mutating func marker() {
        let n = rng.chance(0.3) ? 2 + rng.below(2) : 1  // back to back
        for _ in 0..<n {
            let type: EventType = rng.pick([.deploy, .deploy, .promote, .rollback])
            let release = rng.chance(0.93) ? rng.pick(RandomStream.markedReleases) : nil
            let track = release == nil ? nil : (release == RandomStream.canaryRelease ? "canary" : rng.pick(["stable", "blue"]))
            if let release { releasesOnMarkers.insert(release) }
            let (gw, ts) = stamp()
            out.append(Event(type: type, ts: ts, gateway: rng.chance(0.5) ? "ctl" : gw, release: release, track: track,
                             marker: newID("m-"), weight: rng.maybe(0.6, from: Array(0...100))))
        }
    }
}
