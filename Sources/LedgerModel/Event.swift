// The v1 event model (see ../shared/PRODUCT.md "Event model"): one gateway observation of a
// token, or one deployment marker. Values are already normalised: timestamps are epoch
// milliseconds and `token`/`parent` never hold a raw bearer token (see TokenFingerprint).

/// Dense, increasing-from-1 position of an event in the ledger.
public struct SequenceNumber: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
    public var next: SequenceNumber { SequenceNumber(rawValue + 1) }
}

public enum EventType: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case issued = 1
    case validated = 2
    case rejected = 3
    case refreshed = 4
    case revoked = 5
    case expired = 6
    case deploy = 16
    case promote = 17
    case rollback = 18

    public var name: String {
        switch self {
        case .issued: "issued"
        case .validated: "validated"
        case .rejected: "rejected"
        case .refreshed: "refreshed"
        case .revoked: "revoked"
        case .expired: "expired"
        case .deploy: "deploy"
        case .promote: "promote"
        case .rollback: "rollback"
        }
    }

    public var description: String { name }

    /// Deployment markers carry `marker` instead of `token`.
    public var isMarker: Bool { rawValue >= 16 }

    public init?(name: some StringProtocol) {
        guard let match = EventType.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// Matches the type name against raw UTF-8 without building a String (NDJSON hot path).
    public init?(utf8 bytes: UnsafeRawBufferPointer) {
        for candidate in EventType.allCases {
            let name = candidate.name
            var equal = false
            var n = name
            n.withUTF8 { u in
                equal = u.count == bytes.count && (u.count == 0 || memcmp(u.baseAddress!, bytes.baseAddress!, u.count) == 0)
            }
            if equal { self = candidate; return }
        }
        return nil
    }
}

public struct Event: Equatable, Sendable {
    public var type: EventType
    /// Gateway time of the observation, epoch milliseconds.
    public var ts: Int64
    public var token: String?
    public var tokenType: String?
    public var sub: String?
    public var clientID: String?
    public var iss: String?
    public var aud: String?
    public var scope: String?
    /// Expiry, epoch milliseconds.
    public var exp: Int64?
    public var parent: String?
    public var gateway: String?
    public var release: String?
    public var track: String?
    public var route: String?
    public var method: String?
    public var status: Int?
    public var clientIP: String?
    public var requestID: String?
    public var reason: String?
    public var marker: String?
    /// Traffic weight of a marker's release, 0-100.
    public var weight: Int?
    /// Free-form attributes (including unknown top-level fields the decoder kept).
    public var attrs: [String: String]

    public init(type: EventType, ts: Int64, token: String? = nil, tokenType: String? = nil, sub: String? = nil,
                clientID: String? = nil, iss: String? = nil, aud: String? = nil, scope: String? = nil,
                exp: Int64? = nil, parent: String? = nil, gateway: String? = nil, release: String? = nil,
                track: String? = nil, route: String? = nil, method: String? = nil, status: Int? = nil,
                clientIP: String? = nil, requestID: String? = nil, reason: String? = nil, marker: String? = nil,
                weight: Int? = nil, attrs: [String: String] = [:]) {
        self.type = type; self.ts = ts; self.token = token; self.tokenType = tokenType; self.sub = sub
        self.clientID = clientID; self.iss = iss; self.aud = aud; self.scope = scope; self.exp = exp
        self.parent = parent; self.gateway = gateway; self.release = release; self.track = track
        self.route = route; self.method = method; self.status = status; self.clientIP = clientIP
        self.requestID = requestID; self.reason = reason; self.marker = marker; self.weight = weight
        self.attrs = attrs
    }
}

/// An event as the ledger holds it: with its assigned sequence number and the time the ledger
/// made it durable (the sealing time of its block, epoch ms).
public struct LedgerEvent: Equatable, Sendable {
    public var seq: SequenceNumber
    public var receivedAt: Int64
    public var event: Event

    public init(seq: SequenceNumber, receivedAt: Int64, event: Event) {
        self.seq = seq; self.receivedAt = receivedAt; self.event = event
    }
}

/// Limits on untrusted input, documented in FORMAT.md and README.md.
public struct EventLimits: Sendable {
    /// Longest NDJSON line accepted, newline excluded.
    public var lineBytesMax: Int = 64 * 1024
    /// Longest value of any string field after fingerprinting (token/parent are at most 128 or 71).
    public var fieldBytesMax: Int = 1024
    public var attrsCountMax: Int = 32
    public var attrKeyBytesMax: Int = 64
    public var attrValueBytesMax: Int = 512
    /// Token ids longer than this are fingerprinted (PRODUCT.md: "longer than 128 bytes").
    public var tokenBytesMax: Int = 128

    public init() {}
    public static let `default` = EventLimits()
}

import Glibc
