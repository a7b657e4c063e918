// The fixed world the workload lives in: gateways, API routes, client applications and their
// token policies, releases. Everything here is constant; only the seed decides who does what when.
// Strings are shared constants so that building an event retains nothing per field.

struct Route: Sendable {
    let method: String
    let path: String
}

enum TokenType: Int, CaseIterable, Sendable {
    case access, refresh, apiKey

    var text: String {
        switch self {
        case .access: "access"
        case .refresh: "refresh"
        case .apiKey: "api_key"
        }
    }
}

enum Track: Int, CaseIterable, Sendable {
    case stable, canary

    var text: String {
        switch self {
        case .stable: "stable"
        case .canary: "canary"
        }
    }
}

enum Release: Int, CaseIterable, Sendable {
    /// Stable at the start.
    case initial
    /// Canaried, then promoted: the known-good release.
    case good
    /// The canary that rejects good tokens and accepts revoked ones.
    case bad

    var text: String {
        switch self {
        case .initial: "v1.4.2"
        case .good: "v1.4.3"
        case .bad: "v1.5.0"
        }
    }
}

enum Reason: Int, CaseIterable, Sendable {
    case expired, revoked, invalidSignature, malformed, missing, insufficientScope, logout, admin, compromised

    var text: String {
        switch self {
        case .expired: "expired"
        case .revoked: "revoked"
        case .invalidSignature: "invalid_signature"
        case .malformed: "malformed"
        case .missing: "missing"
        case .insufficientScope: "insufficient_scope"
        case .logout: "logout"
        case .admin: "admin"
        case .compromised: "compromised"
        }
    }
}

enum Catalog {
    static let gateways = ["gw-01", "gw-02", "gw-03", "gw-04", "gw-05", "gw-06"]
    /// The node that runs whatever release is on the canary track; the load balancer gives it the
    /// canary's weight while a canary is deployed and an equal share otherwise.
    static let canaryGatewayIndex = 5

    static let tokenEndpoint = 22
    static let revokeEndpoint = 23

    /// Route templates as gateways log them (the matched route, not the raw path).
    static let routes: [Route] = [
        Route(method: "GET", path: "/v1/users/me"),                // 0
        Route(method: "PATCH", path: "/v1/users/me"),              // 1
        Route(method: "GET", path: "/v1/orders"),                  // 2
        Route(method: "POST", path: "/v1/orders"),                 // 3
        Route(method: "GET", path: "/v1/orders/{id}"),             // 4
        Route(method: "GET", path: "/v1/catalog/products"),        // 5
        Route(method: "GET", path: "/v1/catalog/products/{id}"),   // 6
        Route(method: "GET", path: "/v1/search"),                  // 7
        Route(method: "GET", path: "/v1/cart"),                    // 8
        Route(method: "POST", path: "/v1/cart/items"),             // 9
        Route(method: "DELETE", path: "/v1/cart/items/{id}"),      // 10
        Route(method: "POST", path: "/v1/checkout"),               // 11
        Route(method: "POST", path: "/v1/payments"),               // 12
        Route(method: "GET", path: "/v1/notifications"),           // 13
        Route(method: "POST", path: "/v1/events"),                 // 14
        Route(method: "GET", path: "/v1/reports/daily"),           // 15
        Route(method: "POST", path: "/v1/partner/shipments"),      // 16
        Route(method: "GET", path: "/v1/partner/inventory"),       // 17
        Route(method: "GET", path: "/v1/admin/audit"),             // 18
        Route(method: "POST", path: "/v1/admin/users/{id}/lock"),  // 19
        Route(method: "GET", path: "/v1/deployments"),             // 20
        Route(method: "POST", path: "/v1/deployments"),            // 21
        Route(method: "POST", path: "/oauth/token"),               // 22: tokenEndpoint
        Route(method: "POST", path: "/oauth/revoke"),              // 23: revokeEndpoint
    ]

    static let userIssuer = "https://auth.example.com"
    static let partnerIssuer = "https://partners.auth.example.com"

    /// Subjects that are not end users, each with its fixed source address. End users follow
    /// them in the subject table (see `SubjectTable`).
    static let machineSubjects: [(name: String, ip: String)] = [
        ("partner-acme", "52.14.201.7"),
        ("partner-globex", "34.240.18.92"),
        ("partner-initech", "20.61.133.4"),
        ("partner-umbrella", "13.55.77.210"),
        ("partner-hooli", "35.190.44.18"),
        ("svc-reporting", "10.20.0.15"),
        ("admin-01", "10.8.1.11"),
        ("admin-02", "10.8.1.12"),
        ("admin-03", "10.8.1.13"),
        ("admin-04", "10.8.1.14"),
        ("svc-ci", "10.30.4.12"),
    ]
    static let partnerSubjects = [0, 1, 2, 3, 4]
    static let reportingSubjects = [5]
    static let adminSubjects = [6, 7, 8, 9]
    static let ciSubject = 10
    /// Where the stolen CI key is replayed from (a Tor exit range), for the compromised-token story.
    static let attackerIP = "185.220.101.47"

