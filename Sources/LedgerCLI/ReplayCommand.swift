import LedgerModel
import LedgerStorage

enum ReplayCommand {
    static let usage = """
    usage: tokenledger replay --data DIR [--from-seq N] [--to-seq M] [--since T] [--until T]
                              [--token ID] [--sub S] [--type T] [--release R] [--gateway G]
                              [--limit N] [--format ndjson|table]

    Streams the ledger's events in sequence order. NDJSON output (the default) carries "seq",
    "ts" as epoch milliseconds and "received_at"; the table is for people. Filters combine
    with AND; --type may be repeated or comma-separated. T is epoch ms or RFC 3339.
    --token also finds a token given as the raw JWT (it is fingerprinted as ingest does).

      --data DIR          the ledger directory
      --from-seq, --to-seq   sequence range (inclusive)
      --since, --until       gateway-time range (inclusive)
      --limit N           stop after N matching events
      --format F          ndjson (default) or table
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data", "from-seq", "to-seq", "since", "until", "token", "sub", "type",
                                                                  "release", "gateway", "limit", "format"]), command: "replay")
        let directory = try args.required("data")
        var filter = EventFilter()
        filter.token = args.string("token").map { TokenFingerprint.normalize($0) }
        filter.sub = args.string("sub")
        filter.release = args.string("release")
        filter.gateway = args.string("gateway")
        for list in args.strings("type") {
            for name in list.split(separator: ",") {
                guard let t = EventType(name: name) else {
                    throw .usage("replay", "--type: unknown event type \"\(name)\" (one of \(EventType.allCases.map(\.name).joined(separator: ", ")))")
                }
                filter.types.insert(t)
            }
        }
        filter.fromSeq = try args.uint("from-seq")
        filter.toSeq = try args.uint("to-seq")
        filter.since = try args.time("since")
        filter.until = try args.time("until")
        let limit = try args.uint("limit") ?? UInt64.max
        let format = args.string("format") ?? "ndjson"
        guard format == "ndjson" || format == "table" else { throw .usage("replay", "--format must be ndjson or table") }

        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true)) } catch {
            throw .failure("replay", "\(error)")
        }
        for d in log.recovery.damage { printError("replay: warning: \(d) — events there are skipped") }

        let out = OutputStream(fd: 1)
        if format == "table" { try out.write(TableFormat.header) }
        var emitted: UInt64 = 0
        let progress = Progress(label: "replay")
        for location in log.locateBlocks(fromSeq: filter.fromSeq, toSeq: filter.toSeq, since: filter.since, until: filter.until) {
            let block: DecodedBlock
            do { block = try log.readBlock(location) } catch { throw .failure("replay", "\(error)") }
            let matches = filter.matchingIndices(block, firstSeq: location.header.firstSeq)
            let writer = BlockNDJSONWriter(block)
            for i in matches {
                if emitted >= limit { break }
                let seq = location.header.firstSeq + UInt64(i)
                if format == "ndjson" {
                    writer.append(i, seq: seq, receivedAt: location.header.receivedAt, to: &out.buffer)
                } else {
                    try out.write(TableFormat.row(block, i, seq: seq))
                }
                emitted += 1
                try out.flushIfNeeded()
            }
            if emitted >= limit { break }
            progress.update("through seq \(location.header.lastSeq) of \(log.lastSeq), \(emitted) events out")
        }
        try out.flush()
        return 0
    }
}

enum TableFormat {
    static let header = "SEQ         TIME (UTC)                TYPE       TOKEN                    SUB            RELEASE    TRACK    GATEWAY  STATUS  REASON/MARKER\n"

    static func row(_ block: DecodedBlock, _ i: Int, seq: UInt64) -> String {
        let cell = tableCell
        let status = block.presence[i] & PresenceBit.status != 0 ? String(block.status[i]) : "-"
        let note = block.string(i, .marker) ?? block.string(i, .reason)
        return cell(String(seq), 12) + cell(Timestamp.formatRFC3339(epochMilliseconds: block.ts[i]) ?? String(block.ts[i]), 26) + cell(block.types[i].name, 11)
            + cell(block.string(i, .token), 25) + cell(block.string(i, .sub), 15) + cell(block.string(i, .release), 11)
            + cell(block.string(i, .track), 9) + cell(block.string(i, .gateway), 9) + cell(status, 8) + (note ?? "-") + "\n"
    }
}
