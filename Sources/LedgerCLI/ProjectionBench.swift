// `tokenledger bench projections`: the projection hot paths on a generated ledger, each beside
// its physical reference (decoding the same blocks), repeated, medians reported.
import Foundation
import LedgerModel
import LedgerProjection
import LedgerStorage
import LedgerWorkload

enum ProjectionBench {
    static let usage = """
    usage: tokenledger bench projections [--events N] [--runs R] [--seed S] [--dir DIR]
                                         [--memory-tokens K] [--keep]

    Generates a ledger (as 'gen | append'), then measures, R times each, with medians:
      rebuild          full state rebuild from the first event, no snapshots
      snapshots        first rebuild that also writes snapshots (every 1M events, each marker)
      state@marker     state at every marker, from its snapshot (a fresh engine each time)
      state@seq        state at random sequence numbers: nearest snapshot + tail replay
      rollback plan    state now + verify up to the marker + plan (as 'rollback --dry-run')
    and the reference: reading and decoding the same blocks (one core, no projection).
    Before all that, the memory of a projection holding K tokens (default 10M): resident
    bytes per token, for the "10M tokens in 2 GiB" budget.

      --events N        ledger size (default 10M)
      --runs R          repetitions (default 3)
      --memory-tokens K tokens for the memory figure (default 10M; 0 skips it)
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["events", "runs", "seed", "dir", "memory-tokens"], flags: ["keep"]),
                                 command: "bench projections")
        let events = Int(try args.int("events", range: 1000...1_000_000_000) ?? 10_000_000)
        let runs = Int(try args.int("runs", range: 1...50) ?? 3)
        let seed = try args.uint("seed") ?? 1
        let memoryTokens = Int(try args.int("memory-tokens", range: 0...100_000_000) ?? 10_000_000)
        let scratch = args.string("dir") ?? "/tmp/tokenledger-bench-projections-\(getpid())"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { if !args.has("keep") { try? FileManager.default.removeItem(atPath: scratch) } }
        let progress = Progress(label: "bench")
        var lines = [String]()
        func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }

        // 1. Memory, first, while the process is small.
        if memoryTokens > 0 {
            let before = residentBytes()
            let p = Projection()
            var rng = SplitMix64(seed: seed)
            for i in 0..<memoryTokens {
                let id = uuid(&rng)
                p.apply(Event(type: .issued, ts: 1_795_478_400_000 + Int64(i), token: id, tokenType: "access",
                              sub: "user-\(rng.next() % 1_000_000)", clientID: "client-\(rng.next() % 50)",
                              exp: 1_795_478_400_000 + Int64(i) + 300_000, gateway: "gw-0\(i % 6 + 1)", release: "v1.4.3", track: "stable"),
                        seq: UInt64(i + 1))
                if (i + 1) % 1_000_000 == 0 { progress.update("memory: \(formatCount(Double(i + 1))) tokens") }
            }
            let after = residentBytes()
            let s = p.summary(clock: p.headClock)
            let perToken = Double(after - before) / Double(memoryTokens)
            lines.append("  memory: \(formatCount(Double(memoryTokens))) tokens (UUID ids, 1M subjects) resident \(String(format2: Double(after - before) / 1_073_741_824)) GiB = \(Int(perToken)) bytes/token; target: 10M tokens in <= 2 GiB (active \(s.active))")
        }

        // 2. The ledger.
        let dir = scratch + "/ledger"
        try? FileManager.default.removeItem(atPath: dir)
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: dir, options: LogOptions(fsync: .never)) } catch { throw .failure("bench", "\(error)") }
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: events))
        var batch = [Event]()
        batch.reserveCapacity(16384)
        var written = 0
        do {
            while let e = generator.next() {
                batch.append(e)
                if batch.count == 16384 { try log.append(batch); written += batch.count; batch.removeAll(keepingCapacity: true)
                    progress.update("ledger: \(formatCount(Double(written))) events") }
            }
            if !batch.isEmpty { try log.append(batch) }
            try log.sync()
        } catch { throw .failure("bench", "\(error)") }
        let locations = Array(log.locateBlocks())
        printError("bench: ledger of \(log.lastSeq) events in \(locations.count) blocks (gen seed \(seed)), \(runs) runs")

        // 3. Reference: read + decode every block on one core.
        var decodeRates = [Double]()
        for _ in 0..<runs {
            let start = monotonicNanoseconds()
            var n = 0
            for l in locations { do { n += try log.readBlock(l).count } catch { throw .failure("bench", "\(error)") } }
            decodeRates.append(Double(n) / BenchCommand.elapsed(start))
        }

        // 4. Full rebuild, no snapshots.
        var rebuildRates = [Double]()
        var headSummary: StateSummary?
        for r in 0..<runs {
            let engine = ProjectionEngine(log: log, store: nil)
            let start = monotonicNanoseconds()
            let result: StateResult
            do { result = try engine.state(at: .head) } catch { throw .failure("bench", "\(error)") }
            rebuildRates.append(Double(result.replayedEvents) / BenchCommand.elapsed(start))
            headSummary = result.summary
            progress.update(force: true, "rebuild run \(r + 1): \(formatCount(rebuildRates.last!)) events/s")
        }

        // 5. First rebuild writing snapshots.
        let store = SnapshotStore(dataDirectory: dir)
        var snapshotSeconds = 0.0
        do {
            let engine = ProjectionEngine(log: log, store: store)
            let start = monotonicNanoseconds()
            _ = try engine.state(at: .head)
            snapshotSeconds = BenchCommand.elapsed(start)
        } catch { throw .failure("bench", "\(error)") }
        let snapshots = store.list()
        let snapshotBytes = snapshots.reduce(UInt64(0)) { $0 + $1.fileBytes }

        // 6. State at every marker.
        let markers = headSummary.map { _ in (try? ProjectionEngine(log: log, store: store).state(at: .head))?.projection.markers ?? [] } ?? []
        var markerTimes = [Double]()
        for _ in 0..<runs {
            for m in markers {
                let start = monotonicNanoseconds()
                do { _ = try ProjectionEngine(log: log, store: store).state(at: .marker(m.marker)).summary } catch { throw .failure("bench", "\(error)") }
                markerTimes.append(BenchCommand.elapsed(start))
            }
        }

        // 7. State at random seqs (no snapshot writing, so every run sees the same snapshots).
        var rng = SplitMix64(seed: seed ^ 0xABCD)
        var seqTimes = [Double]()
        for _ in 0..<(runs * 4) {
            let seq = 1 + rng.next() % log.lastSeq
            let engine = ProjectionEngine(log: log, store: store)
            engine.writeSnapshots = false
            let start = monotonicNanoseconds()
            do { _ = try engine.state(at: .seq(seq)).summary } catch { throw .failure("bench", "\(error)") }
            seqTimes.append(BenchCommand.elapsed(start))
        }

        // 8. Rollback plan to the last good marker (m-0003 in the scripted story), as the CLI does it.
        var planTimes = [Double]()
        var planLine = ""
        if let target = markers.first(where: { $0.marker == "m-0003" }) ?? markers.first {
            for _ in 0..<runs {
                let start = monotonicNanoseconds()
                do {
                    let engine = ProjectionEngine(log: log, store: store)
                    engine.writeSnapshots = false
                    let now = try engine.state(at: .head)
                    var verifier = Verifier(directory: dir)
                    verifier.stopAtSeq = target.seq
                    let report = try verifier.run()
                    guard report.ok else { throw CLIError.failure("bench", "verify failed") }
                    let plan = try now.projection.rollbackPlan(to: target.marker, policy: .revoke)
                    planLine = "revoke \(plan.revoke.count), kept_known \(plan.keptKnown), stay_revoked \(plan.stayRevoked)"
                } catch { throw .failure("bench", "\(error)") }
                planTimes.append(BenchCommand.elapsed(start))
            }
        }
        try? log.close()

        print("tokenledger bench projections — \(log.lastSeq) events (gen seed \(seed)), \(runs) runs, medians, \(ProcessInfo.processInfo.activeProcessorCount) cores")
        for l in lines { print(l) }
        let rebuild = median(rebuildRates), decode = median(decodeRates)
        print("  rebuild (full, no snapshots)              \(formatCount(rebuild).padding(10))events/s        target >= 5M")
        print("  reference: read + decode blocks (1 core)  \(formatCount(decode).padding(10))events/s")
        print("  ratio: rebuild = \(Int(rebuild / decode * 100))% of single-core decode (decode runs on a second core, pipelined)")
        print("  first rebuild writing snapshots           \(String(format2: snapshotSeconds).padding(10))s               \(snapshots.count) snapshots, \(snapshotBytes / 1_000_000) MB")
        print("  state at a marker (\(markers.count) markers), median     \(String(format2: median(markerTimes) * 1000).padding(10))ms              target <= 500 ms")
        print("  state at a marker, max                    \(String(format2: (markerTimes.max() ?? 0) * 1000).padding(10))ms")
        print("  state at a random seq, median             \(String(format2: median(seqTimes) * 1000).padding(10))ms")
        print("  state at a random seq, max                \(String(format2: (seqTimes.max() ?? 0) * 1000).padding(10))ms")
        print("  rollback plan (state now + verify + plan) \(String(format2: median(planTimes) * 1000).padding(10))ms              target <= 1000 ms; \(planLine)")
        if let s = headSummary { print("  state at head: " + s.json) }
        return 0
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func uuid(_ rng: inout SplitMix64) -> String {
        let hex = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(36)
        var a = rng.next(), b = rng.next()
        for i in 0..<32 {
            if i == 8 || i == 12 || i == 16 || i == 20 { s.append("-") }
            let v: UInt64
            if i < 16 { v = a & 0xF; a >>= 4 } else { v = b & 0xF; b >>= 4 }
            s.append(hex[Int(v)])
        }
        return s
    }
}
