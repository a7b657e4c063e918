import LedgerModel

// The traffic model. A ring of `tokens` session slots holds interactive sessions in the order
// they started; each request draws a rank heavily skewed to the newest slots, plus a thin uniform
// tail of returning, idle sessions. New sessions arrive at a fixed rate, and also whenever a few
// draws find only finished ones; each takes the oldest slot. A session has a geometric budget of
// requests, often in bursts, so a token recurs mostly within a few hundred to a couple of
// thousand events of its issue: the temporal locality that lets per-block string dictionaries
// and LZ4 store ~14 bytes per event. The arrival rate and the per-client budgets set the mix.
//
// Tokens outlive that burst of use, so two more populations make expiry real: sessions evicted
// from the ring are archived and their users come back after 5+ minutes (by then a mobile
// token has expired: a 401 `expired` or a refresh ahead of it), and a few long-running daemons
// (partner integrations, report workers, open dashboards) renew their tokens again and again.
// Everything starts cold: nothing expires before the shortest lifetime (2 min, ~40k events).
//
// On top of that: refreshes (new token, `parent` = old one), logouts and admin revocations (with
// clients that keep presenting the revoked token for a request or two), rejections, expirations
// found by a sweeper after `exp`, API keys shared by many sessions, per-gateway clock skew, and the
// scripted story of `WorkloadScenario` (markers, the leaked key, the raw JWT) at fixed indices.
//
// Decisions produce `EventDraft`s (indices, not strings); `next()` materializes them as `Event`s
// and `writeNDJSON` encodes them straight to bytes.

/// A seeded, deterministic stream of realistic token lifecycle events.
public struct WorkloadGenerator {
    public let configuration: WorkloadConfiguration
    public let scenario: WorkloadScenario
    /// Events returned so far; the index of the next event.
    public private(set) var emitted = 0
    private var typeCounts = [Int](repeating: 0, count: 32)

    private var rng: Xoshiro256StarStar
    private var now: Int64
    private let gatewaySkewMs: [Int64]
    private(set) var subjects: SubjectTable
    private let script: [ScriptItem]
    private var scriptCursor = 0

    private var stableRelease = Release.initial
    private var canaryRelease: Release?
    private var canaryWeight = 0

    /// The ring of interactive sessions (`ringSize` slots), then one slot per `Catalog.daemons` entry.
    private var sessions: [Session]
    private let ringSize: Int
    /// The ring slot the next new session takes: the oldest one.
    private var head = 0
    private var filled = 0
    /// Width of the skewed rank draw; the mean rank is a quarter of it.
    private let hotWindow: UInt64
    private var burstSlot = -1
    /// Sessions evicted from the ring that could come back (they hold a refresh token): a FIFO
    /// ring buffer of at most `archiveCapacity`, oldest at `archiveStart`.
    private var archive: [Session] = []
    private var archiveStart = 0
    private var archiveCount = 0

    private var pending: [EventDraft] = []
    private var pendingHead = 0

    private var tokenStates: [TokenState] = []
    private var expiryQueues: [ExpiryQueue] = []
    /// Tokens expiring after this simulated time cannot expire within the workload; not queued.
    private let expiryHorizonMs: Int64
    private var apiKeys: [[PooledKey]]

    private var compromisedSerial: Int32 = -1

    // Rates, per million.
    private static let newSessionPerMillion = 36_000
    private static let tailDrawPerMillion = 50_000
    private static let rejectPerMillion = 30_000
    private static let badCanaryRejectPerMillion = 350_000
    private static let staleRevokedUsePerMillion = 150_000
    private static let adminRevokeKeyPerMillion = 2_000
    private static let requestIDPerMillion = 5_000
    private static let newAPIKeyPerMillion = 20_000
    private static let drawAttempts = 6
    private static let hotWindowMax = 800
    private static let sweepDelayMs: Int64 = 2_000
    /// Clients that renew ahead of expiry do so in this window before `exp`.
    private static let renewAheadMs: Int64 = 60_000
    /// Share of sessions whose client library renews only after a 401 `expired`.
    private static let lazyRenewalPerMillion = 300_000
    private static let daemonUsesContinuePerMillion = 999_500
    /// Share of new interactive sessions that are users coming back to an idle session.
    private static let returnPerMillion = 350_000
    /// Returning users come back to sessions whose token is at least this old.
    private static let returnAfterMs: Int64 = 5 * 60_000
    /// Enough for far more than `returnAfterMs` of evictions; the oldest are dropped.
    private static let archiveCapacity = 65_536
    private static let maxStepMs: Int64 = 6

