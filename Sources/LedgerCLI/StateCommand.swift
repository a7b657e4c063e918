import LedgerModel
import LedgerProjection
import LedgerStorage

enum StateCommand {
    static let usage = """
    usage: tokenledger state --data DIR [--at-seq N | --at-time T | --at-marker M]
                             [--summary | --token ID | --anomalies | --format ndjson|table]

    Token state rebuilt from the ledger, at the head or at a point in its history (PRODUCT.md
    "Token state rules": at seq N the clock is the largest ts applied; at time T only events
    with ts <= T count and the clock is T; at marker M, events up to M, clock = M's ts).

      --summary        the summary object as one JSON line: seq, clock, tokens, active,
                       expired, revoked, superseded, unknown, anomalies by kind
      --token ID       one token's state as JSON (a raw JWT is fingerprinted first)
      --anomalies      the anomalies raised up to the point, in order, as NDJSON (or
                       --format table): revoked_validated, expired_accepted,
                       never_issued_validated, rejection_rate
      --format F       every token, one per line: ndjson or table
      (none)           the summary, for people
      --at-seq N, --at-time T (epoch ms or RFC 3339), --at-marker M

    """ + ProjectionSupport.optionsHelp

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ProjectionSupport.options.union(["at-seq", "at-time", "at-marker", "token", "format"]),
                                                        flags: ProjectionSupport.flags.union(["summary", "anomalies"])), command: "state")
        let point = try ProjectionSupport.point(args)
        let format = args.string("format")
        if let format, format != "ndjson" && format != "table" { throw .usage("state", "--format must be ndjson or table") }
        let listing = args.string("token") == nil && !args.has("anomalies")
        let modes = (args.has("summary") ? 1 : 0) + (args.string("token") != nil ? 1 : 0) + (args.has("anomalies") ? 1 : 0)
            + (format != nil && listing ? 1 : 0)
        guard modes <= 1 else { throw .usage("state", "give one of --summary, --token, --anomalies, --format") }
        let (_, engine, _) = try ProjectionSupport.open(args)
        let result = try ProjectionSupport.state(engine, at: point, command: "state")
        let p = result.projection
        let out = OutputStream(fd: 1)

        if args.has("summary") {
            try out.write(result.summary.json + "\n")
        } else if let raw = args.string("token") {
            let id = TokenFingerprint.normalize(raw)
            guard let view = p.token(id, clock: result.clock) else {
                try out.flush()
                throw .failure("state", "token \(id) does not appear in the ledger at \(point)")
            }
            if format == "table" { try out.write(table(view)) } else { try out.write(view.json + "\n") }
        } else if args.has("anomalies") {
            if format == "table" {
                try out.write("SEQ         TIME (UTC)                ANOMALY                 TOKEN                    RELEASE    TRACK    GATEWAY  DETAIL\n")
            }
            for a in p.anomalies {
                if format == "table" {
                    let detail = a.rate.map { "rejection rate \(String(format1: $0 * 100))% vs stable \(String(format1: (a.stableRate ?? 0) * 100))%" } ?? ""
                    try out.write(tableCell(String(a.seq), 12) + tableCell(ProjectionSupport.time(a.ts), 26)
                                  + tableCell(a.kind.name, 24) + tableCell(a.token, 25) + tableCell(a.release, 11)
                                  + tableCell(a.track, 9) + tableCell(a.gateway, 9) + detail + "\n")
                } else {
                    try out.write(a.json + "\n")
                }
            }
        } else if format == "ndjson" {
            try p.forEachToken(clock: result.clock) { (view) throws(CLIError) in
                out.buffer.append(contentsOf: view.json.utf8)
                out.buffer.append(10)
                try out.flushIfNeeded()
            }
        } else if format == "table" {
            try out.write("TOKEN                                    STATUS      SUB              CLIENT        RELEASE    TRACK    ISSUED (UTC)              EXPIRES (UTC)             USES\n")
            try p.forEachToken(clock: result.clock) { (v) throws(CLIError) in
                try out.write(tableCell(v.id, 41) + tableCell(v.status.rawValue, 12) + tableCell(v.sub, 17)
                              + tableCell(v.clientID, 14) + tableCell(v.release, 11) + tableCell(v.track, 9)
                              + tableCell(ProjectionSupport.time(v.issuedAt), 26) + tableCell(ProjectionSupport.time(v.exp), 26)
                              + String(v.useCount) + "\n")
            }
        } else {
            try out.write(human(result))
        }
        try out.flush()
        return 0
    }

    static func human(_ r: StateResult) -> String {
        let s = r.summary
        var t = "state at \(r.point): seq \(s.seq), clock \(ProjectionSupport.time(s.clock))\n"
        if let snap = r.snapshot {
            t += "  (from the snapshot at seq \(snap.seq) and \(r.replayedEvents) events replayed)\n"
        } else {
            t += "  (\(r.replayedEvents) events replayed, no snapshot)\n"
        }
        t += "  tokens      \(s.tokens)\n"
        t += "    active      \(s.active)\n    expired     \(s.expired)\n    revoked     \(s.revoked)\n    superseded  \(s.superseded)\n"
        t += "  unknown     \(s.unknown)   (seen only in validations/rejections)\n"
        t += "  anomalies\n"
        for kind in AnomalyKind.allCases { t += "    " + kind.name.padding(24) + String(s.anomalies[kind] ?? 0) + "\n" }
        return t
    }

    static func table(_ v: TokenView) -> String {
        var rows: [(String, String)] = [("token", v.id), ("status", v.status.rawValue), ("active", v.isActive ? "true" : "false")]
        func add(_ k: String, _ value: String?) { if let value { rows.append((k, value)) } }
        add("sub", v.sub); add("client_id", v.clientID); add("release", v.release); add("track", v.track); add("token_type", v.tokenType)
        add("issued", v.issuedAt.map { ProjectionSupport.time($0) + " (seq \(v.createdSeq!))" })
        add("expires", v.exp.map { ProjectionSupport.time($0) }); add("last seen", v.lastSeen.map { ProjectionSupport.time($0) })
        add("uses", String(v.useCount))
        add("revoked", v.revokedAt.map { ProjectionSupport.time($0) + " (seq \(v.revokedSeq!), reason \(v.revocationReason ?? "-"))" })
        add("parent", v.parent); add("child", v.child)
        return rows.map { $0.0.padding(12) + $0.1 }.joined(separator: "\n") + "\n"
    }
}
