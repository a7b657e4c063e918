// The projection: one pure reducer over the ledger's events, in sequence order, holding token
// state, metric counters, anomalies and the deployment timeline. The exact rules are those of
// ../shared/PRODUCT.md "Token state rules"; where that text is silent, the choices made here are
// written down in ARCHITECTURE.md "Projection rules" so another implementation can match them.
//
// The reducer stores facts (created at, revoked at, expiry, ...), never a status: a status
// depends on a clock, and the same state answers "at seq N", "at marker M" and live questions
// with different clocks.
import LedgerModel

public enum TokenStatus: String, Sendable, CaseIterable, CustomStringConvertible {
    case active, expired, revoked, superseded, unknown
    public var description: String { rawValue }
}

public enum AnomalyKind: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// A `validated` event for a token already revoked.
    case revokedValidated = 1
    /// A `validated` event for a token already expired at the event's own `ts`.
    case expiredAccepted = 2
    /// A `validated` event for a token no event created, revoked, expired or refreshed away.
    case neverIssuedValidated = 3
    /// A release's rejection rate on its track passed the stable track's times the factor.
    case rejectionRate = 4

    public var name: String {
        switch self {
        case .revokedValidated: "revoked_validated"
        case .expiredAccepted: "expired_accepted"
        case .neverIssuedValidated: "never_issued_validated"
        case .rejectionRate: "rejection_rate"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let k = AnomalyKind.allCases.first(where: { $0.name == name }) else { return nil }
        self = k
    }
}

public struct ProjectionOptions: Sendable, Equatable {
    /// A release's rejection rate on a non-stable track raises an alert once it exceeds the
    /// stable track's rate times this factor...
    public var rejectionFactor: Double = 3
    /// ...and both sides have at least this many validations plus rejections.
    public var rejectionSamplesMin: UInt64 = 500

    public init(rejectionFactor: Double = 3, rejectionSamplesMin: UInt64 = 500) {
        self.rejectionFactor = rejectionFactor
        self.rejectionSamplesMin = rejectionSamplesMin
    }

    public static let stableTrack = "stable"
}

/// One anomaly as it happened, at the event that raised it.
public struct Anomaly: Sendable, Equatable {
    public var seq: UInt64
    public var ts: Int64
    public var kind: AnomalyKind
    public var token: String?
    public var release: String?
    public var track: String?
    public var gateway: String?
    /// For `rejectionRate`: the release's and the stable track's rejection rates (0...1).
    public var rate: Double?
    public var stableRate: Double?

    public var json: String {
        var w = JSONObjectWriter()
        w.int("seq", Int64(seq)); w.int("ts", ts); w.string("anomaly", kind.name); w.string("token", token)
        w.string("release", release); w.string("track", track); w.string("gateway", gateway)
        w.double("rate", rate); w.double("stable_rate", stableRate)
        return w.finish()
    }
}

public struct MarkerRecord: Sendable, Equatable {
    public var seq: UInt64
    public var ts: Int64
    public var type: EventType
    public var marker: String
    public var release: String?
    public var track: String?
    public var weight: Int?
}

struct AnomalyRecord: Equatable {
    var seq: UInt64
    var ts: Int64
    var kind: AnomalyKind
    var token: UInt32 = TokenRecord.none
    var release: UInt32 = TokenRecord.none
    var track: UInt32 = TokenRecord.none
    var gateway: UInt32 = TokenRecord.none
    var rate: Double = 0
    var stableRate: Double = 0
}

/// Validations and rejections of one (release, track), for the rejection-rate anomaly.
struct RejectionStats: Equatable {
    var validated: UInt64 = 0
    var rejected: UInt64 = 0
    var alerted = false
    var samples: UInt64 { validated &+ rejected }
    var rate: Double { samples == 0 ? 0 : Double(rejected) / Double(samples) }
}

/// Metric counter key: an event's type and its label values (name numbers).
struct CounterKey: Hashable {
    var type: UInt8
    var release: UInt32
    var track: UInt32
    var gateway: UInt32
    var reason: UInt32
}