    /// The value gateways log for a request without credentials: the fingerprint of the empty string.
    static let missingTokenFingerprint = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// - Parameter configuration: used as `configuration.effective`.
    public init(_ configuration: WorkloadConfiguration) {
        let configuration = configuration.effective
        self.configuration = configuration
        scenario = WorkloadScenario(configuration)
        script = scenario.script
        rng = Xoshiro256StarStar(seed: configuration.seed)
        now = configuration.startMs
        // Each gateway's clock is off by a fixed -4...+4 ms, so timestamps interleave slightly out of order.
        var skews = [Int64]()
        for _ in Catalog.gateways { skews.append(Int64(rng.below(9)) - 4) }
        gatewaySkewMs = skews
        subjects = SubjectTable(seed: configuration.seed, users: configuration.subjects)
        ringSize = configuration.tokens
        sessions = [Session](repeating: Session(), count: configuration.tokens + Catalog.daemons.count)
        hotWindow = UInt64(max(1, min(configuration.tokens, WorkloadGenerator.hotWindowMax)))
        // Time advances 3 ms per event on average, with a spread of a few ms per thousand events.
        let (steps, overflow) = Int64(configuration.events).multipliedReportingOverflow(by: 4)
        expiryHorizonMs = overflow ? Int64.max / 2 : configuration.startMs + min(steps, Int64.max / 4) + 60_000
        apiKeys = Array(repeating: [], count: Catalog.clients.count)
    }

    /// Events of `type` returned so far.
    public func count(of type: EventType) -> Int { typeCounts[Int(type.rawValue)] }

    /// Events returned so far, by type (types not seen are absent).
    public var countsByType: [EventType: Int] {
        var out = [EventType: Int]()
        for type in EventType.allCases where typeCounts[Int(type.rawValue)] > 0 { out[type] = typeCounts[Int(type.rawValue)] }
        return out
    }

    /// Events are as gateways send them, so a few carry a raw JWT in `token` (or `parent`): code
    /// that stores them without the NDJSON decoder must apply `TokenFingerprint.normalize` itself.
    /// - Returns: the next event, or nil once `configuration.events` events have been returned.
    public mutating func next() -> Event? {
        nextDraft()?.materialize(subjects: &subjects)
    }

    mutating func nextDraft() -> EventDraft? {
        guard emitted < configuration.events else { return nil }
        if emitted > 0 { now += Int64(rng.below(Int(WorkloadGenerator.maxStepMs) + 1)) }
        let draft: EventDraft
        if scriptCursor < script.count && script[scriptCursor].index == emitted {
            draft = scripted(script[scriptCursor].action)
            scriptCursor += 1
        } else if pendingHead < pending.count {
            draft = popPending()
        } else if let expired = dueExpiry() {
            draft = expired
        } else {
            draft = traffic()
        }
        emitted += 1
        typeCounts[Int(draft.type.rawValue)] += 1
        return draft
    }
}

// MARK: - State

private enum TokenState: UInt8 {
    case active, superseded, revoked, expired
}

private struct Session {
    var live = false
    var client: Int8 = 0
    var subject: Int32 = 0
    var token = ""
    var tokenSerial: Int32 = 0
    var exp: Int64 = 0
    var refreshToken: String?
    var refreshSerial: Int32 = 0
    var refreshExp: Int64 = 0
    var usesLeft: Int32 = 0
    /// One of `Catalog.daemons`: outside the ring, restarted when it ends.
    var daemon = false
    /// Renews only after being refused with `expired`, not ahead of `exp`.
    var lazyRenewal = false
}

private struct PooledKey {
    var token: String
    var serial: Int32
    var subject: Int32
    var exp: Int64
}

