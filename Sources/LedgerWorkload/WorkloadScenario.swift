import LedgerModel

// The scripted storyline of a workload: deployment markers and two planted tokens, placed at fixed
// fractions of the event count so that even a 1,000-event workload tells the whole story. It is a
// pure function of the configuration (its own random stream, independent of traffic), so the demo
// and tests can know what to look for without generating anything.
//
// The story: stable v1.4.2 (m-0001); a good canary v1.4.3 at weight 10 (m-0002, 5%) that is
// promoted (m-0003, 40%); then a bad canary v1.5.0 at weight 10 (m-0004, 60%), widened to 25
// (m-0005, 85%) and never rolled back — the rollback is left to the operator. The bad canary's
// gateway rejects good tokens with invalid_signature and accepts revoked tokens. A CI deploy key
// leaks: revoked as compromised at 70%, replayed from an attacker's address through the canary at
// 75% and 80% (validated: the anomaly), and rejected by a stable gateway at 76%. Early on (2%) a
// web token is logged as a raw JWT, which ingest must fingerprint; it is used 7 and 19 events later.

/// What a workload contains, for demos and tests: its markers and planted tokens with their
/// zero-based event indices (the ledger's `seq` is the index + 1 when the file is appended whole).
public struct WorkloadScenario: Sendable, Equatable {
    public struct Marker: Sendable, Equatable {
        public var id: String
        public var type: EventType
        public var release: String
        public var track: String
        public var weight: Int
        public var eventIndex: Int
    }

    /// An API key revoked with reason `compromised` and then validated again by the bad canary.
    public struct CompromisedToken: Sendable, Equatable {
        public var token: String
        public var tokenType: String
        public var sub: String
        public var clientID: String
        /// The key owner's address; the replays after revocation come from `attackerIP`.
        public var clientIP: String
        public var attackerIP: String
        public var issuedIndex: Int
        /// Legitimate uses before the revocation, served by stable gateways.
        public var validatedIndices: [Int]
        public var revokedIndex: Int
        /// Uses after the revocation that the bad canary accepted (`validated`, status 200).
        public var revalidatedIndices: [Int]
        /// Uses after the revocation that a stable gateway refused (`rejected`, reason `revoked`).
        public var rejectedIndices: [Int]
    }

    /// A token that appears on the wire as a raw JWT (header.payload.signature).
    public struct RawJWT: Sendable, Equatable {
        public var token: String
        public var sub: String
        public var clientID: String
        public var issuedIndex: Int
        public var validatedIndices: [Int]
    }

    public var events: Int
    public var gateways: [String]
    /// The gateway node that runs the canary track while a canary is deployed.
    public var canaryGateway: String
    /// The stable release at the start (m-0001).
    public var initialRelease: String
    /// The known-good release: canaried at m-0002, promoted to stable at m-0003, stable when the
    /// bad canary arrives.
    public var stableRelease: String
    /// The misbehaving canary release (m-0004, m-0005).
    public var badCanaryRelease: String
    /// In event order; markers that do not fit in a tiny workload are left out.
    public var markers: [Marker]
    /// The marker that introduced the bad canary; nil when the workload is too short to reach it.
    public var badCanaryMarker: String?
    /// The last marker before the bad canary (the rollback target); nil when there are no markers.
    public var lastGoodMarker: String?
    /// nil when the workload is too short to hold the whole story (fewer than ~20 events).
    public var compromised: CompromisedToken?
    /// nil when the workload is too short to hold it.
    public var rawJWT: RawJWT?

    /// The scripted events in index order, consumed by the generator.
    var script: [ScriptItem]

    /// - Parameter configuration: used as `configuration.effective`.
    public init(_ configuration: WorkloadConfiguration) {
        let configuration = configuration.effective
        events = configuration.events
        rawJWTUser = 0
        gateways = Catalog.gateways
        canaryGateway = Catalog.gateways[Catalog.canaryGatewayIndex]
        initialRelease = Release.initial.text
        stableRelease = Release.good.text
        badCanaryRelease = Release.bad.text

        var mixer = SplitMix64(seed: configuration.seed ^ 0x5CE7_A210_0000_0001)
        var rng = Xoshiro256StarStar(seed: mixer.next())
        let markerPlan = WorkloadScenario.markerPlan
        let placed = WorkloadScenario.place(WorkloadScenario.plan(), events: configuration.events)
        script = placed

        markers = placed.compactMap { item in
            guard case .marker(let m) = item.action else { return nil }
            let p = markerPlan[m]
            return Marker(id: p.id, type: p.type, release: p.release.text, track: p.track.text, weight: p.weight, eventIndex: item.index)
        }
        let badIndex = markers.firstIndex { $0.release == Release.bad.text }
        badCanaryMarker = badIndex.map { markers[$0].id }
        lastGoodMarker = badIndex.map { $0 > 0 ? markers[$0 - 1].id : nil } ?? markers.last?.id

        let ciToken = TokenText.tokenID(&rng)
        let jwtUser = rng.below(configuration.subjects)
        let jwtID = TokenText.tokenID(&rng)
        let indices = { (wanted: (ScriptAction) -> Bool) in placed.filter { wanted($0.action) }.map(\.index) }

        let issued = indices { $0 == .compromisedIssued }
        if let issuedIndex = issued.first, let revokedIndex = indices({ $0 == .compromisedRevoked }).first {
            let ci = Catalog.machineSubjects[Catalog.ciSubject]
            let client = Catalog.allClients[Catalog.ciClientIndex]
            compromised = CompromisedToken(
                token: ciToken, tokenType: client.tokenType.text, sub: ci.name, clientID: client.id,
                clientIP: ci.ip, attackerIP: Catalog.attackerIP, issuedIndex: issuedIndex,
                validatedIndices: indices { $0 == .compromisedValidated }, revokedIndex: revokedIndex,
                revalidatedIndices: indices { $0 == .compromisedReplayAccepted },
                rejectedIndices: indices { $0 == .compromisedReplayRejected })
        } else {
            compromised = nil
        }

        if let issuedIndex = indices({ $0 == .rawJWTIssued }).first {
            let web = Catalog.clients[Catalog.webClientIndex]
            let sub = SubjectTable.userName(jwtUser)
            // The real issue time is only known while generating; the claims use the expected one
            // (3 ms per event), which is what a slightly skewed issuer clock would show.
            let expectedIssueMs = configuration.startMs + Int64(issuedIndex) * 3
            let jwt = TokenText.rawJWT(jti: jwtID, iss: web.iss, sub: sub, aud: web.aud, clientID: web.id, scope: web.scope,
                                       issuedAtMs: expectedIssueMs, lifetimeMs: web.lifetimeMs, rng: &rng)
            rawJWT = RawJWT(token: jwt, sub: sub, clientID: web.id, issuedIndex: issuedIndex,
                            validatedIndices: indices { $0 == .rawJWTValidated })
            rawJWTUser = jwtUser
        } else {
            rawJWT = nil
        }
    }