/// Distinct strings other than token ids (subjects, clients, releases, tracks, gateways,
/// reasons, token types, scopes), each stored once.
struct NameTable {
    var names: [String] = []
    var index: [String: UInt32] = [:]

    mutating func intern(_ s: String) -> UInt32 {
        if let i = index[s] { return i }
        let i = UInt32(names.count)
        names.append(s)
        index[s] = i
        return i
    }

    @inline(__always) func name(_ i: UInt32) -> String? { i == TokenRecord.none ? nil : names[Int(i)] }
}

public final class Projection {
    public let options: ProjectionOptions
    /// Highest sequence number applied; 0 before any event.
    public internal(set) var lastSeq: UInt64 = 0
    /// Largest `ts` applied (the clock "at sequence N"); nil before any event.
    public internal(set) var maxTs: Int64?
    /// Events applied (fewer than `lastSeq` when a time filter skipped some).
    public internal(set) var eventCount: UInt64 = 0
    /// `issued` or `refreshed` events for a token something had already created.
    public internal(set) var duplicateCreations: UInt64 = 0

    var ids = TokenIDTable()
    var records = RecordPages()
    var names = NameTable()
    var counters = CounterTable()
    var anomalyRecords = AnomalyLog()
    var markerRecords: [MarkerRecord] = []
    var rejection: [UInt64: RejectionStats] = [:]
    var stable = RejectionStats()
    var stableName: UInt32

    // Per-block string number -> token record / name number, reused between blocks.
    private var tokenOfString: [UInt32] = []
    private var nameOfString: [UInt32] = []

    public init(options: ProjectionOptions = ProjectionOptions()) {
        self.options = options
        stableName = names.intern(ProjectionOptions.stableTrack)
    }

    public var tokenCount: Int { records.count }
    public var markers: [MarkerRecord] { markerRecords }
    public var anomalyCount: Int { anomalyRecords.count }

    public var anomalies: [Anomaly] { anomalyRecords.map(anomaly) }

    func anomaly(_ r: AnomalyRecord) -> Anomaly {
        Anomaly(seq: r.seq, ts: r.ts, kind: r.kind, token: r.token == TokenRecord.none ? nil : ids.id(r.token),
                release: names.name(r.release), track: names.name(r.track), gateway: names.name(r.gateway),
                rate: r.kind == .rejectionRate ? r.rate : nil, stableRate: r.kind == .rejectionRate ? r.stableRate : nil)
    }

    /// Anomalies raised by events with sequence numbers in `range`, in order.
    public func anomalies(seq range: ClosedRange<UInt64>) -> [Anomaly] {
        var lo = 0, hi = anomalyRecords.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if anomalyRecords[mid].seq < range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var out = [Anomaly]()
        while lo < anomalyRecords.count && anomalyRecords[lo].seq <= range.upperBound {
            out.append(anomaly(anomalyRecords[lo]))
            lo += 1
        }
        return out
    }

    // MARK: Applying events

    /// Applies one event. Events must come in increasing `seq` order.
    public func apply(_ event: Event, seq: UInt64) {
        if event.type.isMarker {
            applyMarker(seq: seq, event: event)
            return
        }
        func name(_ s: String?) -> UInt32 { s.map { names.intern($0) } ?? TokenRecord.none }
        func token(_ s: String?) -> UInt32 { s.map { record(forID: $0) } ?? TokenRecord.none }
        // Only a creating event's scope is kept: interning others would only grow the name table.
        let creates = event.type == .issued || event.type == .refreshed
        // Only a refresh names a parent with meaning; elsewhere the field is kept but not a token.
        applyTokenEvent(seq: seq, type: event.type, ts: event.ts, token: token(event.token),
                        parent: event.type == .refreshed ? token(event.parent) : TokenRecord.none,
                        sub: name(event.sub), client: name(event.clientID), release: name(event.release), track: name(event.track),
                        gateway: name(event.gateway), reason: name(event.reason), tokenType: name(event.tokenType),
                        scope: creates ? name(event.scope) : TokenRecord.none, exp: event.exp ?? .max)
    }

