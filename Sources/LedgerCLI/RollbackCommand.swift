import Foundation
import LedgerModel
import LedgerProjection
import LedgerServer
import LedgerStorage

enum RollbackCommand {
    static let usage = """
    usage: tokenledger rollback --data DIR --to M [--policy revoke|keep] [--dry-run]
                                [--format json|table] [--id ROLLBACK_MARKER]
           tokenledger rollback --server HOST:PORT --admin-key-file FILE --to M [...]

    Rolls token state back to deployment marker M (PRODUCT.md "Rollback semantics"): active
    tokens created after M by a release no marker up to M names are revoked (policy revoke,
    the default) or only listed (keep); tokens with no release are listed as unattributed and
    kept; tokens of releases known at M are kept; tokens revoked since M stay revoked.
    The chain is verified up to M first; a ledger whose history does not verify is refused.
    Without --dry-run, appends a "rollback" marker (id ROLLBACK_MARKER, default
    rollback-<its seq>) and one "revoked" event (reason "rollback") per token, in one commit,
    and prints the plan and what was appended.

      --format F   json (default; one object: marker, revoke, kept_known, unattributed,
                   stay_revoked, ...) or table
      --server HOST:PORT --admin-key-file FILE
                   ask a running server (which holds the ledger) to plan or apply it, with its
                   admin key; the revocations then reach its subscribers at once. With
                   --keys on the server, also --gateway ID --key-file FILE.

    """ + ProjectionSupport.optionsHelp

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ProjectionSupport.options.union(["to", "policy", "format", "id", "server", "admin-key-file"]).union(ClientAuth.options),
                                                        flags: ProjectionSupport.flags.union(["dry-run"])), command: "rollback")
        if args.string("server") != nil { return try remote(args) }
        let target = try args.required("to")
        guard let policy = RollbackPolicy(rawValue: args.string("policy") ?? "revoke") else { throw .usage("rollback", "--policy must be revoke or keep") }
        let format = args.string("format") ?? "json"
        guard format == "json" || format == "table" else { throw .usage("rollback", "--format must be json or table") }
        let dryRun = args.has("dry-run")
        let directory = try args.required("data")
        let (log, engine, _) = try ProjectionSupport.open(args, writable: !dryRun)
        if !dryRun && log.isReadOnly {
            throw .failure("rollback", "the ledger is read-only (\(log.recovery.damage.first.map { "\($0)" } ?? "damaged")); nothing appended")
        }
        let now = try ProjectionSupport.state(engine, at: .head, command: "rollback")
        let prepared: PreparedRollback
        do {
            prepared = try now.projection.prepareRollback(to: target, policy: policy, dryRun: dryRun, markerID: args.string("id"),
                                                          nowMs: SystemClock().nowMs(), ledgerDirectory: directory)
        } catch { throw .failure("rollback", "\(error)") }
        let plan = prepared.plan, report = prepared.verified, markerID = prepared.markerID, ts = prepared.ts, events = prepared.events
        let out = OutputStream(fd: 1)
        if dryRun {
            try out.write(format == "json" ? plan.json + "\n" : table(plan, verified: report, appended: nil))
            try out.flush()
            return 0
        }

        let appended: AppendResult
        do {
            // One commit, fsynced before it is reported (the log's default policy).
            appended = try log.append(events)
            try log.close()
        } catch {
            throw .failure("rollback", "appending the rollback failed: \(error)")
        }
        if format == "json" {
            var w = JSONObjectWriter()
            w.string("rollback_marker", markerID)
            w.int("first_seq", Int64(appended.firstSeq)); w.int("last_seq", Int64(appended.lastSeq))
            w.string("chain_hash", appended.chainHash.hex)
            w.int("revoked", Int64(plan.revoke.count)); w.int("ts", ts)
            w.raw("plan", plan.json)
            try out.write(w.finish() + "\n")
        } else {
            try out.write(table(plan, verified: report, appended: (markerID, appended)))
        }
        try out.flush()
        return 0
    }

    /// The rollback asked of a running server (PROTOCOL.md "Admin: rollback").
    static func remote(_ args: Arguments) throws(CLIError) -> Int32 {
        guard let endpoint = Endpoint(parsing: try args.required("server")) else { throw .usage("rollback", "--server expects HOST:PORT") }
        let to = try args.required("to")
        let keyFile = try args.required("admin-key-file")
        guard let key = ClientAuth.readKey(keyFile) else { throw .failure("rollback", "cannot read the admin key from \(keyFile)") }
        let policy = args.string("policy") ?? "revoke"
        guard RollbackPolicy(rawValue: policy) != nil else { throw .usage("rollback", "--policy must be revoke or keep") }
        var request = "{\"to\":\(ClientAuth.jsonString(to)),\"policy\":\"\(policy)\",\"dry_run\":\(args.has("dry-run")),\"admin_key\":\(ClientAuth.jsonString(key))"
        if let id = args.string("id") { request += ",\"id\":\(ClientAuth.jsonString(id))" }
        request += "}"
        let hello = try ClientAuth.hello(args)
        let reply: Frame
        do {
            let client = try FramedClient(endpoint, first: (hello.map { [$0] } ?? []) + [Frame(.rollback, id: 1, text: request)])
            defer { client.close() }
            var found: Frame?
            while found == nil, let f = try client.next() {
                if f.type == .rollbackResult || f.type == .error { found = f }
            }
            guard let found else { throw CLIError.failure("rollback", "the server closed the connection without an answer; check the ledger before retrying") }
            reply = found
        } catch let e as CLIError { throw e } catch { throw .failure("rollback", "\(error)") }
        if reply.type == .error { throw .failure("rollback", "server: \(reply.text)") }
        if args.string("format") == "table" { print(remoteTable(reply.payload), terminator: "") } else { print(reply.text) }
        return 0
    }

    static func remoteTable(_ payload: [UInt8]) -> String {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any], let p = o["plan"] as? [String: Any] else {
            return String(decoding: payload, as: UTF8.self) + "\n"
        }
        func str(_ k: String) -> String { p[k].map { "\($0)" } ?? "-" }
        let revoke = (p["revoke"] as? [String]) ?? []
        var s = "rollback to \(str("marker")) (\(str("marker_release")) on \(str("marker_track")), seq \(str("marker_seq"))), state now at seq \(str("head_seq"))\n"
        s += "  releases known at the marker: \(((p["known_releases"] as? [String]) ?? []).joined(separator: ", "))\n"
        s += "  releases rolled back:        \(((p["rolled_back_releases"] as? [String]) ?? []).joined(separator: ", "))\n"
        s += "  policy \(str("policy")): revoke \(revoke.count), kept (known release) \(str("kept_known")), unattributed \(str("unattributed")), stay revoked \(str("stay_revoked"))\n"
        for id in revoke.prefix(5) { s += "    revoke \(id)\n" }
        if revoke.count > 5 { s += "    … and \(revoke.count - 5) more\n" }
        if (o["dry_run"] as? Bool) == false {
            s += "appended \(o["rollback_marker"] ?? "-") and \(o["revoked"] ?? 0) revocations: seq \(o["first_seq"] ?? 0)-\(o["last_seq"] ?? 0), chain \(o["chain_hash"] ?? "-")\n"
        } else {
            s += "dry run: nothing appended\n"
        }
        return s
    }

    static func table(_ p: RollbackPlan, verified: VerifyReport, appended: (String, AppendResult)?) -> String {
        var s = "rollback to \(p.marker.marker): \(p.marker.type.name) of \(p.marker.release ?? "-") on \(p.marker.track ?? "-") at seq \(p.marker.seq), \(ProjectionSupport.time(p.marker.ts))\n"
        s += "  history verified through seq \(verified.lastSeq) (chain \(verified.chainHash.hex.prefix(16))…)\n"
        s += "  state now: seq \(p.headSeq), clock \(ProjectionSupport.time(p.headClock))\n"
        s += "  releases known at the marker: \(p.knownReleases.isEmpty ? "none" : p.knownReleases.joined(separator: ", "))\n"
        s += "  releases rolled back:        \(p.rolledBackReleases.isEmpty ? "none" : p.rolledBackReleases.joined(separator: ", "))\n"
        s += "  policy \(p.policy.rawValue)\n"
        s += "    revoke                  \(p.revoke.count)\n"
        if p.policy == .keep { s += "    kept (unknown release)  \(p.keptUnknownRelease)\n" }
        s += "    kept (known release)    \(p.keptKnown)\n"
        s += "    unattributed (kept)     \(p.unattributed)\n"
        s += "    stay revoked            \(p.stayRevoked)\n"
        for id in p.revoke.prefix(10) { s += "      revoke \(id)\n" }
        if p.revoke.count > 10 { s += "      … and \(p.revoke.count - 10) more (--format json lists all)\n" }
        if let (id, a) = appended {
            s += "appended marker \(id) and \(p.revoke.count) revocations: seq \(a.firstSeq)-\(a.lastSeq), chain \(a.chainHash.hex)\n"
        } else {
            s += "dry run: nothing appended\n"
        }
        return s
    }
}
