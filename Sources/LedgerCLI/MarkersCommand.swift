import LedgerModel
import LedgerProjection
import LedgerStorage

enum MarkersCommand {
    static let usage = """
    usage: tokenledger markers --data DIR [--format table|ndjson]

    The deployment timeline: every deploy, promote and rollback marker with its sequence number,
    time, release, track, weight, and the chain hash at that point (the hash of the block that
    ends with the marker; "chain_seq" says where that block ends when it is not the marker).

    """ + ProjectionSupport.optionsHelp

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ProjectionSupport.options.union(["format"]), flags: ProjectionSupport.flags),
                                 command: "markers")
        let format = args.string("format") ?? "table"
        guard format == "table" || format == "ndjson" else { throw .usage("markers", "--format must be table or ndjson") }
        let (log, engine, _) = try ProjectionSupport.open(args)
        let result = try ProjectionSupport.state(engine, at: .head, command: "markers")
        let out = OutputStream(fd: 1)
        if format == "table" {
            try out.write("SEQ         TIME (UTC)                TYPE      MARKER            RELEASE      TRACK    WEIGHT  CHAIN HASH AT THAT POINT\n")
        }
        for m in result.projection.markers {
            let block = log.locateBlocks(fromSeq: m.seq, toSeq: m.seq).first
            let hash = block?.header.chainHash.hex
            let chainSeq = block?.header.lastSeq
            if format == "ndjson" {
                var w = JSONObjectWriter()
                w.int("seq", Int64(m.seq)); w.int("ts", m.ts); w.string("time", ProjectionSupport.time(m.ts)); w.string("type", m.type.name)
                w.string("marker", m.marker); w.string("release", m.release); w.string("track", m.track); w.int("weight", m.weight.map(Int64.init))
                w.string("chain_hash", hash); w.int("chain_seq", chainSeq.map { Int64($0) })
                try out.write(w.finish() + "\n")
            } else {
                var chain = hash.map { String($0.prefix(16)) + "…" } ?? "-"
                if let chainSeq, chainSeq != m.seq { chain += " (block ends at seq \(chainSeq))" }
                try out.write(tableCell(String(m.seq), 12) + tableCell(ProjectionSupport.time(m.ts), 26)
                              + tableCell(m.type.name, 10) + tableCell(m.marker, 18) + tableCell(m.release, 13)
                              + tableCell(m.track, 9) + tableCell(m.weight.map(String.init), 8) + chain + "\n")
            }
        }
        if format == "table" && result.projection.markers.isEmpty { try out.write("(no markers)\n") }
        try out.flush()
        return 0
    }
}
