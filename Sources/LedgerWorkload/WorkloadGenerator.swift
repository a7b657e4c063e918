import LedgerModel

// The traffic model. A ring of `tokens` session slots holds sessions in the order their token was
// created; each step draws a rank from a distribution heavily skewed to the newest slots (plus a
// thin uniform tail of returning, idle sessions). Drawing an empty or finished slot means a new
// client turns up: it logs in (an `issued` event) into the oldest slot. So each token is used a
// geometric number of times, mostly within a couple of thousand events of its issue — the
// temporal locality that lets per-block string dictionaries and LZ4 store ~10 bytes per event.
// New sessions arrive at a fixed rate (plus whenever the draw finds no live session), which with
// the per-client use budgets sets the event mix.
//
// On top of that: refreshes (new token, `parent` = old one), logouts and admin revocations (with
// clients that keep presenting the revoked token for a request or two), rejections, expirations
// found by a sweeper after `exp`, API keys shared by many sessions, per-gateway clock skew, and the
// scripted story of `WorkloadScenario` (markers, the leaked key, the raw JWT) at fixed indices.

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
    private let subjects: SubjectTable
    private let script: [ScriptItem]
    private var scriptCursor = 0

    private var stableRelease = Catalog.initialRelease
    private var canaryRelease: String?
    private var canaryWeight = 0
    private var canaryIsBad = false

    private var sessions: [Session]
    /// The slot the next new session takes: the oldest one.
    private var head = 0
    private var filled = 0
    /// Width of the skewed rank draw; mean rank is a quarter of it.
    private let hotWindow: UInt64
    private var burstSlot = -1

    private var pending: [PendingEvent] = []
    private var pendingHead = 0

    private var tokenStates: [TokenState] = []
    private var expiryQueues: [ExpiryQueue] = []
    /// Tokens expiring after this simulated time cannot expire within the workload; not queued.
    private let expiryHorizonMs: Int64
    private var apiKeys: [[PooledKey]]

    private var compromisedSerial: Int32 = -1
    private var compromisedExpMs: Int64 = 0
    private var rawJWTSerial: Int32 = -1

    // Rates, per million.
    private static let newSessionPerMillion = 36_000
    private static let drawAttempts = 6
    private static let tailDrawPerMillion = 50_000
    private static let rejectPerMillion = 30_000
    private static let badCanaryRejectPerMillion = 350_000
    private static let staleRevokedUsePerMillion = 150_000
    private static let adminRevokeKeyPerMillion = 2_000
    private static let requestIDPerMillion = 5_000
    private static let newAPIKeyPerMillion = 20_000
    private static let sweepDelayMs: Int64 = 2_000
    private static let proactiveRefreshMs: Int64 = 120_000
    private static let maxStepMs: Int64 = 6

    /// The value gateways log for a request without credentials: the fingerprint of the empty string.
    static let missingTokenFingerprint = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public init(_ configuration: WorkloadConfiguration) {
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
        sessions = [Session](repeating: Session(), count: configuration.tokens)
        hotWindow = UInt64(max(1, min(configuration.tokens, 800)))
        let (maxSteps, overflow) = Int64(configuration.events).multipliedReportingOverflow(by: WorkloadGenerator.maxStepMs)
        let (horizon, overflow2) = configuration.startMs.addingReportingOverflow(overflow ? Int64.max / 2 : maxSteps)
        expiryHorizonMs = overflow2 ? Int64.max - WorkloadGenerator.sweepDelayMs : horizon
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

    /// - Returns: the next event, or nil once `configuration.events` events have been returned.
    public mutating func next() -> Event? {
        guard emitted < configuration.events else { return nil }
        if emitted > 0 { now += Int64(rng.below(Int(WorkloadGenerator.maxStepMs) + 1)) }
        let event: Event
        if scriptCursor < script.count && script[scriptCursor].index == emitted {
            event = scripted(script[scriptCursor].action)
            scriptCursor += 1
        } else if pendingHead < pending.count {
            event = popPending()
        } else if let expired = dueExpiry() {
            event = expired
        } else {
            event = traffic()
        }
        emitted += 1
        typeCounts[Int(event.type.rawValue)] += 1
        return event
    }
}

// MARK: - State

