import LedgerModel
import LedgerProjection
import LedgerStorage

enum MetricsCommand {
    static let usage = """
    usage: tokenledger metrics --data DIR [--at-marker M | --at-seq N | --at-time T] [--rate-window-ms W]

    Metrics of the ledger's state in the Prometheus text format: events by type, release,
    track, gateway and reason; tokens by status; active tokens by release and track; issue,
    expiration and invalidation rates over the last W ms of event time (default 300000);
    anomalies by kind; rejection ratios by release and track; ledger head and size.

    """ + ProjectionSupport.optionsHelp

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ProjectionSupport.options.union(["at-seq", "at-time", "at-marker", "rate-window-ms"]),
                                                        flags: ProjectionSupport.flags), command: "metrics")
        var options = MetricsOptions()
        if let w = try args.int("rate-window-ms", range: 1...(Int64(365) * 86_400_000)) { options.rateWindowMs = w }
        let point = try ProjectionSupport.point(args)
        let (log, engine, _) = try ProjectionSupport.open(args)
        let result = try ProjectionSupport.state(engine, at: point, command: "metrics")
        var storedBytes: UInt64 = 0
        for b in log.blocks { storedBytes += UInt64(b.header.totalBytes) }
        let extra: [(String, String, String, Double)] = [
            ("tokenledger_ledger_events", "gauge", "Events in the whole ledger (its head sequence number).", Double(log.lastSeq)),
            ("tokenledger_ledger_bytes", "gauge", "Bytes of block headers and compressed payloads in the ledger's segments.", Double(storedBytes)),
            ("tokenledger_ledger_segments", "gauge", "Segment files in the ledger.", Double(log.segments.count)),
        ]
        let out = OutputStream(fd: 1)
        try out.write(result.projection.prometheusText(clock: result.clock, options: options, extra: extra))
        try out.flush()
        return 0
    }
}
