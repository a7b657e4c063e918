import LedgerModel
import LedgerWorkload

enum GenCommand {
    static let usage = """
    usage: tokenledger gen --events N [--seed S] [--tokens K] [--subjects U] [--start T]

    Writes a seeded, realistic gateway workload as NDJSON on stdout: about 80% validations,
    issues, refresh chains (with "parent"), revocations, expirations and rejections, with
    deploy/promote markers and a canary release that misbehaves (it rejects good tokens and
    lets a revoked token through). The same arguments give the same bytes on any machine.

      --events N     number of events (accepts 10M, 500k)
      --seed S       random seed (default 1)
      --tokens K     concurrently live sessions, one token each (default 2000)
      --subjects U   size of the user population (default 50000)
      --start T      simulated time of the first event, epoch ms or RFC 3339
                     (default 2026-11-24T00:00:00Z)
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["events", "seed", "tokens", "subjects", "start"]), command: "gen")
        guard let events = try args.int("events", range: 0...10_000_000_000) else { throw .usage("gen", "--events is required") }
        var configuration = WorkloadConfiguration(seed: try args.uint("seed") ?? 1, events: Int(events))
        if let k = try args.int("tokens", range: 1...100_000_000) { configuration.tokens = Int(k) }
        if let u = try args.int("subjects", range: 1...1_000_000_000) { configuration.subjects = Int(u) }
        if let start = args.string("start") {
            if let ms = Int64(start) { configuration.startMs = ms } else {
                do { configuration.startMs = try Timestamp.parse(start) } catch { throw .usage("gen", "--start: \(error)") }
            }
        }
        var generator = WorkloadGenerator(configuration)
        let out = OutputStream(fd: 1)
        let progress = Progress(label: "gen")
        var n = 0
        while let event = generator.next() {
            NDJSONEncoder.append(event, to: &out.buffer)
            n += 1
            if out.buffer.count >= out.flushBytes {
                try out.flush()
                progress.update("\(formatCount(Double(n))) of \(formatCount(Double(events))) events")
            }
        }
        try out.flush()
        return 0
    }
}