    static let minuteMs: Int64 = 60_000
    static let dayMs: Int64 = 86_400_000

    static let clients: [ClientProfile] = [
        ClientProfile(
            id: "web-portal", weight: 38, tokenType: .access, lifetimeMs: 15 * minuteMs, refreshLifetimeMs: dayMs,
            iss: userIssuer, aud: "api.example.com", scope: "openid profile orders:read orders:write cart:write",
            subjects: .users, routes: [0: 10, 2: 12, 4: 10, 5: 14, 6: 12, 7: 10, 8: 8, 9: 6, 10: 2, 11: 3, 12: 3, 13: 5, 1: 1],
            forbiddenRoute: 18, usesContinuePerMillion: 945_000, burstContinuePerMillion: 400_000,
            refreshPerMillion: 40_000, logoutPerMillion: 12_000, rawJWTOneIn: 500, apiKeyPool: 0),
        ClientProfile(
            id: "mobile-ios", weight: 20, tokenType: .access, lifetimeMs: 5 * minuteMs, refreshLifetimeMs: dayMs,
            iss: userIssuer, aud: "api.example.com", scope: "openid profile offline_access orders:read cart:write",
            subjects: .users, routes: [0: 8, 2: 12, 4: 10, 5: 12, 6: 10, 7: 8, 8: 8, 9: 6, 11: 3, 12: 3, 13: 10, 14: 10],
            forbiddenRoute: 18, usesContinuePerMillion: 950_000, burstContinuePerMillion: 450_000,
            refreshPerMillion: 45_000, logoutPerMillion: 6_000, rawJWTOneIn: 0, apiKeyPool: 0),
        ClientProfile(
            id: "mobile-android", weight: 18, tokenType: .access, lifetimeMs: 5 * minuteMs, refreshLifetimeMs: dayMs,
            iss: userIssuer, aud: "api.example.com", scope: "openid profile offline_access orders:read cart:write",
            subjects: .users, routes: [0: 8, 2: 12, 4: 10, 5: 12, 6: 10, 7: 8, 8: 8, 9: 6, 11: 3, 12: 3, 13: 10, 14: 10],
            forbiddenRoute: 18, usesContinuePerMillion: 950_000, burstContinuePerMillion: 450_000,
            refreshPerMillion: 45_000, logoutPerMillion: 6_000, rawJWTOneIn: 0, apiKeyPool: 0),
        ClientProfile(
            id: "partner-gateway", weight: 0, tokenType: .access, lifetimeMs: 5 * minuteMs, refreshLifetimeMs: nil,
            iss: partnerIssuer, aud: "partner-api.example.com", scope: "partner:shipments partner:inventory",
            subjects: .fixed(partnerSubjects), routes: [16: 5, 17: 9, 4: 2],
            forbiddenRoute: 18, usesContinuePerMillion: 950_000, burstContinuePerMillion: 650_000,
            refreshPerMillion: 0, logoutPerMillion: 0, rawJWTOneIn: 0, apiKeyPool: 0),
        ClientProfile(
            id: "reporting-job", weight: 0, tokenType: .access, lifetimeMs: 2 * minuteMs, refreshLifetimeMs: nil,
            iss: userIssuer, aud: "api.example.com", scope: "reports:read orders:read",
            subjects: .fixed(reportingSubjects), routes: [15: 6, 2: 3],
            forbiddenRoute: 19, usesContinuePerMillion: 960_000, burstContinuePerMillion: 750_000,
            refreshPerMillion: 0, logoutPerMillion: 0, rawJWTOneIn: 0, apiKeyPool: 0),
        ClientProfile(
            id: "ops-console", weight: 9, tokenType: .apiKey, lifetimeMs: 90 * dayMs, refreshLifetimeMs: nil,
            iss: userIssuer, aud: "admin.example.com", scope: "admin:read admin:write",
            subjects: .fixed(adminSubjects), routes: [18: 6, 19: 1, 20: 4, 21: 1],
            forbiddenRoute: 12, usesContinuePerMillion: 920_000, burstContinuePerMillion: 500_000,
            refreshPerMillion: 0, logoutPerMillion: 0, rawJWTOneIn: 0, apiKeyPool: 8),
    ]
    /// Interactive sessions: the ring's new logins. Machine clients run only as daemons.
    static let clientTable = WeightedTable(clients.map(\.weight))