private struct ExpiryEntry {
    var expMs: Int64
    var serial: Int32
    var client: Int8
    var subject: Int32
    var tokenType: TokenType
    var token: String
}

/// Tokens of one lifetime in issue order, hence (up to clock skew) in expiry order: a FIFO, not a heap.
private struct ExpiryQueue {
    var lifetimeMs: Int64
    var entries: [ExpiryEntry] = []
    var head = 0
}

/// The gateway deployment that served a request.
private struct Served {
    var gateway: Int8
    var release: Release
    var track: Track
    var badCanary: Bool { track == .canary && release == .bad }
}

// MARK: - Traffic

extension WorkloadGenerator {
    private mutating func traffic() -> EventDraft {
        if burstSlot >= 0 && sessions[burstSlot].live
            && rng.chance(perMillion: Catalog.allClients[Int(sessions[burstSlot].client)].burstContinuePerMillion) {
            return use(burstSlot)
        }
        if rng.chance(perMillion: Catalog.daemonPerMillion) { return daemonRequest() }
        if rng.chance(perMillion: WorkloadGenerator.newSessionPerMillion) { return startSession() }
        // Finished sessions stay in their slots; look again a few times before concluding that
        // nobody recent is active and a new client must be turning up.
        for _ in 0..<WorkloadGenerator.drawAttempts {
            let rank = drawRank()
            guard rank < filled else { break }
            let slot = (head - 1 - rank + 2 * ringSize) % ringSize
            if sessions[slot].live {
                burstSlot = slot
                return use(slot)
            }
        }
        return startSession()
    }

    /// 0 is the newest session. Mostly the product of two uniforms scaled to `hotWindow` (density
    /// falling like -log x: hot sessions dominate), sometimes uniform over all sessions.
    private mutating func drawRank() -> Int {
        if rng.chance(perMillion: WorkloadGenerator.tailDrawPerMillion) { return rng.below(max(filled, 1)) }
        let a = rng.next() >> 32, b = rng.next() >> 32
        return Int((((a &* b) >> 32) &* hotWindow) >> 32)
    }

    private mutating func serve() -> Served {
        if let canary = canaryRelease {
            if rng.below(100) < canaryWeight {
                return Served(gateway: Int8(Catalog.canaryGatewayIndex), release: canary, track: .canary)
            }
            return Served(gateway: Int8(rng.below(Catalog.gateways.count - 1)), release: stableRelease, track: .stable)
        }
        return Served(gateway: Int8(rng.below(Catalog.gateways.count)), release: stableRelease, track: .stable)
    }

    private mutating func serveStable() -> Served {
        let count = canaryRelease == nil ? Catalog.gateways.count : Catalog.gateways.count - 1
        return Served(gateway: Int8(rng.below(count)), release: stableRelease, track: .stable)
    }

    private func serveByCanaryGateway() -> Served {
        Served(gateway: Int8(Catalog.canaryGatewayIndex), release: canaryRelease ?? stableRelease,
               track: canaryRelease == nil ? .stable : .canary)
    }

    @inline(__always) private func timestamp(_ served: Served) -> Int64 { now + gatewaySkewMs[Int(served.gateway)] }

    private mutating func newSerial() -> Int32 {
        tokenStates.append(.active)
        return Int32(tokenStates.count - 1)
    }

    private mutating func pickSubject(_ client: ClientProfile) -> Int32 {
        switch client.subjects {
        case .users:
            // Square of a uniform: the busiest 1% of users hold about 10% of the sessions.
            let u = rng.next() >> 32
            return Int32(subjects.userBase + Int((((u &* u) >> 32) &* UInt64(configuration.subjects)) >> 32))
        case .fixed(let list):
            return Int32(list[rng.below(list.count)])
        }
    }

    private mutating func pickRoute(_ client: ClientProfile) -> Int8 {
        Int8(client.routeIndices[client.routeTable.pick(&rng)])
    }

    private mutating func maybeRequestID() -> String? {
        rng.chance(perMillion: WorkloadGenerator.requestIDPerMillion) ? TokenText.requestID(&rng) : nil
    }

