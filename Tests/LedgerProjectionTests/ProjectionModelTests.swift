// The projection against the naive model (NaiveModel.swift) over seeded random streams
// (RandomStreams.swift): at the head and other clocks, at sequence numbers, at times, at every
// marker, across copy(), and for rollback plans. Every message starts with "seed N"; run
// `PROJECTION_SEED=N swift test --filter LedgerProjectionTests` to replay one seed.
import LedgerModel
import LedgerStorage
import XCTest
@testable import LedgerProjection

// MARK: The projection's answers in the model's shapes

extension ModelToken {
    init(_ v: TokenView) {
        self.init(id: v.id, status: v.status.rawValue, sub: v.sub, clientID: v.clientID, release: v.release, track: v.track,
                  tokenType: v.tokenType, scope: v.scope, createdSeq: v.createdSeq, issuedAt: v.issuedAt, exp: v.exp, lastSeen: v.lastSeen,
                  useCount: v.useCount, revokedSeq: v.revokedSeq, revokedAt: v.revokedAt, revocationReason: v.revocationReason,
                  parent: v.parent, child: v.child)
    }
}

extension ModelSummary {
    init(_ s: StateSummary) {
        var kinds: [String: UInt64] = [:]
        for (k, n) in s.anomalies where n > 0 { kinds[k.name] = n }
        self.init(seq: s.seq, clock: s.clock, events: s.events, tokens: s.tokens, active: s.active, expired: s.expired,
                  revoked: s.revoked, superseded: s.superseded, unknown: s.unknown, anomalies: kinds)
    }
}

extension ModelAnomaly {
    init(_ a: Anomaly) {
        self.init(seq: a.seq, ts: a.ts, kind: a.kind.name, token: a.token, release: a.release, track: a.track,
                  gateway: a.gateway, rate: a.rate, stableRate: a.stableRate)
    }
}

extension ModelMarker {
    init(_ m: MarkerRecord) {
        self.init(seq: m.seq, ts: m.ts, type: m.type.name, marker: m.marker, release: m.release, track: m.track, weight: m.weight)
    }
}

extension ModelPlan {
    init(_ p: RollbackPlan) {
        self.init(markerSeq: p.marker.seq, headSeq: p.headSeq, headClock: p.headClock, knownReleases: p.knownReleases,
                  rolledBackReleases: p.rolledBackReleases, revoke: p.revoke, keptUnknownRelease: p.keptUnknownRelease,
                  keptKnown: p.keptKnown, unattributed: p.unattributed, stayRevoked: p.stayRevoked)
    }
}

/// A value for a failure message; dictionaries sorted by key, so two runs print alike.
func describe(_ value: Any) -> String {
    if let d = value as? [String: UInt64] { return "[" + d.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "]" }
    return "\(value)"
}

/// "field: projection X, model Y" for each field that differs.
func fieldDiff<T>(_ projection: T, _ model: T) -> String {
    let a = Mirror(reflecting: projection).children, b = Mirror(reflecting: model).children
    var parts: [String] = []
    for (x, y) in zip(a, b) where describe(x.value) != describe(y.value) {
        parts.append("\(x.label ?? "?"): projection \(describe(x.value)), model \(describe(y.value))")
    }
    return parts.isEmpty ? "projection \(projection), model \(model)" : parts.joined(separator: "; ")
}

/// Fails with `message` (which starts with the seed) and the differing fields.
func expectEqual<T: Equatable>(_ projection: T, _ model: T, _ message: @autoclosure () -> String,
                               file: StaticString = #filePath, line: UInt = #line) {
    if projection != model { XCTFail("\(message()): \(fieldDiff(projection, model))", file: file, line: line) }
}

