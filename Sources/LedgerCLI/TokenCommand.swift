import LedgerModel
import LedgerProjection
import LedgerStorage

enum TokenCommand {
    static let usage = """
    usage: tokenledger token --data DIR [--format table|ndjson] ID

    One token's whole timeline, for forensics: every event naming it (and the refresh that
    replaced it), its status after each step, the anomalies they raised, its refresh chain and
    its state now. ID may be the raw JWT: it is fingerprinted as ingest does.

      --format F   table (default) or ndjson: one line per event, the event's fields plus
                   "seq", "status_after", "clock" and "anomaly" when one was raised

    """ + ProjectionSupport.optionsHelp

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ProjectionSupport.options.union(["format"]), flags: ProjectionSupport.flags,
                                                        positionalsMax: 1), command: "token")
        guard let raw = args.positionals.first else { throw .usage("token", "give the token id") }
        let format = args.string("format") ?? "table"
        guard format == "table" || format == "ndjson" else { throw .usage("token", "--format must be table or ndjson") }
        let id = TokenFingerprint.normalize(raw)
        let (log, engine, _) = try ProjectionSupport.open(args)
        // The token's events come from the token index (FORMAT.md "Token index"), which also
        // writes `.tix` files the next run starts from; the rest of the ledger is never decoded.
        let index = TokenIndex(directory: log.directory)
        index.update(blocks: log.blocks)
        let found: [IndexedEvent]
        do { found = try index.events(token: id) } catch { throw .failure("token", "\(error)") }
        let timeline = TokenCommand.timeline(of: id, found, headClock: log.blocks.reduce(Int64.min) { max($0, $1.header.maxTs) },
                                             engine: engine)
        index.waitForWrites()
        for n in index.notes { printError("tokenledger token: note: \(n)") }
        for n in engine.notes { printError("tokenledger token: note: \(n)") }
        guard !timeline.steps.isEmpty else { throw .failure("token", "token \(id) does not appear in the ledger") }
        let out = OutputStream(fd: 1)
        if format == "ndjson" {
            for step in timeline.steps {
                var line = NDJSONEncoder.line(step.event, seq: SequenceNumber(step.seq), receivedAt: step.receivedAt)
                line.removeLast() // the closing brace: the step's own fields follow
                var w = JSONObjectWriter()
                w.string("status_after", step.statusAfter.rawValue)
                w.int("clock", step.clock)
                w.string("anomaly", step.anomaly?.name)
                let extra = w.finish().dropFirst()
                try out.write(line + "," + extra + "\n")
            }
        } else {
            try out.write(human(timeline))
        }
        try out.flush()
        return 0
    }

    struct Step {
        let seq: UInt64
        let receivedAt: Int64
        let event: Event
        /// The ledger's clock at this step: the largest `ts` up to its seq.
        let clock: Int64
        let statusAfter: TokenStatus
        let anomaly: AnomalyKind?
        /// True when the event names the token as the `parent` of a refresh.
        let asParent: Bool
    }

    struct Timeline {
        let token: String
        let steps: [Step]
        /// Oldest ancestor first; the token itself is in it.
        let chain: [String]
        let view: TokenView?
        let headClock: Int64
    }

    /// A token's status depends only on the events naming it and on the clock, so a projection
    /// fed just those events, judged at the ledger-wide clock of each step, gives the full one's
    /// answers (the same reasoning as `ProjectionEngine.timeline(of:)`, which scans every block).
    static func timeline(of id: String, _ found: [IndexedEvent], headClock: Int64, engine: ProjectionEngine) -> Timeline {
        let mini = Projection(options: engine.options)
        var steps = [Step]()
        for f in found {
            let asToken = f.event.token == id
            mini.apply(f.event, seq: f.seq)
            // A release-level alert raised by the same event is not this token's.
            let raised = asToken ? mini.anomalies(seq: f.seq...f.seq).first(where: { $0.kind != .rejectionRate })?.kind : nil
            steps.append(Step(seq: f.seq, receivedAt: f.receivedAt, event: f.event, clock: f.clock,
                              statusAfter: mini.status(of: id, clock: f.clock) ?? .unknown, anomaly: raised, asParent: !asToken))
        }
        let head = headClock == .min ? 0 : headClock
        // The chain reaches other tokens; the state now has their links.
        var chain = [id]
        if !steps.isEmpty, let now = try? engine.state(at: .head) { chain = now.projection.refreshChain(of: id) }
        return Timeline(token: id, steps: steps, chain: chain.isEmpty ? [id] : chain, view: mini.token(id, clock: head), headClock: head)
    }

    static func human(_ t: Timeline) -> String {
        let v = t.view
        var s = "token \(t.token)\n"
        s += "  status now   \(v?.status.rawValue ?? "unknown") (clock \(ProjectionSupport.time(t.headClock)))\n"
        if let v {
            s += "  subject      \(v.sub ?? "-")   client \(v.clientID ?? "-")   type \(v.tokenType ?? "-")\n"
            s += "  issued by    \(v.release ?? "-") on \(v.track ?? "-")"
            if let at = v.issuedAt { s += " at \(ProjectionSupport.time(at)) (seq \(v.createdSeq!))" }
            s += "\n  expires      \(ProjectionSupport.time(v.exp))   last seen \(ProjectionSupport.time(v.lastSeen))   uses \(v.useCount)\n"
            if let at = v.revokedAt { s += "  revoked      \(ProjectionSupport.time(at)) (seq \(v.revokedSeq!), reason \(v.revocationReason ?? "-"))\n" }
        }
        if t.chain.count > 1 {
            s += "  refresh chain " + t.chain.map { $0 == t.token ? "[\($0)]" : $0 }.joined(separator: " → ") + "\n"
        }
        let anomalies = t.steps.filter { $0.anomaly != nil }
        s += "  anomalies    \(anomalies.count)" + (anomalies.isEmpty ? "" : ": " + anomalies.prefix(5).map { "\($0.anomaly!.name) at seq \($0.seq)" }.joined(separator: ", ") + (anomalies.count > 5 ? ", …" : "")) + "\n\n"
        s += "SEQ         TIME (UTC)                EVENT      GATEWAY  RELEASE    TRACK    STATUS  REASON      STATUS AFTER  ANOMALY\n"
        for step in t.steps {
            let e = step.event
            let type = step.asParent ? "refreshed→" : e.type.name
            s += tableCell(String(step.seq), 12) + tableCell(ProjectionSupport.time(e.ts), 26) + tableCell(type, 11)
                + tableCell(e.gateway, 9) + tableCell(e.release, 11) + tableCell(e.track, 9)
                + tableCell(e.status.map(String.init), 8) + tableCell(e.reason, 12)
                + tableCell(step.statusAfter.rawValue, 14) + (step.anomaly.map { "⚠ " + $0.name } ?? "") + "\n"
        }
        return s
    }
}
