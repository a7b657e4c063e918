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
        let (_, engine, _) = try ProjectionSupport.open(args)
        let timeline: TokenTimeline
        do { timeline = try engine.timeline(of: id) } catch { throw .failure("token", "\(error)") }
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

    static func human(_ t: TokenTimeline) -> String {
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
