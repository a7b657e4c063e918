// One token's whole history: every event naming it (as `token`, or as `parent` of the refresh
// that replaced it), its status after each, and the anomalies those events raised. A token's
// status depends only on the events naming it and on the clock, so a projection fed just those
// events, judged at the ledger-wide clock of each step, gives the same answers as the full one.
import LedgerModel
import LedgerStorage

public struct TimelineStep: Sendable {
    public let seq: UInt64
    public let receivedAt: Int64
    public let event: Event
    /// The clock at this sequence number: the largest `ts` of the ledger up to it.
    public let clock: Int64
    public let statusAfter: TokenStatus
    public let anomaly: AnomalyKind?
    /// True when the event names the token as the `parent` of a refresh.
    public let asParent: Bool
}

public struct TokenTimeline: Sendable {
    public let token: String
    public let steps: [TimelineStep]
    /// Oldest ancestor first; the token itself is in it.
    public let chain: [String]
    public let view: TokenView?
    public let headClock: Int64
}

extension ProjectionEngine {
    public func timeline(of id: String) throws(ProjectionError) -> TokenTimeline {
        let locations = Array(log.locateBlocks())
        let mini = Projection(options: options)
        var steps = [TimelineStep]()
        var clock = Int64.min
        try forEachBlock(locations, verb: "read") { (location, block) throws(ProjectionError) in
            guard let n = block.stringNumber(of: id) else {
                clock = max(clock, location.header.maxTs)
                return
            }
            for i in 0..<block.count {
                clock = max(clock, block.ts[i])
                let asToken = block.ref(i, .token) == n
                let asParent = block.types[i] == .refreshed && block.ref(i, .parent) == n
                guard asToken || asParent else { continue }
                let seq = location.header.firstSeq + UInt64(i)
                let event = block.event(at: i)
                let anomaliesBefore = mini.anomalyCount
                mini.apply(event, seq: seq)
                // A release-level alert raised by the same event is not this token's.
                let raised = asToken ? mini.anomalyRecords[anomaliesBefore...].first(where: { $0.kind != .rejectionRate })?.kind : nil
                steps.append(TimelineStep(seq: seq, receivedAt: location.header.receivedAt, event: event, clock: clock,
                                          statusAfter: mini.status(of: id, clock: clock) ?? .unknown, anomaly: raised, asParent: asParent && !asToken))
            }
            if let progress { progress("searched through seq \(location.header.lastSeq) of \(log.lastSeq), \(steps.count) events") }
        }
        let head = clock == .min ? 0 : clock
        // The chain reaches other tokens; the state now has their links.
        var chain = [id]
        if !steps.isEmpty, let now = try? state(at: .head) { chain = now.projection.refreshChain(of: id) }
        return TokenTimeline(token: id, steps: steps, chain: chain.isEmpty ? [id] : chain, view: mini.token(id, clock: head), headClock: head)
    }
}