    /// Subject index of `rawJWT`'s user, so the generator can use that user's fixed address.
    var rawJWTUser: Int

    // MARK: - Plan

    struct MarkerPlan {
        let id: String
        let type: EventType
        let release: Release
        let track: Track
        let weight: Int
        /// Position as a fraction of the event count, in basis points.
        let basisPoints: Int
    }

    static let markerPlan: [MarkerPlan] = [
        MarkerPlan(id: "m-0001", type: .deploy, release: .initial, track: .stable, weight: 100, basisPoints: 0),
        MarkerPlan(id: "m-0002", type: .deploy, release: .good, track: .canary, weight: 10, basisPoints: 500),
        MarkerPlan(id: "m-0003", type: .promote, release: .good, track: .stable, weight: 100, basisPoints: 4_000),
        MarkerPlan(id: "m-0004", type: .deploy, release: .bad, track: .canary, weight: 10, basisPoints: 6_000),
        MarkerPlan(id: "m-0005", type: .deploy, release: .bad, track: .canary, weight: 25, basisPoints: 8_500),
    ]

    typealias PlanItem = (basisPoints: Int, offset: Int, action: ScriptAction)

    private static func plan() -> [PlanItem] {
        var items: [PlanItem] = markerPlan.enumerated().map { ($0.element.basisPoints, 0, .marker($0.offset)) }
        // The JWT's uses follow its issue by a fixed number of events, not a fraction: in a huge
        // workload a fraction would land after its 15-minute expiry.
        items += [(200, 0, .rawJWTIssued), (200, 7, .rawJWTValidated), (200, 19, .rawJWTValidated)]
        items += [(1_200, 0, .compromisedIssued), (1_500, 0, .compromisedValidated), (2_500, 0, .compromisedValidated),
                  (4_500, 0, .compromisedValidated), (6_500, 0, .compromisedValidated), (7_000, 0, .compromisedRevoked),
                  (7_500, 0, .compromisedReplayAccepted), (7_600, 0, .compromisedReplayRejected),
                  (8_000, 0, .compromisedReplayAccepted)]
        // Stable sort: equal positions keep plan order.
        return items.enumerated()
            .sorted { ($0.element.basisPoints, $0.element.offset, $0.offset) < ($1.element.basisPoints, $1.element.offset, $1.offset) }
            .map(\.element)
    }

    /// Gives every item a distinct index at or after its fraction of `events`; a story (the JWT,
    /// the compromised key) is kept only if all of its items fit, so no story is half told.
    private static func place(_ items: [PlanItem], events: Int) -> [ScriptItem] {
        func assign(_ items: [PlanItem]) -> [ScriptItem] {
            var out = [ScriptItem]()
            var previous = -1
            for item in items {
                let fraction = events / 10_000 * item.basisPoints + events % 10_000 * item.basisPoints / 10_000
                let index = max(fraction + item.offset, previous + 1)
                guard index < events else { break }
                out.append(ScriptItem(index: index, action: item.action))
                previous = index
            }
            return out
        }
        let first = assign(items)
        let storyLength = { (story: ScriptAction.Story) in items.filter { $0.action.story == story }.count }
        let complete = Set(ScriptAction.Story.allCases.filter { story in
            first.filter { $0.action.story == story }.count == storyLength(story)
        })
        return assign(items.filter { $0.action.story == nil || complete.contains($0.action.story!) })
    }
}

enum ScriptAction: Equatable, Sendable {
    case marker(Int)
    case rawJWTIssued, rawJWTValidated
    case compromisedIssued, compromisedValidated, compromisedRevoked, compromisedReplayAccepted, compromisedReplayRejected

    enum Story: CaseIterable { case rawJWT, compromised }

    var story: Story? {
        switch self {
        case .marker: nil
        case .rawJWTIssued, .rawJWTValidated: .rawJWT
        default: .compromised
        }
    }
}

struct ScriptItem: Equatable, Sendable {
    let index: Int
    let action: ScriptAction
}
