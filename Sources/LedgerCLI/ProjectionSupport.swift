import LedgerModel
import LedgerProjection
import LedgerStorage

/// What the projection commands (state, token, markers, metrics, rollback) share: opening the
/// ledger and its snapshots, the point in history asked for, and the rejection-rate options.
enum ProjectionSupport {
    static let options: Set<String> = ["data", "rejection-factor", "rejection-samples", "snapshot-interval"]
    static let flags: Set<String> = ["no-snapshots", "quiet"]

    static let optionsHelp = """
      --rejection-factor X   alert when a release's rejection rate on its track passes the
                             stable track's times X (default 3)
      --rejection-samples N  ...once both have at least N validations + rejections (default 500)
      --snapshot-interval N  write a snapshot every N events replayed (default 1M); snapshots
                             also go at every marker, in DIR/snapshots
      --no-snapshots         neither read nor write snapshots (replay from the first event)
      --quiet                no progress lines on stderr
    """

    static func projectionOptions(_ args: Arguments) throws(CLIError) -> ProjectionOptions {
        var o = ProjectionOptions()
        if let text = args.string("rejection-factor") {
            guard let f = Double(text), f.isFinite, f >= 1 else {
                throw .usage(args.command, "--rejection-factor expects a number of at least 1, got \"\(text)\"")
            }
            o.rejectionFactor = f
        }
        if let n = try args.uint("rejection-samples") {
            guard n >= 1 else { throw .usage(args.command, "--rejection-samples must be at least 1") }
            o.rejectionSamplesMin = n
        }
        return o
    }

    /// Opens the ledger read-only (or for appending) with a projection engine over it.
    static func open(_ args: Arguments, writable: Bool = false) throws(CLIError) -> (SegmentLog, ProjectionEngine, Progress) {
        let directory = try args.required("data")
        let command = args.command
        guard PosixFileSystem().fileExists(directory) else { throw .failure(command, "no ledger at \(directory)") }
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: directory, options: LogOptions(readOnly: !writable)) } catch {
            throw .failure(command, "\(error)")
        }
        for d in log.recovery.damage { printError("tokenledger \(command): warning: \(d) — events there are not in the state") }
        let noSnapshots = args.has("no-snapshots")
        let engine = ProjectionEngine(log: log, store: noSnapshots ? nil : SnapshotStore(dataDirectory: directory),
                                      options: try projectionOptions(args))
        if let n = try args.uint("snapshot-interval") {
            guard n >= 1 else { throw .usage(command, "--snapshot-interval must be at least 1") }
            engine.snapshotIntervalEvents = n
        }
        let progress = Progress(label: command, enabled: !args.has("quiet"))
        engine.progress = { message in progress.update(message) }
        return (log, engine, progress)
    }

    /// `--at-seq N | --at-time T | --at-marker M` (at most one); the head when none.
    static func point(_ args: Arguments) throws(CLIError) -> StatePoint {
        var points = [StatePoint]()
        if let n = try args.uint("at-seq") { points.append(.seq(n)) }
        if let t = try args.time("at-time") { points.append(.time(t)) }
        if let m = args.string("at-marker") { points.append(.marker(m)) }
        guard points.count <= 1 else { throw .usage(args.command, "give at most one of --at-seq, --at-time, --at-marker") }
        return points.first ?? .head
    }

    static func state(_ engine: ProjectionEngine, at point: StatePoint, command: String) throws(CLIError) -> StateResult {
        let result: StateResult
        do { result = try engine.state(at: point) } catch { throw .failure(command, "\(error)") }
        for n in result.notes { printError("tokenledger \(command): note: \(n)") }
        return result
    }

    static func time(_ ms: Int64?) -> String {
        guard let ms else { return "-" }
        return Timestamp.formatRFC3339(epochMilliseconds: ms) ?? String(ms)
    }
}
