import Glibc
import LedgerModel
import LedgerStorage

enum AppendCommand {
    static let usage = """
    usage: tokenledger append --data DIR [FILE] [--skip-invalid] [--fsync always|interval[:MS]|never]
                              [--segment-bytes N] [--block-events N] [--quiet]

    Imports NDJSON events (one v1 event per line, PRODUCT.md) from FILE or stdin into the ledger
    in DIR, creating it if needed. Raw bearer tokens are fingerprinted before anything is written.
    By default it stops at the first invalid line: every line before it is kept (durably), and
    the line number and reason are printed, exit 1. With --skip-invalid, invalid lines are
    reported and skipped and the rest is imported. Lines over 65536 bytes are invalid.
    Reopening after a crash cuts a torn tail (reported, bytes kept in DIR/quarantine/) and
    continues the chain.

      --data DIR          the ledger directory
      --skip-invalid      skip and report invalid lines instead of stopping
      --fsync P           always (default: fsync before each commit is reported), interval[:MS],
                          or never (leave write-back to the OS)
      --segment-bytes N   roll segments at this size (default 64M)
      --block-events N    events per block (default 16384)
      --report-commits    print "committed SEQ" on stdout after every durable commit
      --quiet             no progress on stderr
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["data", "fsync", "segment-bytes", "block-events"],
                                                        flags: ["skip-invalid", "quiet", "report-commits"], positionalsMax: 1), command: "append")
        let directory = try args.required("data")
        var logOptions = LogOptions()
        if let text = args.string("fsync") {
            guard let policy = FsyncPolicy(parsing: text) else { throw .usage("append", "--fsync must be always, interval, interval:MS or never") }
            logOptions.fsync = policy
        }
        if let bytes = try args.int("segment-bytes", range: 4096...(1 << 40)) { logOptions.segmentBytesMax = UInt64(bytes) }
        if let n = try args.int("block-events", range: 1...Int64(BlockPayloadDecoder.eventsMax)) { logOptions.blockEventsMax = Int(n) }

        var fd: Int32 = 0
        var inputName = "stdin"
        if let path = args.positionals.first, path != "-" {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .failure("append", "\(path): \(String(cString: strerror(errno)))") }
            inputName = path
        }
        defer { if fd != 0 { close(fd) } }

        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: logOptions) } catch { throw .failure("append", "\(error)") }
        if !log.recovery.isClean { printError("append: recovery: \(log.recovery)") }
        if log.isReadOnly {
            throw .failure("append", "\(directory) has damage in the middle of the log and was opened read-only; nothing was imported. Run 'tokenledger verify --data \(directory)' for details")
        }
        var options = NDJSONImporter.Options()
        options.skipInvalid = args.has("skip-invalid")
        options.showProgress = !args.has("quiet")
        options.chunkLines = logOptions.blockEventsMax
        let importer = NDJSONImporter(log: log, options: options)
        if args.has("report-commits") {
            let durable = logOptions.fsync == .always
            importer.onCommit = { seq in
                // Written straight to fd 1, unbuffered: whoever reads it may be about to kill us.
                let line = Array("committed \(seq)\(durable ? "" : " (not fsynced)")\n".utf8)
                line.withUnsafeBytes { _ = write(1, $0.baseAddress!, $0.count) }
            }
        }
        let outcome = try importer.run(fd: fd)
        do { try log.close() } catch { throw .failure("append", "closing the ledger: \(error)") }

        let range = outcome.events > 0 ? "seq \(outcome.firstSeq)-\(outcome.lastSeq)" : "nothing new"
        if let stop = outcome.stoppedAt {
            printError("tokenledger append: \(inputName) \(stop)")
            printError("kept \(outcome.events) events from the lines before it (\(range)); nothing from line \(stop.line) on was imported")
            return 1
        }
        var summary = "imported \(outcome.events) events (\(range)), head seq \(log.lastSeq) chain \(log.chainHash.hex)"
        if outcome.skippedCount > 0 { summary += "; skipped \(outcome.skippedCount) invalid lines" }
        print(summary)
        return 0
    }
}