    /// Applies a decoded block's events `range` (all by default) whose `ts` is at most `tsMax`
    /// (all when nil). `firstSeq` is the sequence number of the block's first event.
    public func apply(_ block: DecodedBlock, firstSeq: UInt64, range: Range<Int>? = nil, tsMax: Int64? = nil) {
        let range = range ?? 0..<block.count
        let stringCount = block.strings.count
        if tokenOfString.count < stringCount {
            tokenOfString = [UInt32](repeating: TokenRecord.none, count: stringCount)
            nameOfString = [UInt32](repeating: TokenRecord.none, count: stringCount)
        } else {
            for i in 0..<stringCount { tokenOfString[i] = TokenRecord.none; nameOfString[i] = TokenRecord.none }
        }
        let limit = tsMax ?? .max
        block.refs.withUnsafeBufferPointer { refs in
            for i in range {
                let ts = block.ts[i]
                if ts > limit { continue }
                let type = block.types[i]
                let seq = firstSeq + UInt64(i)
                if type.isMarker {
                    applyMarker(seq: seq, event: block.event(at: i))
                    continue
                }
                let base = i * StringField.count
                @inline(__always) func name(_ f: StringField) -> UInt32 {
                    let r = refs[base + f.rawValue]
                    if r == UInt32.max { return TokenRecord.none }
                    let cached = nameOfString[Int(r)]
                    if cached != TokenRecord.none { return cached }
                    let n = names.intern(block.strings[Int(r)])
                    nameOfString[Int(r)] = n
                    return n
                }
                @inline(__always) func token(_ f: StringField) -> UInt32 {
                    let r = refs[base + f.rawValue]
                    if r == UInt32.max { return TokenRecord.none }
                    let cached = tokenOfString[Int(r)]
                    if cached != TokenRecord.none { return cached }
                    let n = record(forID: block.strings[Int(r)])
                    tokenOfString[Int(r)] = n
                    return n
                }
                let hasExp = block.presence[i] & PresenceBit.exp != 0
                let creates = type == .issued || type == .refreshed
                applyTokenEvent(seq: seq, type: type, ts: ts, token: token(.token),
                                parent: type == .refreshed ? token(.parent) : TokenRecord.none,
                                sub: name(.sub), client: name(.clientID), release: name(.release), track: name(.track),
                                gateway: name(.gateway), reason: name(.reason), tokenType: name(.tokenType),
                                scope: creates ? name(.scope) : TokenRecord.none, exp: hasExp ? block.exp[i] : .max)
            }
        }
    }

    private func record(forID id: String) -> UInt32 {
        let (index, isNew) = ids.findOrInsert(id)
        if isNew { _ = records.append(TokenRecord()) }
        return index
    }

    // Counts wrap rather than trap: real ones never near 2^64, and a crafted snapshot must not
    // be able to stop the process.
    private func noteEvent(seq: UInt64, ts: Int64) {
        lastSeq = seq
        if let m = maxTs { if ts > m { maxTs = ts } } else { maxTs = ts }
        eventCount &+= 1
    }

    private func applyMarker(seq: UInt64, event: Event) {
        noteEvent(seq: seq, ts: event.ts)
        let key = CounterKey(type: event.type.rawValue, release: event.release.map { names.intern($0) } ?? TokenRecord.none,
                             track: event.track.map { names.intern($0) } ?? TokenRecord.none,
                             gateway: event.gateway.map { names.intern($0) } ?? TokenRecord.none, reason: TokenRecord.none)
        counters.add(key, 1)
        markerRecords.append(MarkerRecord(seq: seq, ts: event.ts, type: event.type, marker: event.marker ?? "",
                                          release: event.release, track: event.track, weight: event.weight))
    }

