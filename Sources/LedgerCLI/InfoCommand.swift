import LedgerStorage

enum InfoCommand {
    static let usage = """
    usage: tokenledger info --data DIR

    Shows the ledger's head (last sequence number and chain hash), its segments, blocks, size on
    disk and bytes per event, and what recovery would do (a torn tail, damage). Read-only.
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data"]), command: "info")
        let directory = try args.required("data")
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: true)) } catch { throw .failure("info", "\(error)") }
        let stored = log.blocks.reduce(UInt64(0)) { $0 + UInt64($1.header.totalBytes) } + UInt64(log.segments.count * SegmentHeader.size)
        let raw = log.blocks.reduce(UInt64(0)) { $0 + UInt64($1.header.rawBytes) }
        let events = log.blocks.reduce(UInt64(0)) { $0 + UInt64($1.header.eventCount) }
        print("ledger:     \(directory)")
        print("head:       seq \(log.lastSeq), chain \(log.chainHash.hex)")
        print("segments:   \(log.segments.count) (\(log.segments.first ?? "-") … \(log.segments.last ?? "-"))")
        print("blocks:     \(log.blocks.count), \(events) events")
        if let first = log.blocks.map(\.header.minTs).min(), let last = log.blocks.map(\.header.maxTs).max() {
            print("time:       \(first) … \(last) (epoch ms)")
        }
        let perEvent = events > 0 ? Double(stored) / Double(events) : 0
        print("stored:     \(stored) bytes (\(String(format2: perEvent)) bytes/event; canonical \(raw) bytes)")
        print("recovery:   \(log.recovery)")
        return log.recovery.damage.isEmpty ? 0 : 1
    }
}