    /// Puts a session into the oldest slot; whatever it held stops being used, and is archived
    /// if its user could come back to it.
    private mutating func place(_ session: Session) -> Int {
        let slot = head
        if sessions[slot].refreshToken != nil && tokenStates[Int(sessions[slot].tokenSerial)] != .revoked {
            let capacity = WorkloadGenerator.archiveCapacity
            if archive.count < capacity {
                archive.append(sessions[slot])
                archiveCount += 1
            } else if archiveCount < capacity {
                archive[(archiveStart + archiveCount) % capacity] = sessions[slot]
                archiveCount += 1
            } else {
                archive[archiveStart] = sessions[slot]
                archiveStart = (archiveStart + 1) % capacity
            }
        }
        sessions[slot] = session
        head = (head + 1) % ringSize
        filled = min(filled + 1, ringSize)
        burstSlot = slot
        return slot
    }

    private mutating func usesBudget(_ client: ClientProfile) -> Int32 {
        Int32(1 + rng.geometric(continuePerMillion: client.usesContinuePerMillion))
    }

    private mutating func startSession() -> EventDraft {
        let c = Catalog.clientTable.pick(&rng)
        let client = Catalog.clients[c]
        if client.apiKeyPool > 0 && apiKeys[c].count >= client.apiKeyPool
            && !rng.chance(perMillion: WorkloadGenerator.newAPIKeyPerMillion) {
            let key = apiKeys[c][rng.below(apiKeys[c].count)]
            let slot = place(Session(live: true, client: Int8(c), subject: key.subject, token: key.token,
                                     tokenSerial: key.serial, exp: key.exp, usesLeft: usesBudget(client)))
            return use(slot)
        }
        if client.refreshLifetimeMs != nil && archiveCount > 0
            && archive[archiveStart].exp - Catalog.clients[Int(archive[archiveStart].client)].lifetimeMs
                <= now - WorkloadGenerator.returnAfterMs
            && rng.chance(perMillion: WorkloadGenerator.returnPerMillion) {
            // The user who left longest ago comes back; the app presents its stored access token
            // (often expired by now) and refreshes it, ahead of or after a 401.
            var session = archive[archiveStart]
            archive[archiveStart] = Session()
            archiveStart = (archiveStart + 1) % WorkloadGenerator.archiveCapacity
            archiveCount -= 1
            if tokenStates[Int(session.tokenSerial)] != .revoked && tokenStates[Int(session.refreshSerial)] == .active
                && now + 60_000 < session.refreshExp {
                session.live = true
                session.usesLeft = usesBudget(Catalog.clients[Int(session.client)])
                return use(place(session))
            }
        }
        let (session, draft) = login(c, subject: pickSubject(client))
        if client.apiKeyPool > 0 {
            let key = PooledKey(token: session.token, serial: session.tokenSerial, subject: session.subject, exp: session.exp)
            if apiKeys[c].count >= client.apiKeyPool { apiKeys[c][rng.below(apiKeys[c].count)] = key } else { apiKeys[c].append(key) }
        }
        _ = place(session)
        return draft
    }

    private mutating func daemonRequest() -> EventDraft {
        let d = Catalog.daemonTable.pick(&rng)
        let slot = ringSize + d
        burstSlot = slot
        if sessions[slot].live { return use(slot) }
        let spec = Catalog.daemons[d]
        let subject = spec.subject.map(Int32.init) ?? pickSubject(Catalog.clients[spec.client])
        var (session, draft) = login(spec.client, subject: subject)
        session.daemon = true
        session.usesLeft = Int32(1 + rng.geometric(continuePerMillion: WorkloadGenerator.daemonUsesContinuePerMillion, cap: 100_000))
        sessions[slot] = session
        return draft
    }