private enum TokenState: UInt8 {
    case active, superseded, revoked, expired
}

private struct Session {
    var live = false
    var client: UInt8 = 0
    var subject: Int32 = 0
    var token = ""
    var tokenSerial: Int32 = 0
    var exp: Int64 = 0
    var refreshToken: String?
    var refreshSerial: Int32 = 0
    var refreshExp: Int64 = 0
    var usesLeft: Int32 = 0
}

private struct PooledKey {
    var token: String
    var serial: Int32
    var subject: Int32
    var exp: Int64
}

/// An event decided one step early (the refresh token issued with a login, a retry after a
/// 401); it takes its timestamp when emitted.
private struct PendingEvent {
    var event: Event
    var gateway: Int
}

private struct ExpiryEntry {
    var expMs: Int64
    var serial: Int32
    var client: UInt8
    var subject: Int32
    var token: String
    var tokenType: String
}

/// Tokens of one lifetime in issue order, hence (up to clock skew) in expiry order: a FIFO, not a heap.
private struct ExpiryQueue {
    var lifetimeMs: Int64
    var entries: [ExpiryEntry] = []
    var head = 0
}

/// The gateway deployment that served a request.
private struct Served {
    var gateway: Int
    var release: String
    var track: String
    var badCanary: Bool
}

// MARK: - Traffic