/// Fails with `message`, both lengths and the first difference.
func expectEqualLists<T: Equatable>(_ projection: [T], _ model: [T], _ message: @autoclosure () -> String,
                                    file: StaticString = #filePath, line: UInt = #line) {
    guard projection != model else { return }
    let i = zip(projection, model).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(projection.count, model.count)
    let first = i < projection.count && i < model.count ? fieldDiff(projection[i], model[i])
        : "projection \(i < projection.count ? "\(projection[i])" : "-"), model \(i < model.count ? "\(model[i])" : "-")"
    XCTFail("\(message()): projection has \(projection.count), model \(model.count); first difference at #\(i): \(first)",
            file: file, line: line)
}

func entries(_ events: [Event]) -> [Entry] {
    events.enumerated().map { Entry(seq: UInt64($0.offset + 1), event: $0.element) }
}

final class ProjectionModelTests: XCTestCase {
    /// Seeds alternate small and default sample minimums, so the canary's rejection-rate alert
    /// fires in some streams and in others waits for more samples than there are.
    func options(_ seed: UInt64) -> ProjectionOptions {
        let samplesMin: [UInt64] = [10, 30, 80, 500]
        return ProjectionOptions(rejectionFactor: seed % 3 == 0 ? 2 : 3, rejectionSamplesMin: samplesMin[Int(seed % 4)])
    }

    func model(_ e: [Entry], _ o: ProjectionOptions) -> NaiveModel {
        NaiveModel(e, factor: o.rejectionFactor, samplesMin: o.rejectionSamplesMin)
    }

    func replay(_ e: [Entry], _ o: ProjectionOptions) -> Projection {
        let p = Projection(options: o)
        for x in e { p.apply(x.event, seq: x.seq) }
        return p
    }

    /// Compares everything the projection answers with the model at `clock`: counters, the
    /// summary, anomalies, markers, and (when `tokens`) every token's view and status.
    func expectSame(_ p: Projection, _ m: NaiveModel, clock: Int64, tokens: Bool = true, _ at: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(p.lastSeq, m.lastSeq, "\(at): lastSeq", file: file, line: line)
        XCTAssertEqual(p.maxTs, m.maxTs, "\(at): maxTs", file: file, line: line)
        XCTAssertEqual(p.eventCount, m.eventCount, "\(at): eventCount", file: file, line: line)
        XCTAssertEqual(p.duplicateCreations, m.duplicateCreations, "\(at): duplicateCreations", file: file, line: line)

        expectEqual(ModelSummary(p.summary(clock: clock)), m.summary(clock: clock), "\(at): summary at clock \(clock)",
                    file: file, line: line)
        expectEqualLists(p.anomalies.map(ModelAnomaly.init), m.anomalies, "\(at): anomalies", file: file, line: line)
        expectEqualLists(p.markers.map(ModelMarker.init), m.markers, "\(at): markers", file: file, line: line)

        guard tokens else { return }
        var walked: [String: TokenView] = [:]
        var walkedCount = 0
        p.forEachToken(clock: clock) { walked[$0.id] = $0; walkedCount += 1 }
        XCTAssertEqual(walkedCount, walked.count, "\(at): forEachToken lists a token twice", file: file, line: line)
        if Set(walked.keys) != m.allIDs {
            XCTFail("\(at): forEachToken ids: only in projection \(Set(walked.keys).subtracting(m.allIDs).sorted().prefix(5)), "
                    + "only in model \(m.allIDs.subtracting(walked.keys).sorted().prefix(5))", file: file, line: line)
        }
        var reported = 0
        for id in m.ids where reported < 5 {
            let want = m.token(id, clock: clock)!
            guard let view = p.token(id, clock: clock) else {
                XCTFail("\(at): token \(id) missing from the projection (model: \(want))", file: file, line: line)
                reported += 1
                continue
            }
            let got = ModelToken(view)
            if got != want {
                XCTFail("\(at): token \(id) at clock \(clock): \(fieldDiff(got, want))", file: file, line: line)
                reported += 1
            } else if p.status(of: id, clock: clock)?.rawValue != want.status || walked[id] != view {
                XCTFail("\(at): token \(id) at clock \(clock): status(of:) \(String(describing: p.status(of: id, clock: clock))) "
                        + "or forEachToken's view \(String(describing: walked[id])) differs from token(_:clock:) \(view)",
                        file: file, line: line)
                reported += 1
            }
        }
        XCTAssertNil(p.token("never-named-anywhere", clock: clock), "\(at): a token nothing named", file: file, line: line)
        XCTAssertNil(p.status(of: "never-named-anywhere", clock: clock), "\(at): a token nothing named", file: file, line: line)
    }