    /// A new session of client `c`: its access token, and its refresh token (whose `issued`
    /// event follows as a pending event).
    private mutating func login(_ c: Int, subject: Int32) -> (Session, EventDraft) {
        let client = Catalog.clients[c]
        let served = serve()
        let ts = timestamp(served)
        let jti = TokenText.tokenID(&rng)
        var token = jti
        if client.rawJWTOneIn > 0 && rng.below(client.rawJWTOneIn) == 0 {
            token = TokenText.rawJWT(jti: jti, iss: client.iss, sub: subjects.name(Int(subject)), aud: client.aud,
                                     clientID: client.id, scope: client.scope, issuedAtMs: ts, lifetimeMs: client.lifetimeMs, rng: &rng)
        }
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        scheduleExpiry(ExpiryEntry(expMs: exp, serial: serial, client: Int8(c), subject: subject, tokenType: client.tokenType, token: token),
                       lifetimeMs: client.lifetimeMs)
        var session = Session(live: true, client: Int8(c), subject: subject, token: token, tokenSerial: serial, exp: exp,
                              usesLeft: usesBudget(client))
        session.lazyRenewal = rng.chance(perMillion: WorkloadGenerator.lazyRenewalPerMillion)
        if let refreshLifetimeMs = client.refreshLifetimeMs {
            let refresh = TokenText.tokenID(&rng)
            let refreshSerial = newSerial()
            let refreshExp = ts + refreshLifetimeMs
            session.refreshToken = refresh
            session.refreshSerial = refreshSerial
            session.refreshExp = refreshExp
            scheduleExpiry(ExpiryEntry(expMs: refreshExp, serial: refreshSerial, client: Int8(c), subject: subject,
                                       tokenType: .refresh, token: refresh), lifetimeMs: refreshLifetimeMs)
            pending.append(issuedDraft(served: served, token: refresh, tokenType: .refresh, client: Int8(c), subject: subject,
                                       exp: refreshExp))
        }
        var draft = issuedDraft(served: served, token: token, tokenType: client.tokenType, client: Int8(c), subject: subject, exp: exp)
        draft.ts = ts
        return (session, draft)
    }

    /// One request of the session in `slot`.
    private mutating func use(_ slot: Int) -> EventDraft {
        let client = Catalog.allClients[Int(sessions[slot].client)]
        let served = serve()

        if tokenStates[Int(sessions[slot].tokenSerial)] == .revoked {
            // A client (or a stale tab, or a script) still presenting a revoked token.
            consumeUse(slot)
            if rng.chance(perMillion: 500_000) { sessions[slot].live = false }
            if served.badCanary {
                // The canary's bug: it skips the revocation check.
                return requestDraft(.validated, served: served, slot: slot, route: pickRoute(client), status: 200, reason: nil)
            }
            return requestDraft(.rejected, served: served, slot: slot, route: pickRoute(client), status: 401, reason: .revoked)
        }
        let ts = timestamp(served)
        if ts >= sessions[slot].exp {
            consumeUse(slot)
            let rejected = requestDraft(.rejected, served: served, slot: slot, route: pickRoute(client), status: 401, reason: .expired)
            // The client's retry after the 401.
            if sessions[slot].live {
                let retry = serve()
                pending.append(renew(slot, served: retry, ts: timestamp(retry)))
            }
            return rejected
        }
        if served.badCanary && rng.chance(perMillion: WorkloadGenerator.badCanaryRejectPerMillion) {
            // The canary verifies against the wrong signing keys: good tokens fail.
            consumeUse(slot)
            return requestDraft(.rejected, served: served, slot: slot, route: pickRoute(client), status: 401, reason: .invalidSignature)
        }
        if !sessions[slot].lazyRenewal && ts >= sessions[slot].exp - WorkloadGenerator.renewAheadMs {
            var draft = renew(slot, served: served, ts: ts)
            draft.ts = ts
            return draft
        }
        if !sessions[slot].daemon {
            if sessions[slot].refreshToken != nil && rng.chance(perMillion: client.refreshPerMillion) {
                // The app refreshes on resume or on its own schedule, long before expiry.
                var draft = refresh(slot, served: served, ts: ts)
                draft.ts = ts
                return draft
            }
            if client.logoutPerMillion > 0 && rng.chance(perMillion: client.logoutPerMillion) {
                return revoke(slot, served: served, reason: userRevocationReason())
            }
            if client.apiKeyPool > 0 && rng.chance(perMillion: WorkloadGenerator.adminRevokeKeyPerMillion) {
                let c = Int(sessions[slot].client)
                let serial = sessions[slot].tokenSerial
                if let i = apiKeys[c].firstIndex(where: { $0.serial == serial }) { apiKeys[c].remove(at: i) }
                return revoke(slot, served: served, reason: .admin)
            }
        }
        consumeUse(slot)
        if rng.chance(perMillion: WorkloadGenerator.rejectPerMillion) {
            return ordinaryRejection(slot, served: served, client: client)
        }
        return requestDraft(.validated, served: served, slot: slot, route: pickRoute(client), status: 200, reason: nil)
    }