extension WorkloadGenerator {
    private mutating func traffic() -> Event {
        if burstSlot >= 0 && sessions[burstSlot].live
            && rng.chance(perMillion: Catalog.clients[Int(sessions[burstSlot].client)].burstContinuePerMillion) {
            return use(burstSlot)
        }
        if rng.chance(perMillion: WorkloadGenerator.newSessionPerMillion) { return startSession() }
        // Finished sessions stay in their slots; look again a few times before concluding that
        // nobody recent is active and a new client must be turning up.
        for _ in 0..<WorkloadGenerator.drawAttempts {
            let rank = drawRank()
            guard rank < filled else { break }
            let slot = (head - 1 - rank + 2 * sessions.count) % sessions.count
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
        return Int(((a &* b) >> 32 &* hotWindow) >> 32)
    }

    private mutating func serve() -> Served {
        if let canary = canaryRelease {
            if rng.below(100) < canaryWeight {
                return Served(gateway: Catalog.canaryGatewayIndex, release: canary, track: "canary", badCanary: canaryIsBad)
            }
            return Served(gateway: rng.below(Catalog.gateways.count - 1), release: stableRelease, track: "stable", badCanary: false)
        }
        return Served(gateway: rng.below(Catalog.gateways.count), release: stableRelease, track: "stable", badCanary: false)
    }

    private mutating func serveStable() -> Served {
        let count = canaryRelease == nil ? Catalog.gateways.count : Catalog.gateways.count - 1
        return Served(gateway: rng.below(count), release: stableRelease, track: "stable", badCanary: false)
    }

    private func serveByCanaryGateway() -> Served {
        if let canary = canaryRelease {
            return Served(gateway: Catalog.canaryGatewayIndex, release: canary, track: "canary", badCanary: canaryIsBad)
        }
        return Served(gateway: Catalog.canaryGatewayIndex, release: stableRelease, track: "stable", badCanary: false)
    }

    @inline(__always) private func timestamp(_ served: Served) -> Int64 { now + gatewaySkewMs[served.gateway] }

    private mutating func newSerial(_ state: TokenState = .active) -> Int32 {
        tokenStates.append(state)
        return Int32(tokenStates.count - 1)
    }

    private mutating func pickSubject(_ client: ClientProfile) -> Int32 {
        switch client.subjects {
        case .users:
            // Square of a uniform: the busiest 1% of users hold about 10% of the sessions.
            let u = rng.next() >> 32
            return Int32(subjects.userBase + Int((u &* u >> 32 &* UInt64(configuration.subjects)) >> 32))
        case .fixed(let list):
            return Int32(list[rng.below(list.count)])
        }
    }

    private mutating func pickRoute(_ client: ClientProfile) -> Route {
        Catalog.routes[client.routeIndices[client.routeTable.pick(&rng)]]
    }

    private mutating func maybeRequestID() -> String? {
        rng.chance(perMillion: WorkloadGenerator.requestIDPerMillion) ? TokenText.requestID(&rng) : nil
    }

    /// Puts a session into the oldest slot; whatever it held simply stops being used.
    private mutating func place(_ session: Session) -> Int {
        let slot = head
        sessions[slot] = session
        head = (head + 1) % sessions.count
        filled = min(filled + 1, sessions.count)
        burstSlot = slot
        return slot
    }

    private mutating func usesBudget(_ client: ClientProfile) -> Int32 {
        Int32(1 + rng.geometric(continuePerMillion: client.usesContinuePerMillion))
    }

    private mutating func startSession() -> Event {
        let c = Catalog.clientTable.pick(&rng)
        let client = Catalog.clients[c]
        if client.apiKeyPool > 0 && apiKeys[c].count >= client.apiKeyPool
            && !rng.chance(perMillion: WorkloadGenerator.newAPIKeyPerMillion) {
            let key = apiKeys[c][rng.below(apiKeys[c].count)]
            let slot = place(Session(live: true, client: UInt8(c), subject: key.subject, token: key.token,
                                     tokenSerial: key.serial, exp: key.exp, usesLeft: usesBudget(client)))
            return use(slot)
        }
        let subject = pickSubject(client)
        let served = serve()
        let ts = timestamp(served)
        let jti = TokenText.tokenID(&rng)
        var token = jti
        if client.rawJWTOneIn > 0 && rng.below(client.rawJWTOneIn) == 0 {
            token = TokenText.rawJWT(jti: jti, iss: client.iss, sub: subjects.names[Int(subject)], aud: client.aud,
                                     clientID: client.id, scope: client.scope, issuedAtMs: ts, lifetimeMs: client.lifetimeMs, rng: &rng)
        }
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        scheduleExpiry(serial: serial, expMs: exp, lifetimeMs: client.lifetimeMs, client: c, subject: subject,
                       token: token, tokenType: client.tokenType)
        var session = Session(live: true, client: UInt8(c), subject: subject, token: token, tokenSerial: serial, exp: exp,
                              usesLeft: usesBudget(client))
        if client.apiKeyPool > 0 {
            let key = PooledKey(token: token, serial: serial, subject: subject, exp: exp)
            if apiKeys[c].count >= client.apiKeyPool { apiKeys[c][rng.below(apiKeys[c].count)] = key } else { apiKeys[c].append(key) }
        }
        if let refreshLifetimeMs = client.refreshLifetimeMs {
            let refresh = TokenText.tokenID(&rng)
            let refreshSerial = newSerial()
            let refreshExp = ts + refreshLifetimeMs
            session.refreshToken = refresh
            session.refreshSerial = refreshSerial
            session.refreshExp = refreshExp
            scheduleExpiry(serial: refreshSerial, expMs: refreshExp, lifetimeMs: refreshLifetimeMs, client: c, subject: subject,
                           token: refresh, tokenType: "refresh")
            enqueue(issuedEvent(ts: ts, served: served, token: refresh, tokenType: "refresh", client: client, subject: subject,
                                exp: refreshExp), served)
        }
        _ = place(session)
        return issuedEvent(ts: ts, served: served, token: token, tokenType: client.tokenType, client: client,
                           subject: subject, exp: exp)
    }

    /// One request of the session in `slot`.
    private mutating func use(_ slot: Int) -> Event {
        let client = Catalog.clients[Int(sessions[slot].client)]
        let served = serve()
        let ts = timestamp(served)

        if tokenStates[Int(sessions[slot].tokenSerial)] == .revoked {
            // A client (or a stale tab, or a script) still presenting a revoked token.
            consumeUse(slot)
            if rng.chance(perMillion: 500_000) { sessions[slot].live = false }
            if served.badCanary {
                // The canary's bug: it skips the revocation check.
                return requestEvent(.validated, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client), status: 200, reason: nil)
            }
            return requestEvent(.rejected, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client), status: 401, reason: "revoked")
        }
        if now >= sessions[slot].exp {
            consumeUse(slot)
            let rejected = requestEvent(.rejected, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client),
                                        status: 401, reason: "expired")
            // The client's retry after the 401: refresh if it can, else authenticate again.
            if sessions[slot].live {
                let retry = serve()
                let retryTs = timestamp(retry)
                if sessions[slot].refreshToken != nil && now < sessions[slot].refreshExp
                    && tokenStates[Int(sessions[slot].refreshSerial)] == .active {
                    enqueue(refresh(slot, served: retry, ts: retryTs), retry)
                } else {
                    enqueue(reissue(slot, served: retry, ts: retryTs), retry)
                }
            }
            return rejected
        }
        if served.badCanary && rng.chance(perMillion: WorkloadGenerator.badCanaryRejectPerMillion) {
            // The canary verifies against the wrong signing keys: good tokens fail.
            consumeUse(slot)
            return requestEvent(.rejected, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client),
                                status: 401, reason: "invalid_signature")
        }
        if sessions[slot].refreshToken != nil
            && (now >= sessions[slot].exp - WorkloadGenerator.proactiveRefreshMs || rng.chance(perMillion: client.refreshPerMillion)) {
            return refresh(slot, served: served, ts: ts)
        }
        if client.logoutPerMillion > 0 && rng.chance(perMillion: client.logoutPerMillion) {
            return revoke(slot, served: served, ts: ts, reason: userRevocationReason())
        }
        if client.apiKeyPool > 0 && rng.chance(perMillion: WorkloadGenerator.adminRevokeKeyPerMillion) {
            let serial = sessions[slot].tokenSerial
            if let i = apiKeys[Int(sessions[slot].client)].firstIndex(where: { $0.serial == serial }) {
                apiKeys[Int(sessions[slot].client)].remove(at: i)
            }
            return revoke(slot, served: served, ts: ts, reason: "admin")
        }
        consumeUse(slot)
        if rng.chance(perMillion: WorkloadGenerator.rejectPerMillion) {
            return ordinaryRejection(slot, ts: ts, served: served, client: client)
        }
        return requestEvent(.validated, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client), status: 200, reason: nil)
    }

    private mutating func consumeUse(_ slot: Int) {
        sessions[slot].usesLeft -= 1
        if sessions[slot].usesLeft <= 0 { sessions[slot].live = false }
    }

    private mutating func userRevocationReason() -> String {
        let x = rng.below(100)
        return x < 96 ? "logout" : x < 99 ? "admin" : "compromised"
    }

    private mutating func ordinaryRejection(_ slot: Int, ts: Int64, served: Served, client: ClientProfile) -> Event {
        let x = rng.below(100)
        if x < 35 {
            return requestEvent(.rejected, ts: ts, served: served, slot: slot, client: client,
                                route: Catalog.routes[client.forbiddenRoute], status: 403, reason: "insufficient_scope")
        }
        if x < 60 {
            // No credentials at all: nothing identifies the token, the subject or the client.
            let route = pickRoute(client)
            return Event(type: .rejected, ts: ts, token: WorkloadGenerator.missingTokenFingerprint,
                         gateway: Catalog.gateways[served.gateway], release: served.release, track: served.track,
                         route: route.path, method: route.method, status: 401,
                         clientIP: subjects.ips[Int(sessions[slot].subject)], requestID: maybeRequestID(), reason: "missing")
        }
        return requestEvent(.rejected, ts: ts, served: served, slot: slot, client: client, route: pickRoute(client), status: 401,
                            reason: x < 75 ? "malformed" : "invalid_signature")
    }

    private mutating func refresh(_ slot: Int, served: Served, ts: Int64) -> Event {
        let client = Catalog.clients[Int(sessions[slot].client)]
        let parent = sessions[slot].token
        tokenStates[Int(sessions[slot].tokenSerial)] = .superseded
        let token = TokenText.tokenID(&rng)
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        sessions[slot].token = token
        sessions[slot].tokenSerial = serial
        sessions[slot].exp = exp
        let subject = sessions[slot].subject
        scheduleExpiry(serial: serial, expMs: exp, lifetimeMs: client.lifetimeMs, client: Int(sessions[slot].client),
                       subject: subject, token: token, tokenType: client.tokenType)
        var event = issuedEvent(ts: ts, served: served, token: token, tokenType: client.tokenType, client: client,
                                subject: subject, exp: exp)
        event.type = .refreshed
        event.parent = parent
        return event
    }

    /// A client without a refresh token authenticates again; its old token just lapses.
    private mutating func reissue(_ slot: Int, served: Served, ts: Int64) -> Event {
        let c = Int(sessions[slot].client)
        let client = Catalog.clients[c]
        let token = TokenText.tokenID(&rng)
        let serial = newSerial()
        let exp = ts + client.lifetimeMs
        sessions[slot].token = token
        sessions[slot].tokenSerial = serial
        sessions[slot].exp = exp
        scheduleExpiry(serial: serial, expMs: exp, lifetimeMs: client.lifetimeMs, client: c, subject: sessions[slot].subject,
                       token: token, tokenType: client.tokenType)
        return issuedEvent(ts: ts, served: served, token: token, tokenType: client.tokenType, client: client,
                           subject: sessions[slot].subject, exp: exp)
    }

    private mutating func revoke(_ slot: Int, served: Served, ts: Int64, reason: String) -> Event {
        let client = Catalog.clients[Int(sessions[slot].client)]
        tokenStates[Int(sessions[slot].tokenSerial)] = .revoked
        let event = requestEvent(.revoked, ts: ts, served: served, slot: slot, client: client, route: Catalog.revokeEndpoint,
                                 status: 200, reason: reason)
        if let refresh = sessions[slot].refreshToken, tokenStates[Int(sessions[slot].refreshSerial)] == .active {
            tokenStates[Int(sessions[slot].refreshSerial)] = .revoked
            var refreshEvent = event
            refreshEvent.token = refresh
            refreshEvent.tokenType = "refresh"
            refreshEvent.requestID = nil
            enqueue(refreshEvent, served)
        }
        if rng.chance(perMillion: WorkloadGenerator.staleRevokedUsePerMillion) {
            sessions[slot].usesLeft = Int32(1 + rng.below(3))
        } else {
            sessions[slot].live = false
        }
        return event
    }

    // MARK: Event shapes

    private mutating func requestEvent(_ type: EventType, ts: Int64, served: Served, slot: Int, client: ClientProfile,
                                       route: Route, status: Int, reason: String?) -> Event {
        let subject = Int(sessions[slot].subject)
        return Event(type: type, ts: ts, token: sessions[slot].token, tokenType: client.tokenType, sub: subjects.names[subject],
                     clientID: client.id, gateway: Catalog.gateways[served.gateway], release: served.release, track: served.track,
                     route: route.path, method: route.method, status: status, clientIP: subjects.ips[subject],
                     requestID: maybeRequestID(), reason: reason)
    }

    private mutating func issuedEvent(ts: Int64, served: Served, token: String, tokenType: String, client: ClientProfile,
                                      subject: Int32, exp: Int64) -> Event {
        Event(type: .issued, ts: ts, token: token, tokenType: tokenType, sub: subjects.names[Int(subject)], clientID: client.id,
              iss: client.iss, aud: client.aud, scope: client.scope, exp: exp, gateway: Catalog.gateways[served.gateway],
              release: served.release, track: served.track, route: Catalog.tokenEndpoint.path, method: Catalog.tokenEndpoint.method,
              status: 200, clientIP: subjects.ips[Int(subject)], requestID: maybeRequestID())
    }

    // MARK: Pending and expiry

    private mutating func enqueue(_ event: Event, _ served: Served) {
        pending.append(PendingEvent(event: event, gateway: served.gateway))
    }

    private mutating func popPending() -> Event {
        var event = pending[pendingHead].event
        event.ts = now + gatewaySkewMs[pending[pendingHead].gateway]
        pendingHead += 1
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        }
        return event
    }

    private mutating func scheduleExpiry(serial: Int32, expMs: Int64, lifetimeMs: Int64, client: Int, subject: Int32,
                                         token: String, tokenType: String) {
        guard expMs <= expiryHorizonMs else { return }
        let entry = ExpiryEntry(expMs: expMs, serial: serial, client: UInt8(client), subject: subject, token: token, tokenType: tokenType)
        if let q = expiryQueues.firstIndex(where: { $0.lifetimeMs == lifetimeMs }) {
            expiryQueues[q].entries.append(entry)
        } else {
            expiryQueues.append(ExpiryQueue(lifetimeMs: lifetimeMs, entries: [entry]))
        }
    }

    /// The token service's sweeper: an `expired` event for a token still active a little after
    /// its `exp` (superseded and revoked tokens are skipped: their story already ended).
    private mutating func dueExpiry() -> Event? {
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
                let client = Int(entry.client) < Catalog.clients.count ? Catalog.clients[Int(entry.client)] : Catalog.ciClient
                return Event(type: .expired, ts: timestamp(served), token: entry.token, tokenType: entry.tokenType,
                             sub: subjects.names[Int(entry.subject)], clientID: client.id,
                             gateway: Catalog.gateways[served.gateway], release: served.release, track: served.track)
            }
        }
        return nil
    }

    // MARK: Script

    private mutating func scripted(_ action: ScriptAction) -> Event {
        switch action {
        case .marker(let m):
            let plan = WorkloadScenario.markerPlan[m]
            switch (plan.type, plan.track) {
            case (.deploy, "canary"):
                canaryRelease = plan.release
                canaryWeight = plan.weight
                canaryIsBad = plan.release == Catalog.badRelease
            default:
                stableRelease = plan.release
                canaryRelease = nil
                canaryWeight = 0
                canaryIsBad = false
            }
            return Event(type: plan.type, ts: now, release: plan.release, track: plan.track, marker: plan.id, weight: plan.weight)

        case .rawJWTIssued, .rawJWTValidated:
            let story = scenario.rawJWT!
            let client = Catalog.clients[Catalog.webClientIndex]
            let subject = subjects.userBase + scenario.rawJWTUser
            let served = serveStable()
            let ts = timestamp(served)
            if action == .rawJWTIssued {
                rawJWTSerial = newSerial()
                let exp = ts + client.lifetimeMs
                scheduleExpiry(serial: rawJWTSerial, expMs: exp, lifetimeMs: client.lifetimeMs, client: Catalog.webClientIndex,
                               subject: Int32(subject), token: story.token, tokenType: client.tokenType)
                return issuedEvent(ts: ts, served: served, token: story.token, tokenType: client.tokenType, client: client,
                                   subject: Int32(subject), exp: exp)
            }
            let route = pickRoute(client)
            return Event(type: .validated, ts: ts, token: story.token, tokenType: client.tokenType, sub: story.sub,
                         clientID: client.id, gateway: Catalog.gateways[served.gateway], release: served.release,
                         track: served.track, route: route.path, method: route.method, status: 200, clientIP: subjects.ips[subject])

        case .compromisedIssued, .compromisedValidated, .compromisedRevoked, .compromisedReplayAccepted, .compromisedReplayRejected:
            let story = scenario.compromised!
            let client = Catalog.ciClient
            var served = serveStable()
            var type = EventType.validated
            var route = Catalog.routes[20]
            var status = 200
            var reason: String?
            var ip = story.clientIP
            var exp: Int64?
            var scope: String?
            switch action {
            case .compromisedIssued:
                type = .issued
                route = Catalog.tokenEndpoint
                compromisedSerial = newSerial()
                compromisedExpMs = timestamp(served) + client.lifetimeMs
                exp = compromisedExpMs
                scope = client.scope
            case .compromisedValidated:
                route = Catalog.routes[rng.below(2) == 0 ? 20 : 21]
            case .compromisedRevoked:
                type = .revoked
                route = Catalog.revokeEndpoint
                reason = "compromised"
                ip = Catalog.machineSubjects[Catalog.adminSubjects[0]].ip
                tokenStates[Int(compromisedSerial)] = .revoked
            case .compromisedReplayAccepted:
                served = serveByCanaryGateway()
                route = Catalog.routes[21]
                ip = story.attackerIP
                if !served.badCanary { type = .rejected; status = 401; reason = "revoked" }
            default:
                type = .rejected
                route = Catalog.routes[21]
                status = 401
                reason = "revoked"
                ip = story.attackerIP
            }
            return Event(type: type, ts: timestamp(served), token: story.token, tokenType: story.tokenType, sub: story.sub,
                         clientID: story.clientID, iss: exp == nil ? nil : client.iss, aud: exp == nil ? nil : client.aud,
                         scope: scope, exp: exp, gateway: Catalog.gateways[served.gateway], release: served.release,
                         track: served.track, route: route.path, method: route.method, status: status, clientIP: ip, reason: reason)
        }
    }
}