    /// Long-running sessions outside the ring, together serving `daemonPerMillion` of requests:
    /// partner integrations and report workers (machine clients whose short-lived tokens expire
    /// many times over a session) and dashboards left open that poll for notifications (user
    /// sessions that outlive their 15-minute access token). They are what produces renewals
    /// at expiry and `rejected` with reason `expired`.
    static let daemons: [DaemonSpec] = [
        DaemonSpec(client: 3, subject: partnerSubjects[0], weight: 12),
        DaemonSpec(client: 3, subject: partnerSubjects[1], weight: 9),
        DaemonSpec(client: 3, subject: partnerSubjects[2], weight: 8),
        DaemonSpec(client: 3, subject: partnerSubjects[3], weight: 6),
        DaemonSpec(client: 3, subject: partnerSubjects[4], weight: 5),
        DaemonSpec(client: 4, subject: reportingSubjects[0], weight: 14),
        DaemonSpec(client: 4, subject: reportingSubjects[0], weight: 11),
    ] + (0..<8).map { _ in DaemonSpec(client: 0, subject: nil, weight: 2) }
      + (0..<4).map { _ in DaemonSpec(client: 1, subject: nil, weight: 2) }
      + (0..<4).map { _ in DaemonSpec(client: 2, subject: nil, weight: 2) }
    static let daemonTable = WeightedTable(daemons.map(\.weight))
    static let daemonPerMillion = 120_000

    /// Ordinary clients, then the CI deployer of the compromised-key story, which ordinary traffic
    /// never draws.
    static let allClients = clients + [ciClient]
    static let ciClientIndex = clients.count

    private static let ciClient = ClientProfile(
        id: "ci-deployer", weight: 0, tokenType: .apiKey, lifetimeMs: 90 * dayMs, refreshLifetimeMs: nil,
        iss: userIssuer, aud: "admin.example.com", scope: "deployments:write",
        subjects: .fixed([ciSubject]), routes: [21: 1, 20: 1],
        forbiddenRoute: 19, usesContinuePerMillion: 0, burstContinuePerMillion: 0,
        refreshPerMillion: 0, logoutPerMillion: 0, rawJWTOneIn: 0, apiKeyPool: 0)
    static let webClientIndex = 0
}

struct DaemonSpec: Sendable {
    /// Index into `Catalog.clients`.
    let client: Int
    /// Index into `Catalog.machineSubjects`; nil: a new end user each time the session restarts.
    let subject: Int?
    let weight: Int
}

/// How one client application gets and uses tokens. A class so that looking one up on the hot
/// path is one retain, not one per field.
final class ClientProfile: Sendable {
    enum Subjects: Sendable {
        /// End users from the subject table, skewed so that some users are much busier.
        case users
        /// A fixed list of machine subjects (indices into `Catalog.machineSubjects`).
        case fixed([Int])
    }

    let id: String
    let weight: Int
    let tokenType: TokenType
    let lifetimeMs: Int64
    /// nil: no refresh token; the client authenticates again when its token expires.
    let refreshLifetimeMs: Int64?
    let iss: String
    let aud: String
    let scope: String
    let subjects: Subjects
    let routeIndices: [Int]
    let routeTable: WeightedTable
    /// A route the client's scope does not cover: where its `insufficient_scope` rejections land.
    let forbiddenRoute: Int
    /// Per request, the chance that the session has more requests left (mean uses p / (1 - p)).
    let usesContinuePerMillion: Int
    /// Per request, the chance that the next request of the session follows immediately.
    let burstContinuePerMillion: Int
    let refreshPerMillion: Int
    let logoutPerMillion: Int
    /// One in this many new tokens is logged as the raw JWT instead of its id; 0: never.
    let rawJWTOneIn: Int
    /// API keys are long-lived and shared by many sessions: keep this many in circulation; 0: none.
    let apiKeyPool: Int

    init(id: String, weight: Int, tokenType: TokenType, lifetimeMs: Int64, refreshLifetimeMs: Int64?, iss: String,
         aud: String, scope: String, subjects: Subjects, routes: KeyValuePairs<Int, Int>, forbiddenRoute: Int,
         usesContinuePerMillion: Int, burstContinuePerMillion: Int, refreshPerMillion: Int, logoutPerMillion: Int,
         rawJWTOneIn: Int, apiKeyPool: Int) {
        self.id = id; self.weight = weight; self.tokenType = tokenType; self.lifetimeMs = lifetimeMs
        self.refreshLifetimeMs = refreshLifetimeMs; self.iss = iss; self.aud = aud; self.scope = scope
        self.subjects = subjects
        self.routeIndices = routes.map(\.key)
        self.routeTable = WeightedTable(routes.map(\.value))
        self.forbiddenRoute = forbiddenRoute
        self.usesContinuePerMillion = usesContinuePerMillion; self.burstContinuePerMillion = burstContinuePerMillion
        self.refreshPerMillion = refreshPerMillion; self.logoutPerMillion = logoutPerMillion
        self.rawJWTOneIn = rawJWTOneIn; self.apiKeyPool = apiKeyPool
    }
}