    private mutating func consumeUse(_ slot: Int) {
        sessions[slot].usesLeft -= 1
        if sessions[slot].usesLeft <= 0 { sessions[slot].live = false }
    }

    private mutating func userRevocationReason() -> Reason {
        let x = rng.below(100)
        return x < 96 ? .logout : x < 99 ? .admin : .compromised
    }

    private mutating func ordinaryRejection(_ slot: Int, served: Served, client: ClientProfile) -> EventDraft {
        let x = rng.below(100)
        if x < 35 {
            return requestDraft(.rejected, served: served, slot: slot, route: Int8(client.forbiddenRoute), status: 403,
                                reason: .insufficientScope)
        }
        if x < 60 {
            // No credentials at all: nothing identifies the token, the subject or the client.
            var draft = requestDraft(.rejected, served: served, slot: slot, route: pickRoute(client), status: 401, reason: .missing)
            draft.token = WorkloadGenerator.missingTokenFingerprint
            draft.tokenType = nil
            draft.subject = -1
            draft.client = -1
            return draft
        }
        return requestDraft(.rejected, served: served, slot: slot, route: pickRoute(client), status: 401,
                            reason: x < 75 ? .malformed : .invalidSignature)
    }

    /// A refresh of the session's access token; the draft's `ts` is left for the caller (now, or
    /// when emitted from the pending queue).
    private mutating func refresh(_ slot: Int, served: Served, ts: Int64) -> EventDraft {
        let c = sessions[slot].client
        let client = Catalog.allClients[Int(c)]
        let parent = sessions[slot].token
        tokenStates[Int(sessions[slot].tokenSerial)] = .superseded
        let token = TokenText.tokenID(&rng)
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        sessions[slot].token = token
        sessions[slot].tokenSerial = serial
        sessions[slot].exp = exp
        let subject = sessions[slot].subject
        scheduleExpiry(ExpiryEntry(expMs: exp, serial: serial, client: c, subject: subject, tokenType: client.tokenType, token: token),
                       lifetimeMs: client.lifetimeMs)
        var draft = issuedDraft(served: served, token: token, tokenType: client.tokenType, client: c, subject: subject, exp: exp)
        draft.type = .refreshed
        draft.parent = parent
        return draft
    }

    /// A new access token for the session: by refresh when it holds a usable refresh token,
    /// else by authenticating again. `ts` is left for the caller.
    private mutating func renew(_ slot: Int, served: Served, ts: Int64) -> EventDraft {
        if sessions[slot].refreshToken != nil && ts < sessions[slot].refreshExp
            && tokenStates[Int(sessions[slot].refreshSerial)] == .active {
            return refresh(slot, served: served, ts: ts)
        }
        return reissue(slot, served: served, ts: ts)
    }

    /// A client without a refresh token authenticates again; its old token just lapses.
    private mutating func reissue(_ slot: Int, served: Served, ts: Int64) -> EventDraft {
        let c = sessions[slot].client
        let client = Catalog.allClients[Int(c)]
        let token = TokenText.tokenID(&rng)
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        sessions[slot].token = token
        sessions[slot].tokenSerial = serial
        sessions[slot].exp = exp
        let subject = sessions[slot].subject
        scheduleExpiry(ExpiryEntry(expMs: exp, serial: serial, client: c, subject: subject, tokenType: client.tokenType, token: token),
                       lifetimeMs: client.lifetimeMs)
        return issuedDraft(served: served, token: token, tokenType: client.tokenType, client: c, subject: subject, exp: exp)
    }