    // The one place the rules live; both apply paths end here.
    private func applyTokenEvent(seq: UInt64, type: EventType, ts: Int64, token: UInt32, parent: UInt32,
                                 sub: UInt32, client: UInt32, release: UInt32, track: UInt32, gateway: UInt32,
                                 reason: UInt32, tokenType: UInt32, scope: UInt32, exp: Int64) {
        noteEvent(seq: seq, ts: ts)
        counters.add(CounterKey(type: type.rawValue, release: release, track: track, gateway: gateway, reason: reason), 1)

        if token != TokenRecord.none {
            let r = records.pointer(token)
            switch type {
            case .validated:
                // Anomalies judge the token as it stood at the event's own time.
                let kind: AnomalyKind?
                switch r.pointee.status(clock: ts) {
                case .revoked: kind = .revokedValidated
                case .expired: kind = .expiredAccepted
                case .unknown: kind = .neverIssuedValidated
                case .active, .superseded: kind = nil
                }
                if let kind {
                    anomalyRecords.append(AnomalyRecord(seq: seq, ts: ts, kind: kind, token: token, release: release,
                                                        track: track, gateway: gateway))
                }
                r.pointee.useCount &+= 1
            case .issued, .refreshed:
                if r.pointee.createdSeq == 0 {
                    r.pointee.createdSeq = seq
                    r.pointee.issuedAt = ts
                    r.pointee.exp = exp
                    r.pointee.release = release
                    r.pointee.track = track
                    r.pointee.tokenType = tokenType
                    r.pointee.scope = scope
                } else {
                    duplicateCreations &+= 1
                }
            case .revoked:
                if r.pointee.revokedSeq == 0 {
                    r.pointee.revokedSeq = seq
                    r.pointee.revokedAt = ts
                    r.pointee.revokeReason = reason
                }
            case .expired:
                r.pointee.flags |= TokenRecord.expiredEvent
            case .rejected, .deploy, .promote, .rollback:
                break
            }
            if ts > r.pointee.lastSeen { r.pointee.lastSeen = ts }
            if r.pointee.sub == TokenRecord.none { r.pointee.sub = sub }
            if r.pointee.client == TokenRecord.none { r.pointee.client = client }
        }
        if type == .refreshed && parent != TokenRecord.none {
            let p = records.pointer(parent)
            p.pointee.flags |= TokenRecord.superseded
            if p.pointee.child == TokenRecord.none && token != TokenRecord.none && token != parent { p.pointee.child = token }
            if token != TokenRecord.none && token != parent {
                let r = records.pointer(token)
                if r.pointee.parent == TokenRecord.none { r.pointee.parent = parent }
            }
        }
        if (type == .validated || type == .rejected) && release != TokenRecord.none && track != TokenRecord.none {
            noteVerdict(seq: seq, ts: ts, rejected: type == .rejected, release: release, track: track, gateway: gateway)
        }
    }

    private func noteVerdict(seq: UInt64, ts: Int64, rejected: Bool, release: UInt32, track: UInt32, gateway: UInt32) {
        if track == stableName {
            if rejected { stable.rejected &+= 1 } else { stable.validated &+= 1 }
            return
        }
        let key = UInt64(release) << 32 | UInt64(track)
        var s = rejection[key] ?? RejectionStats()
        if rejected { s.rejected &+= 1 } else { s.validated &+= 1 }
        if !s.alerted && s.samples >= options.rejectionSamplesMin && stable.samples >= options.rejectionSamplesMin
            && s.rate > options.rejectionFactor * stable.rate {
            s.alerted = true
            anomalyRecords.append(AnomalyRecord(seq: seq, ts: ts, kind: .rejectionRate, release: release, track: track,
                                                gateway: gateway, rate: s.rate, stableRate: stable.rate))
        }
        rejection[key] = s
    }

    // MARK: Copies

    /// An independent copy (the state at one point while the original moves on).
    public func copy() -> Projection {
        let c = Projection(options: options)
        c.lastSeq = lastSeq; c.maxTs = maxTs; c.eventCount = eventCount; c.duplicateCreations = duplicateCreations
        c.ids = ids.copy(); c.records = records.copy(); c.names = names; c.counters = counters
        c.anomalyRecords = anomalyRecords; c.markerRecords = markerRecords; c.rejection = rejection
        c.stable = stable; c.stableName = stableName
        return c
    }
}
