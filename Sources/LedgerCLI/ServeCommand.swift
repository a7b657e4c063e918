import Foundation
import Glibc
import LedgerCrypto
import LedgerModel
import LedgerServer
import LedgerStorage

enum ServeCommand {
    static let usage = """
    usage: tokenledger serve --data DIR [--listen HOST:PORT] [--fsync always|never]
                             [--connections-max N] [--keys FILE] [--admin-key-file FILE]
                             [--http HOST:PORT] [--digest-key FILE] [--no-alerts]
                             [--subscriber-buffer BYTES] [--commit-priority auto|realtime|normal]
                             [--quiet]

    Takes gateway events over TCP (PROTOCOL.md): NDJSON lines from fire-and-forget shippers
    (nc, socat, Kong tcp-log), or framed batches acknowledged once durable, on the same port.
    All connections share one group commit: one fsync for everything waiting.
    SIGTERM or SIGINT: stop accepting, commit and acknowledge what was received, close.

      --listen HOST:PORT   where to listen (default 127.0.0.1:7400; port 0 picks a free one).
                           The address is printed on stdout as "listening HOST:PORT".
      --fsync P            always (default: an acknowledged batch survives power loss) or
                           never (acknowledged once written to the OS: survives kill -9 only)
      --connections-max N  connections at once (default 256); more are refused with a message
      --keys FILE          require every connection to authenticate as a gateway: FILE has one
                           "GATEWAY-ID KEY" per line (keys of 16 bytes or more). Events then
                           carry the authenticated gateway. See PROTOCOL.md "Authentication".
      --admin-key-file F   allow admin requests (rollback) from clients presenting the key in
                           F (first line, 16 bytes or more); without it they are refused
      --http HOST:PORT     also serve the HTTP API (PROTOCOL.md "HTTP API": /healthz, /metrics,
                           token state, introspection, event queries, rollback...); port 0
                           picks a free one, printed on stdout as "http HOST:PORT". Off
                           unless given. It has no authentication except the admin key for
                           rollback: keep it on loopback or a private network.
      --digest-key FILE    sign GET /v1/digest answers with this key (as `tokenledger digest`)
      --no-alerts          do not keep the state at the head (no anomaly alerts, no rollback,
                           no HTTP token answers; faster start)
      --subscriber-buffer BYTES
                           bytes queued for one subscriber that is not reading (default
                           16 MiB); past it the subscription ends with an ERROR frame naming the
                           from_seq to resubscribe with, so a stalled subscriber costs memory
                           only up to this
      --commit-priority P  how the one committer thread is scheduled. auto (default): at
                           real-time priority (SCHED_FIFO 1) where permitted (root,
                           CAP_SYS_NICE, or systemd LimitRTPRIO=1), so acknowledgements and
                           revocations to subscribers do not wait for a core while parsers
                           fill them; otherwise normal, with one log line saying why.
                           realtime: the same, but refuse to start without it. normal: never.
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data", "listen", "fsync", "connections-max", "keys", "admin-key-file", "http", "digest-key", "subscriber-buffer", "commit-priority"],
                                                        flags: ["quiet", "no-alerts"]), command: "serve")
        let directory = try args.required("data")
        var options = ServerOptions()
        if let text = args.string("listen") {
            guard let e = Endpoint(parsing: text) else { throw .usage("serve", "--listen expects HOST:PORT (IPv4), got \"\(text)\"") }
            options.listen = e
        }
        if let n = try args.int("connections-max", range: 1...10_000) { options.connectionsMax = Int(n) }
        if let n = try args.int("subscriber-buffer", range: 4096...(1 << 30)) { options.subscriberBytesMax = Int(n) }
        // Every fsync the ledger does is timed for /metrics (the log is opened on this).
        let fsyncLatency = LatencyHistogram()
        if let text = args.string("http") {
            guard let e = Endpoint(parsing: text) else { throw .usage("serve", "--http expects HOST:PORT (IPv4), got \"\(text)\"") }
            var http = HTTPAPIOptions(endpoint: e)
            http.fsyncLatency = fsyncLatency
            if let path = args.string("digest-key") { http.digestKey = try DigestCommand.loadKey(path, command: "serve") }
            options.http = http
        } else if args.string("digest-key") != nil {
            throw .usage("serve", "--digest-key signs /v1/digest answers: give --http too")
        }
        var fsync = FsyncPolicy.always
        if let text = args.string("fsync") {
            switch text {
            case "always": fsync = .always
            case "never": fsync = .never
            default: throw .usage("serve", "--fsync must be always or never (an interval policy would acknowledge before fsync)")
            }
        }
        let quiet = args.has("quiet")
        options.alerts = !args.has("no-alerts")
        if let text = args.string("commit-priority") {
            guard let p = CommitPriority(rawValue: text) else { throw .usage("serve", "--commit-priority must be auto, realtime or normal, got \"\(text)\"") }
            options.commitPriority = p
        }
        if let path = args.string("admin-key-file") {
            guard let key = ClientAuth.readKey(path), key.utf8.count >= Credentials.keyBytesMin else {
                throw .failure("serve", "cannot read an admin key of \(Credentials.keyBytesMin) bytes or more from \(path)")
            }
            options.adminKeyDigest = SHA256.hash(Array(key.utf8))
        }
        if let path = args.string("keys") {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw .failure("serve", "cannot read the keys file \(path)")
            }
            do { options.credentials = try Credentials(parsing: text, source: path) } catch { throw .failure("serve", "\(error)") }
        }

        // Signals go to this thread only (sigwait below); every thread started later inherits
        // the mask.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: LogOptions(fsync: fsync, preallocate: true), fileSystem: TimedFileSystem(syncs: fsyncLatency)) } catch {
            throw .failure("serve", "\(error)")
        }
        if let cut = log.recovery.tailCut { printError("serve: recovered: \(cut)") }
        if log.isReadOnly {
            throw .failure("serve", "the ledger is read-only: \(log.recovery.damage.first.map { "\($0)" } ?? "damaged"); not serving")
        }
        let server = LedgerServer(log: log, options: options, logger: { message in if !quiet { printError("serve: " + message) } })
        do { try server.start() } catch { throw .failure("serve", "\(error)") }
        // Unbuffered, so a script reading the port sees it now.
        var line = Array("listening \(options.listen.host):\(server.port)\n".utf8)
        if let http = options.http { line += Array("http \(http.endpoint.host):\(server.httpPort)\n".utf8) }
        _ = line.withUnsafeBytes { Glibc.write(1, $0.baseAddress!, $0.count) }
        printError("serve: ledger \(directory) at seq \(log.lastSeq); listening on \(options.listen.host):\(server.port), fsync \(fsync)"
                   + (server.committerIsRealtime ? ", committer at real-time priority" : "")
                   + (options.credentials.map { ", \($0.gateways.count) gateway keys required" } ?? ", no authentication")
            + (options.http.map { "; HTTP API on \($0.endpoint.host):\(server.httpPort)" } ?? ""))

        var last = server.statistics
        while true {
            var timeout = timespec(tv_sec: 5, tv_nsec: 0)
            let sig = sigtimedwait(&signals, nil, &timeout)
            if sig == SIGTERM || sig == SIGINT {
                printError("serve: \(sig == SIGTERM ? "SIGTERM" : "SIGINT"): finishing what is in flight")
                break
            }
            let now = server.statistics
            if !quiet && now != last {
                printError("serve: \(now.eventsCommitted) events committed, head seq \(log.lastSeq); \(now.connectionsOpen) connections open; \(now.batchesAcknowledged) batches acknowledged, \(now.batchesRefused) refused; \(now.linesRejected) lines rejected")
                last = now
            }
        }
        server.stop()
        let s = server.statistics
        printError("serve: stopped at seq \(log.lastSeq): \(s.eventsCommitted) events committed this run, \(s.batchesAcknowledged) batches acknowledged, \(s.linesRejected) lines rejected")
        return 0
    }
}