    /// Some token expiries in the stream (exact values, so `exp == clock` is checked).
    func expiries(_ m: NaiveModel, _ rng: inout SplitMix64, count: Int) -> [Int64] {
        let exps = m.ids.compactMap { m.token($0, clock: 0)?.exp }
        guard !exps.isEmpty else { return [] }
        return (0..<count).map { _ in rng.pick(exps) }
    }

    // MARK: Full replay

    func testFullReplayMatchesModelAtSeveralClocks() {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let e = entries(events)
            let p = replay(e, o), m = model(e, o)
            var rng = SplitMix64(seed: seed &* 31 &+ 7)
            let head = m.maxTs!
            let minTs = events.map(\.ts).min()!
            var clocks: [Int64] = [head, head + 1, minTs - 1, head + 365 * 86_400_000, rng.pick(events).ts]
            let exps = expiries(m, &rng, count: 3)
            clocks += exps + exps.prefix(1).map { $0 - 1 }
            XCTAssertEqual(p.headClock, head, "seed \(seed): headClock")
            for clock in clocks {
                expectSame(p, m, clock: clock, "seed \(seed): full replay of \(events.count) events")
            }
        }
    }

    /// One stream well past the others (about 9,600 tokens with ids of 115-128 bytes): the
    /// projection's id table grows several times and its id arena needs a second page. Head,
    /// an expiry and a time point.
    func testLongStreamMatchesModel() {
        let seed: UInt64 = 4242
        let o = options(seed)
        let events = RandomStream(seed: seed, count: 40_000, longIDs: true).events
        let e = entries(events)
        let p = replay(e, o), m = model(e, o)
        let idBytes = m.ids.reduce(0) { $0 + $1.utf8.count }
        XCTAssertGreaterThan(idBytes, 1 << 20, "seed \(seed): the long stream's ids should fill more than 1 MiB")
        XCTAssertLessThanOrEqual(m.ids.map(\.utf8.count).max() ?? 0, 128, "seed \(seed): ids must not need fingerprinting")
        var rng = SplitMix64(seed: seed)
        for clock in [m.maxTs!] + expiries(m, &rng, count: 1) {
            expectSame(p, m, clock: clock, "seed \(seed): long stream of \(events.count) events")
        }
        let t = rng.pick(events).ts
        let mt = NaiveModel.atTime(events, t, factor: o.rejectionFactor, samplesMin: o.rejectionSamplesMin)
        let pt = Projection(options: o)
        for (i, ev) in events.enumerated() where ev.ts <= t { pt.apply(ev, seq: UInt64(i + 1)) }
        expectSame(pt, mt, clock: t, "seed \(seed): long stream at time \(t)")
    }

    // MARK: State at a point

    func testStateAtSequenceNumbersMatchesModel() {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            var rng = SplitMix64(seed: seed &* 131 &+ 3)
            var points = (0..<2).map { _ in 1 + rng.below(events.count) } + [1, events.count]
            // A point whose clock is exactly some token's exp: the event there stamps that exp.
            let full = model(entries(events), o)
            let exps = Set(full.ids.compactMap { full.token($0, clock: 0)?.exp })
            var maxSoFar = Int64.min
            var atExp: [Int] = []
            for (i, ev) in events.enumerated() {
                maxSoFar = max(maxSoFar, ev.ts)
                if ev.ts == maxSoFar && exps.contains(ev.ts) { atExp.append(i + 1) }
            }
            if !atExp.isEmpty { points.append(rng.pick(atExp)) }
            let all = entries(events)
            for n in points {
                let e = Array(all.prefix(n))
                let p = replay(e, o), m = model(e, o)
                expectSame(p, m, clock: m.maxTs!, "seed \(seed): at seq \(n)")
            }
        }
    }

    func testStateAtTimesMatchesModel() {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            var rng = SplitMix64(seed: seed &* 977 &+ 1)
            let minTs = events.map(\.ts).min()!, maxTs = events.map(\.ts).max()!
            let full = model(entries(events), o)
            // Equal to event timestamps (a lagging gateway's too), to expiries, between, and
            // before everything.
            var times = [rng.pick(events).ts]
            times += events.filter { $0.gateway == "gw-lag" }.prefix(50).map(\.ts).shuffledPick(&rng, 1)
            times += expiries(full, &rng, count: 1)
            times += [minTs - 1, minTs + (maxTs - minTs) / 2]
            for t in times {
                let m = NaiveModel.atTime(events, t, factor: o.rejectionFactor, samplesMin: o.rejectionSamplesMin)
                let p = Projection(options: o)
                for (i, ev) in events.enumerated() where ev.ts <= t { p.apply(ev, seq: UInt64(i + 1)) }
                expectSame(p, m, clock: t, "seed \(seed): at time \(t) (\(m.entries.count) of \(events.count) events)")
            }
        }
    }

    /// Every marker: the state through its seq, with its ts as the clock. A projection carried
    /// along the stream is checked at each (summary, anomalies, markers); a fresh projection fed
    /// the prefix, against a model built from the prefix alone, at a few (everything).
    func testStateAtEveryMarkerMatchesModel() {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let e = entries(events)
            let whole = model(e, o)
            let carried = Projection(options: o)
            var rng = SplitMix64(seed: seed &* 7919)
            var next = 0
            let markerIndices = e.indices.filter { e[$0].event.type.isMarker }
            let fresh = Set(markerIndices.isEmpty ? [] : [rng.pick(markerIndices), markerIndices.last!])
            for i in markerIndices {
                while next <= i { carried.apply(e[next].event, seq: e[next].seq); next += 1 }
                let seq = e[i].seq, clock = e[i].event.ts
                let at = "seed \(seed): at marker \(e[i].event.marker ?? "?") (seq \(seq))"
                expectEqual(ModelSummary(carried.summary(clock: clock)), whole.summary(clock: clock, through: seq), "\(at): summary")
                XCTAssertEqual(carried.lastSeq, seq, at)
                expectEqualLists(carried.anomalies.map(ModelAnomaly.init), whole.anomalies.filter { $0.seq <= seq }, "\(at): anomalies")
                expectEqualLists(carried.markers.map(ModelMarker.init), whole.markers.filter { $0.seq <= seq }, "\(at): markers")
                if fresh.contains(i) {
                    let prefix = Array(e.prefix(i + 1))
                    expectSame(replay(prefix, o), model(prefix, o), clock: clock, "\(at), fresh")
                }
            }
        }
    }

    // MARK: copy()

    func testCopyIsIndependentOfTheOriginal() {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let e = entries(events)
            var rng = SplitMix64(seed: seed ^ 0xC0_FFEE)
            let k = 1 + rng.below(events.count - 1)
            let p = replay(Array(e.prefix(k)), o)
            let c = p.copy()
            let atCopy = model(Array(e.prefix(k)), o)
            // The original moves on; the copy stays at the copy point.
            for x in e.dropFirst(k) { p.apply(x.event, seq: x.seq) }
            expectSame(c, atCopy, clock: atCopy.maxTs!, "seed \(seed): copy at seq \(k) after the original moved on")
            let whole = model(e, o)
            expectSame(p, whole, clock: whole.maxTs!, tokens: false, "seed \(seed): original after copying at \(k)")

            // The copy moves on differently (revoking what it knows); the original is untouched.
            var extra: [Entry] = []
            var seq = p.lastSeq
            for id in atCopy.ids.prefix(25) {
                seq += 1
                extra.append(Entry(seq: seq, event: Event(type: .revoked, ts: whole.maxTs! + 1, token: id, reason: "copy-only")))
            }
            for x in extra { c.apply(x.event, seq: x.seq) }
            let copyModel = model(Array(e.prefix(k)) + extra, o)
            expectSame(c, copyModel, clock: copyModel.maxTs!, "seed \(seed): copy after its own events")
            expectSame(p, whole, clock: whole.maxTs!, "seed \(seed): original after the copy moved on")
        }
    }

    // MARK: The streams reach the cases they are meant to

    /// Not a check of the projection: that the generator produces every case the rules name,
    /// so the model comparisons above are not vacuous.
    func testStreamsExerciseEveryRule() {
        var anomalyKinds: [String: Int] = [:]
        var statuses: [String: Int] = [:]
        var duplicates: UInt64 = 0, revokedBeforeCreated = 0, validatedAtExp = 0, validatedAfterExp = 0
        var backwardsTs = 0, backToBackMarkers = 0, deepChains = 0, rogueReleaseTokens = 0, rejectedNoToken = 0
        var noReleaseOrTrack = 0, expiredEvents = 0, revokeThenValidate = 0, refreshOfSuperseded = 0, mostTokens = 0
        var thresholdTies = 0
        var refreshScopeChanged = 0, refreshWithoutScope = 0, scopedTokens = 0
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let m = model(entries(events), o)
            for a in m.anomalies { anomalyKinds[a.kind, default: 0] += 1 }
            duplicates += m.duplicateCreations
            thresholdTies += m.thresholdTies
            var maxTs = Int64.min
            for (i, ev) in events.enumerated() {
                if ev.ts < maxTs { backwardsTs += 1 }
                maxTs = max(maxTs, ev.ts)
                if i > 0 && ev.type.isMarker && events[i - 1].type.isMarker { backToBackMarkers += 1 }
                if ev.type == .rejected && ev.token == nil { rejectedNoToken += 1 }
                if !ev.type.isMarker && (ev.release == nil || ev.track == nil) { noReleaseOrTrack += 1 }
                if ev.type == .expired { expiredEvents += 1 }
                if ev.type == .validated, let id = ev.token, let t = m.token(id, clock: ev.ts, before: UInt64(i + 1)) {
                    if let exp = t.exp, t.createdSeq != nil { if exp == ev.ts { validatedAtExp += 1 } else if exp < ev.ts { validatedAfterExp += 1 } }
                    if t.revokedSeq != nil { revokeThenValidate += 1 }
                }
                if ev.type == .refreshed, let parent = ev.parent, m.token(parent, clock: 0, before: UInt64(i + 1))?.status == "superseded" {
                    refreshOfSuperseded += 1
                }
                if ev.type == .refreshed, ev.token != nil, let parent = ev.parent, let p = m.token(parent, clock: 0, before: UInt64(i + 1)),
                   p.createdSeq != nil {
                    if ev.scope == nil && p.scope != nil { refreshWithoutScope += 1 } else if ev.scope != p.scope { refreshScopeChanged += 1 }
                }
            }
            mostTokens = max(mostTokens, m.tokensAtHead.count)
            for t in m.tokensAtHead {
                statuses[t.status, default: 0] += 1
                if t.scope != nil { scopedTokens += 1 }
                if let r = t.revokedSeq, let c = t.createdSeq, r < c { revokedBeforeCreated += 1 }
                if let r = t.release, RandomStream.rogueReleases.contains(r) { rogueReleaseTokens += 1 }
                var depth = 0, cur = t
                while let parent = cur.parent, depth < 10, let next = m.token(parent, clock: 0) { depth += 1; cur = next }
                if depth >= 3 { deepChains += 1 }
            }
        }
        let counts: [(String, Int)] = [
            ("duplicate creations", Int(duplicates)), ("tokens revoked before created", revokedBeforeCreated),
            ("validations at exactly exp", validatedAtExp), ("validations after exp", validatedAfterExp),
            ("ts going backwards", backwardsTs), ("back-to-back markers", backToBackMarkers),
            ("chains of 4+ generations", deepChains), ("tokens of releases no marker names", rogueReleaseTokens),
            ("rejections without a token", rejectedNoToken), ("events without release or track", noReleaseOrTrack),
            ("expired events", expiredEvents), ("validations of revoked tokens", revokeThenValidate),
            ("refreshes of a superseded token", refreshOfSuperseded), ("tokens in the largest stream", mostTokens),
            ("rejection rates exactly at the threshold", thresholdTies),
            ("tokens with a scope", scopedTokens), ("refreshes changing the parent's scope", refreshScopeChanged),
            ("refreshes without a scope of a scoped parent", refreshWithoutScope),
        ]
        print("stream coverage over \(Seeds.all.count) seeds: anomalies \(describe(anomalyKinds.mapValues(UInt64.init))), "
              + "statuses at head \(describe(statuses.mapValues(UInt64.init))), "
              + counts.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        guard Seeds.isFullRun else { return }
        for kind in AnomalyKind.allCases { XCTAssertGreaterThan(anomalyKinds[kind.name] ?? 0, 0, "no \(kind.name) anomaly in any seed") }
        for s in TokenStatus.allCases { XCTAssertGreaterThan(statuses[s.rawValue] ?? 0, 0, "no \(s) token at any head") }
        for (what, n) in counts { XCTAssertGreaterThan(n, 0, "the streams have no \(what)") }
    }

    // MARK: Scope

    /// ARCHITECTURE.md "Projection rules" 2, spelled out: the first creating event's scope, on
    /// both apply paths; a refresh's own scope (narrower, wider or none) for the new token; the
    /// parent keeps its own; other events' scopes are not the token's; the record stays 88 bytes.
    func testScopeComesFromTheCreatingEventOnBothPaths() throws {
        XCTAssertEqual(MemoryLayout<TokenRecord>.stride, 88, "a token record grew: 10M tokens cost 10 MB per byte")
        let events = [
            Event(type: .validated, ts: 1, token: "a", scope: "from-a-validation"),
            Event(type: .issued, ts: 2, token: "a", scope: "openid orders:read"),
            Event(type: .issued, ts: 3, token: "a", scope: "duplicate"),
            Event(type: .refreshed, ts: 4, token: "b", scope: "orders:read", parent: "a"),
            Event(type: .refreshed, ts: 5, token: "c", scope: "orders:read admin", parent: "b"),
            Event(type: .refreshed, ts: 6, token: "d", parent: "c"),
            Event(type: .issued, ts: 7, token: "e"),
            Event(type: .revoked, ts: 8, token: "e", scope: "from-a-revocation", reason: "logout"),
        ]
        let want: [String: String?] = ["a": "openid orders:read", "b": "orders:read", "c": "orders:read admin", "d": nil, "e": nil]
        let byEvent = Projection()
        for (i, e) in events.enumerated() { byEvent.apply(e, seq: UInt64(i + 1)) }
        let byBlock = Projection()
        byBlock.apply(try BlockPayloadDecoder.decode(try EncodedBlock(events: events).raw), firstSeq: 1)
        let copied = byEvent.copy()
        for p in [byEvent, byBlock, copied] {
            for (id, scope) in want { XCTAssertEqual(p.token(id, clock: 0)?.scope, scope, "token \(id)") }
        }
        XCTAssertEqual(byEvent.token("d", clock: 0)?.status, .active)
        XCTAssertTrue(byEvent.token("a", clock: 0)?.json.contains(#""scope":"openid orders:read""#) ?? false)
        XCTAssertFalse(byEvent.token("d", clock: 0)?.json.contains("scope") ?? true, "no scope, no key")
        let m = NaiveModel(entries(events))
        for (id, scope) in want { XCTAssertEqual(m.token(id, clock: 0)?.scope, scope, "model: token \(id)") }
    }

    // MARK: Rollback

    func testRollbackPlansMatchModelForEveryMarkerAndPolicy() throws {
        var nonEmpty = 0
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let e = entries(events)
            let p = replay(e, o), m = model(e, o)
            for marker in m.markers {
                for policy in RollbackPolicy.allCases {
                    let plan = try p.rollbackPlan(to: marker.marker, policy: policy)
                    let want = m.rollbackPlan(to: marker.marker, policy: policy)!
                    expectEqual(ModelPlan(plan), want, "seed \(seed): plan to \(marker.marker) (seq \(marker.seq)), \(policy)")
                    expectEqual(ModelMarker(plan.marker), marker, "seed \(seed): plan's marker")
                    XCTAssertEqual(plan.policy, policy, "seed \(seed)")
                    if policy == .revoke && !plan.revoke.isEmpty { nonEmpty += 1 }
                }
            }
            XCTAssertThrowsError(try p.rollbackPlan(to: "no-such-marker", policy: .revoke), "seed \(seed): unknown marker")
        }
        if Seeds.isFullRun { XCTAssertGreaterThan(nonEmpty, 0, "no seed gave a plan that revokes anything") }
    }

    func testRollbackEventsRevokeThePlannedTokens() throws {
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            let p = replay(entries(events), o)
            guard let target = p.markers.first else { continue }
            let plan = try p.rollbackPlan(to: target.marker, policy: .revoke)
            let ts = p.headClock + 5
            let out = p.rollbackEvents(plan, ts: ts, markerID: "rb-\(seed)")
            XCTAssertEqual(out.count, plan.revoke.count + 1, "seed \(seed)")
            XCTAssertEqual(out.first?.type, .rollback, "seed \(seed)")
            XCTAssertEqual(out.first?.marker, "rb-\(seed)", "seed \(seed)")
            XCTAssertEqual(out.first?.release, target.release, "seed \(seed)")
            XCTAssertEqual(out.first?.track, target.track, "seed \(seed)")
            XCTAssertEqual(out.map(\.ts), Array(repeating: ts, count: out.count), "seed \(seed)")
            XCTAssertEqual(out.dropFirst().map(\.type), Array(repeating: .revoked, count: plan.revoke.count), "seed \(seed)")
            XCTAssertEqual(out.dropFirst().map(\.reason), Array(repeating: "rollback", count: plan.revoke.count), "seed \(seed)")
            XCTAssertEqual(out.dropFirst().compactMap(\.token), plan.revoke, "seed \(seed)")

            let keep = try p.rollbackPlan(to: target.marker, policy: .keep)
            let keepEvents = p.rollbackEvents(keep, ts: ts, markerID: "rb-keep-\(seed)")
            XCTAssertEqual(keepEvents.map(\.type), [.rollback], "seed \(seed): policy keep revokes nothing")
            XCTAssertEqual(keep.keptUnknownRelease, plan.revoke.count, "seed \(seed): keep lists what revoke would revoke")
        }
    }

    func testRollbackToLatestMarkerRevokesNothingWhenEveryReleaseIsNamed() throws {
        var keptKnown = 0, earlierRevokes = 0
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed, allReleasesNamed: true).events
            let e = entries(events)
            let p = replay(e, o), m = model(e, o)
            let named = Set(events.filter(\.type.isMarker).compactMap(\.release))
            let onTokens = Set(events.filter { $0.type == .issued || $0.type == .refreshed }.compactMap(\.release))
            XCTAssertTrue(onTokens.isSubset(of: named), "seed \(seed): generator left \(onTokens.subtracting(named)) unnamed")
            guard let latest = p.markers.last else { XCTFail("seed \(seed): no marker"); continue }
            for policy in RollbackPolicy.allCases {
                let plan = try p.rollbackPlan(to: latest.marker, policy: policy)
                XCTAssertEqual(plan.revoke, [], "seed \(seed): rollback to the latest marker \(latest.marker), \(policy)")
                XCTAssertEqual(plan.keptUnknownRelease, 0, "seed \(seed): \(policy)")
                XCTAssertEqual(plan.rolledBackReleases, [], "seed \(seed): \(policy)")
                expectEqual(ModelPlan(plan), m.rollbackPlan(to: latest.marker, policy: policy)!,
                            "seed \(seed): plan to the latest marker \(latest.marker), \(policy)")
                keptKnown += plan.keptKnown
            }
            // Earlier markers knew fewer releases.
            if let first = p.markers.first { earlierRevokes += try p.rollbackPlan(to: first.marker, policy: .revoke).revoke.count }
        }
        if Seeds.isFullRun {
            XCTAssertGreaterThan(keptKnown, 0, "no token created after the latest marker in any seed")
            XCTAssertGreaterThan(earlierRevokes, 0, "no earlier marker's plan revoked anything")
        }
    }

    func testTwoRollbacksInARow() throws {
        var exercised = 0
        for seed in Seeds.all {
            let o = options(seed)
            let events = RandomStream(seed: seed).events
            var e = entries(events)
            let p = replay(e, o)
            // The marker whose plan revokes the most.
            var best: (MarkerRecord, RollbackPlan)?
            for marker in p.markers {
                let plan = try p.rollbackPlan(to: marker.marker, policy: .revoke)
                if plan.revoke.count > (best?.1.revoke.count ?? 0) { best = (marker, plan) }
            }
            guard let (target, first) = best else { continue }
            exercised += 1

            let ts = p.headClock
            for ev in p.rollbackEvents(first, ts: ts, markerID: "rb1-\(seed)") {
                let seq = p.lastSeq + 1
                p.apply(ev, seq: seq)
                e.append(Entry(seq: seq, event: ev))
            }
            let m = model(e, o)
            expectSame(p, m, clock: m.maxTs!, tokens: false, "seed \(seed): after the first rollback to \(target.marker)")
            for id in first.revoke {
                let t = p.token(id, clock: p.headClock)
                XCTAssertEqual(t?.status, .revoked, "seed \(seed): \(id) after rollback")
                XCTAssertEqual(t?.revocationReason, "rollback", "seed \(seed): \(id) after rollback")
                if let t { expectEqual(ModelToken(t), m.token(id, clock: m.maxTs!)!, "seed \(seed): \(id) after rollback") }
            }

            let second = try p.rollbackPlan(to: target.marker, policy: .revoke)
            let want = m.rollbackPlan(to: target.marker, policy: .revoke)!
            expectEqual(ModelPlan(second), want, "seed \(seed): second plan to \(target.marker)")
            XCTAssertEqual(second.revoke, [], "seed \(seed): the second rollback has nothing left to revoke")
            XCTAssertTrue(Set(second.revoke).isDisjoint(with: first.revoke), "seed \(seed): revoked twice")
            XCTAssertEqual(second.stayRevoked, first.stayRevoked + first.revoke.count,
                           "seed \(seed): the first rollback's revocations stay revoked")
            XCTAssertEqual(ModelMarker(p.markers.last!).marker, "rb1-\(seed)", "seed \(seed)")

            // And to every marker after the rollback, still the model's plan.
            for marker in m.markers {
                let plan = try p.rollbackPlan(to: marker.marker, policy: .revoke)
                let want = m.rollbackPlan(to: marker.marker, policy: .revoke)!
                expectEqual(ModelPlan(plan), want, "seed \(seed): after a rollback, plan to \(marker.marker)")
            }
        }
        if Seeds.isFullRun { XCTAssertGreaterThan(exercised, 10, "too few seeds had a plan that revokes anything") }
    }
}

private extension Array {
    /// `n` elements picked at random (repeats allowed); none from an empty array.
    func shuffledPick(_ rng: inout SplitMix64, _ n: Int) -> [Element] {
        isEmpty ? [] : (0..<n).map { _ in self[rng.below(count)] }
    }
}