    private mutating func revoke(_ slot: Int, served: Served, reason: Reason) -> EventDraft {
        tokenStates[Int(sessions[slot].tokenSerial)] = .revoked
        let draft = requestDraft(.revoked, served: served, slot: slot, route: Int8(Catalog.revokeEndpoint), status: 200, reason: reason)
        if let refresh = sessions[slot].refreshToken, tokenStates[Int(sessions[slot].refreshSerial)] == .active {
            tokenStates[Int(sessions[slot].refreshSerial)] = .revoked
            var refreshDraft = draft
            refreshDraft.token = refresh
            refreshDraft.tokenType = .refresh
            refreshDraft.requestID = nil
            pending.append(refreshDraft)
        }
        if rng.chance(perMillion: WorkloadGenerator.staleRevokedUsePerMillion) {
            sessions[slot].usesLeft = Int32(1 + rng.below(3))
        } else {
            sessions[slot].live = false
        }
        return draft
    }

    // MARK: Event shapes

    private mutating func requestDraft(_ type: EventType, served: Served, slot: Int, route: Int8, status: Int16,
                                       reason: Reason?) -> EventDraft {
        var draft = EventDraft(type: type)
        draft.ts = timestamp(served)
        draft.token = sessions[slot].token
        draft.client = sessions[slot].client
        draft.tokenType = Catalog.allClients[Int(draft.client)].tokenType
        draft.subject = sessions[slot].subject
        draft.clientIP = sessions[slot].subject
        draft.gateway = served.gateway
        draft.release = served.release
        draft.track = served.track
        draft.route = route
        draft.status = status
        draft.requestID = maybeRequestID()
        draft.reason = reason
        return draft
    }

    /// `ts` is left for the caller.
    private mutating func issuedDraft(served: Served, token: String, tokenType: TokenType, client: Int8, subject: Int32,
                                      exp: Int64) -> EventDraft {
        var draft = EventDraft(type: .issued)
        draft.token = token
        draft.tokenType = tokenType
        draft.subject = subject
        draft.client = client
        draft.claims = true
        draft.exp = exp
        draft.gateway = served.gateway
        draft.release = served.release
        draft.track = served.track
        draft.route = Int8(Catalog.tokenEndpoint)
        draft.status = 200
        draft.clientIP = subject
        draft.requestID = maybeRequestID()
        return draft
    }

    // MARK: Pending and expiry

    private mutating func popPending() -> EventDraft {
        var draft = pending[pendingHead]
        draft.ts = now + gatewaySkewMs[Int(draft.gateway)]
        pendingHead += 1
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        }
        return draft
    }

    private mutating func scheduleExpiry(_ entry: ExpiryEntry, lifetimeMs: Int64) {
        guard entry.expMs <= expiryHorizonMs else { return }
        if let q = expiryQueues.firstIndex(where: { $0.lifetimeMs == lifetimeMs }) {
            expiryQueues[q].entries.append(entry)
        } else {
            expiryQueues.append(ExpiryQueue(lifetimeMs: lifetimeMs, entries: [entry]))
        }
    }

    /// The token service's sweeper: an `expired` event for a token still active a little after
    /// its `exp` (superseded and revoked tokens are skipped: their story already ended).
    private mutating func dueExpiry() -> EventDraft? {
        let cutoff = now - WorkloadGenerator.sweepDelayMs
        for q in expiryQueues.indices {
            while expiryQueues[q].head < expiryQueues[q].entries.count && expiryQueues[q].entries[expiryQueues[q].head].expMs <= cutoff {
                let entry = expiryQueues[q].entries[expiryQueues[q].head]
                expiryQueues[q].head += 1
                if expiryQueues[q].head >= 4_096 && expiryQueues[q].head * 2 >= expiryQueues[q].entries.count {
                    expiryQueues[q].entries.removeFirst(expiryQueues[q].head)
                    expiryQueues[q].head = 0
                }
                guard tokenStates[Int(entry.serial)] == .active else { continue }
                tokenStates[Int(entry.serial)] = .expired
                let served = serve()
                var draft = EventDraft(type: .expired)
                draft.ts = timestamp(served)
                draft.token = entry.token
                draft.tokenType = entry.tokenType
                draft.subject = entry.subject
                draft.client = entry.client
                draft.gateway = served.gateway
                draft.release = served.release
                draft.track = served.track
                return draft
            }
        }
        return nil
    }

    // MARK: Script

    private mutating func scripted(_ action: ScriptAction) -> EventDraft {
        switch action {
        case .marker(let m):
            let plan = WorkloadScenario.markerPlan[m]
            if plan.type == .deploy && plan.track == .canary {
                canaryRelease = plan.release
                canaryWeight = plan.weight
            } else {
                stableRelease = plan.release
                canaryRelease = nil
                canaryWeight = 0
            }
            var draft = EventDraft(type: plan.type)
            draft.ts = now
            draft.release = plan.release
            draft.track = plan.track
            draft.marker = Int8(m)
            draft.weight = Int8(plan.weight)
            return draft

        case .rawJWTIssued, .rawJWTValidated:
            let story = scenario.rawJWT!
            let c = Int8(Catalog.webClientIndex)
            let client = Catalog.allClients[Int(c)]
            let subject = Int32(subjects.userBase + scenario.rawJWTUser)
            let served = serveStable()
            if action == .rawJWTIssued {
                let serial = newSerial()
                let exp = timestamp(served) + client.lifetimeMs
                scheduleExpiry(ExpiryEntry(expMs: exp, serial: serial, client: c, subject: subject, tokenType: client.tokenType,
                                           token: story.token), lifetimeMs: client.lifetimeMs)
                var draft = issuedDraft(served: served, token: story.token, tokenType: client.tokenType, client: c, subject: subject, exp: exp)
                draft.ts = timestamp(served)
                return draft
            }
            var draft = EventDraft(type: .validated)
            draft.ts = timestamp(served)
            draft.token = story.token
            draft.tokenType = client.tokenType
            draft.subject = subject
            draft.client = c
            draft.gateway = served.gateway
            draft.release = served.release
            draft.track = served.track
            draft.route = pickRoute(client)
            draft.status = 200
            draft.clientIP = subject
            return draft

        case .compromisedIssued, .compromisedValidated, .compromisedRevoked, .compromisedReplayAccepted, .compromisedReplayRejected:
            let story = scenario.compromised!
            let c = Int8(Catalog.ciClientIndex)
            let client = Catalog.allClients[Int(c)]
            var served = serveStable()
            var draft = EventDraft(type: .validated)
            draft.token = story.token
            draft.tokenType = client.tokenType
            draft.subject = Int32(Catalog.ciSubject)
            draft.client = c
            draft.route = 20
            draft.status = 200
            draft.clientIP = Int32(Catalog.ciSubject)
            switch action {
            case .compromisedIssued:
                draft.type = .issued
                draft.route = Int8(Catalog.tokenEndpoint)
                draft.claims = true
                compromisedSerial = newSerial()
                draft.exp = timestamp(served) + client.lifetimeMs
            case .compromisedValidated:
                draft.route = rng.below(2) == 0 ? 20 : 21
            case .compromisedRevoked:
                // The security team revokes it from the admin console.
                draft.type = .revoked
                draft.route = Int8(Catalog.revokeEndpoint)
                draft.reason = .compromised
                draft.clientIP = Int32(Catalog.adminSubjects[0])
                tokenStates[Int(compromisedSerial)] = .revoked
            case .compromisedReplayAccepted:
                served = serveByCanaryGateway()
                draft.route = 21
                draft.clientIP = EventDraft.attackerAddress
                if !served.badCanary {
                    draft.type = .rejected
                    draft.status = 401
                    draft.reason = .revoked
                }
            default:
                draft.type = .rejected
                draft.route = 21
                draft.status = 401
                draft.reason = .revoked
                draft.clientIP = EventDraft.attackerAddress
            }
            draft.ts = timestamp(served)
            draft.gateway = served.gateway
            draft.release = served.release
            draft.track = served.track
            return draft
        }
    }
}
