// `tokenledger bench server`: the ledger server on loopback, measured with in-process clients
// against the physical references on the same machine: loopback TCP throughput of the same bytes
// and the disk's fdatasync latency.
import CThreads
import Dispatch
import Foundation
import LedgerModel
import LedgerServer
import LedgerStorage
import LedgerWorkload

enum ServerBench {
    static let usage = """
    usage: tokenledger bench server [--events N] [--runs R] [--seed S] [--connections C]
                                    [--latency-seconds T] [--load F | --rate E] [--arrivals A]
                                    [--batch-events B] [--show-slowest N] [--no-scheduler-hints]
                                    [--commit-priority auto|realtime|normal]

    Starts a server (fsync always, alerts on) on 127.0.0.1 in a scratch directory and measures,
    R times each, with medians:
      framed      C connections (default 4) sending pipelined 4096-event NDJSON batches:
                  events acknowledged per second, and acknowledged and projected per
                  second (until the projector has applied them too)
      maximum     the same with N more events in batches of B (below): acknowledged and
                  projected per second, the maximum load of the latency phase's batches
      binary      the same, with batches the client encoded (canonical block payloads)
      line        C connections sending the same NDJSON as plain lines: events committed/s
      ack latency for T seconds (default 5), NDJSON batches of B events (default 1000: the
                  workload's events after the first N, not a repeat of them) offered at F
                  (default 0.5: half load) times that maximum load (see --arrivals): p50
                  and p99 from when a batch was due to its acknowledgement (a client held back
                  still counts); --rate E offers E events/s instead, the same in every run (to
                  compare two builds at one load). Also the CPU per event, by thread, over the
                  middle of the phase, and how busy the whole machine was
      revocation  meanwhile, one revocation every 5 ms: p50 and p99 from when it was due to a
                  subscriber (type revoked) receiving it, and where the server spent it
    and the references: loopback TCP throughput of the same bytes into a reader that discards
    them, fdatasync latency of a 4 KiB write in the scratch directory, and the machine's own
    stalls (a thread per core spinning on the clock for 3 s before each latency phase: how
    often a core was taken away for more than 1 and 5 ms, as a hypervisor does to a vCPU).

      --arrivals A           batches (default): each connection offers its batches as a Poisson
                             process, so one connection sometimes sends several at once;
                             gateways: each connection's events arrive as a Poisson process and
                             it sends a batch when it holds B (as `send` does at its batch size),
                             so batches are near-periodic, at a random phase per connection
      --batch-events B       events per batch in the latency phase (default 1000): a gateway's
                             batch size trades its CPU per event against how long a batch waits
      --show-slowest N       on stderr, for the N slowest batches of each run: the frames around
                             each on its connection (due, written, read, parsed, durable,
                             acknowledged, in ms from when it was due)
      --no-scheduler-hints   run the server without its scheduler hints (serve's defaults
                             otherwise), to measure what they do
      --commit-priority P    auto (default), realtime or normal: serve's option of that name
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["events", "runs", "seed", "connections", "latency-seconds", "load", "rate", "arrivals", "show-slowest", "batch-events", "commit-priority"], flags: ["no-scheduler-hints"]),
                                 command: "bench server")
        let latencySeconds = Double(try args.int("latency-seconds", range: 1...600) ?? 5)
        let load = try args.double("load", range: 0.01...1) ?? 0.5
        let fixedRate = try args.int("rate", range: 1000...100_000_000).map(Double.init)
        let showSlowest = Int(try args.int("show-slowest", range: 0...100) ?? 0)
        let batchEvents = Int(try args.int("batch-events", range: 1...65_536) ?? 1000)
        let gatewayArrivals: Bool
        switch args.string("arrivals") ?? "batches" {
        case "gateways": gatewayArrivals = true
        case "batches": gatewayArrivals = false
        case let other: throw .usage("bench server", "--arrivals expects gateways or batches, got \"\(other)\"")
        }
        let schedulerHints = !args.has("no-scheduler-hints")
        var commitPriority = CommitPriority.automatic
        if let text = args.string("commit-priority") {
            guard let p = CommitPriority(rawValue: text) else { throw .usage("bench server", "--commit-priority must be auto, realtime or normal, got \"\(text)\"") }
            commitPriority = p
        }
        var committerRealtime = false
        let events = Int(try args.int("events", range: 10_000...100_000_000) ?? 2_000_000)
        let runs = Int(try args.int("runs", range: 1...20) ?? 3)
        let seed = try args.uint("seed") ?? 1
        let connections = Int(try args.int("connections", range: 1...64) ?? 4)
        let scratch = "/tmp/tokenledger-bench-server-\(getpid())"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let progress = Progress(label: "bench")

        // The generator runs on past the N events of the throughput phases: the latency phase
        // sends the events that follow them (as many as its rate and duration take), not the
        // first ones again. A repeat validates tokens the ledger already holds as revoked or
        // expired: a second pass of `gen --seed 1` raises an anomaly on 36% of its events (89 in
        // the first million), and every anomaly is a record the projector appends: a load no
        // server sees. (The generator's larger bound makes a workload of the same kind, not the
        // same bytes as `gen --events N`.)
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: events + 200_000_000))
        var lines = [[UInt8]]()
        lines.reserveCapacity(events)
        while lines.count < events, let e = generator.next() {
            var line = [UInt8]()
            NDJSONEncoder.append(e, to: &line)
            lines.append(line)
        }
        /// The maximum-load phase's batches: N more events, in batches of B, as the latency phase
        /// sends them (fresh ones, so the projector does what it does for them there).
        func nextBatch() -> [UInt8] {
            var payload = [UInt8]()
            for _ in 0..<batchEvents {
                guard let e = generator.next() else { break }
                NDJSONEncoder.append(e, to: &payload)
            }
            return payload
        }
        var maximumBatches = [[UInt8]]()
        while maximumBatches.count * batchEvents < events { maximumBatches.append(nextBatch()) }
        /// The latency phase's batches, from the events after those; the same ones in every run.
        var latencyBatches = [[UInt8]]()
        let batches: [[UInt8]] = stride(from: 0, to: lines.count, by: 4096).map { start in
            var payload = [UInt8]()
            for l in lines[start..<min(lines.count, start + 4096)] { payload += l }
            return payload
        }
        let totalBytes = batches.reduce(0) { $0 + $1.count }
        let decoder = NDJSONDecoder()
        let binaryBatches: [[UInt8]] = stride(from: 0, to: lines.count, by: 4096).map { start in
            var encoder = BlockPayloadEncoder(expectedEvents: 4096)
            for l in lines[start..<min(lines.count, start + 4096)] { encoder.append(try! decoder.decode(line: Array(l.dropLast()), lineNumber: 1)) }
            return encoder.finish()
        }
        printError("bench: \(events) events, \(totalBytes / events) bytes/event of NDJSON, \(connections) connections, \(runs) runs")

        var loopback = [Double](), fsyncP50 = [Double](), fsyncP99 = [Double]()
        // Per stage (parse, queued, commit, publish, reply, total): revocations, then the latency phase's batches.
        var slowParts = [[Double]](repeating: [], count: 6), slowNames = [String]()
        var stageP50 = [[Double]](repeating: [], count: 12), stageP99 = [[Double]](repeating: [], count: 12)
        var cpuServer = [Double](), cpuClients = [Double](), machineBusy = [Double](), cpuThreads = [String: [Double]]()
        var anomaliesPerMillion = [Double]()
        let stallSeconds = 3.0
        var stallTotals = (over1: Int64(0), over5: Int64(0), stalled: Int64(0), longest: Int64(0), seconds: 0.0)
        var halfLoad = [Double](), framed = [Double](), sustained = [Double](), maximum = [Double](), binary = [Double](), line = [Double](), ackP50 = [Double](), ackP99 = [Double](), revP50 = [Double](), revP99 = [Double]()
        for r in 0..<runs {
            loopback.append(Double(events) / loopbackSeconds(batches))
            let (p50, p99) = fsyncLatency(scratch)
            fsyncP50.append(p50); fsyncP99.append(p99)

            let dir = scratch + "/ledger-\(r)"
            let stages = StageTimes()
            let (server, port) = try start(dir, stageTimes: stages, schedulerHints: schedulerHints, commitPriority: commitPriority)
            committerRealtime = server.committerIsRealtime
            let perConnection = dealt(batches, to: connections)
            let t0 = monotonicNanoseconds()
            sendFramed(perConnection, port: port, window: 16)
            framed.append(Double(events) / seconds(since: t0))
            let behind = server.projectionBacklog
            // The server has done all its work for the burst once the projector has applied it:
            // events acknowledged and projected per second is the load it can carry for good
            // (the projector runs in SCHED_IDLE, so in a burst the readers take both cores and
            // the projection waits; offered for long, the projection's bound would hold the
            // committer back to this rate). It errs low: the projector is one thread, so while
            // it catches up alone the other core is idle.
            while server.projectionBacklog > 0 { usleep(1000) }
            sustained.append(Double(events) / seconds(since: t0))
            progress.update(force: true, "run \(r + 1): framed \(formatCount(framed.last!)) events/s acknowledged, the projector \(behind) events behind; \(formatCount(sustained.last!)) events/s acknowledged and projected")

            // The maximum of the latency phase's own load: its batch size, as fast as the
            // connections' windows allow, counted until projected (a 1000-event batch costs the
            // readers more per event than a 4096-event one: half of the 4096-event rate was more
            // than half of what the machine could do in 1000-event batches).
            let perConnectionMaximum = dealt(maximumBatches, to: connections)
            let tm = monotonicNanoseconds()
            sendFramed(perConnectionMaximum, port: port, window: 64)
            let maximumAcknowledged = Double(maximumBatches.count * batchEvents) / seconds(since: tm)
            while server.projectionBacklog > 0 { usleep(1000) }
            maximum.append(Double(maximumBatches.count * batchEvents) / seconds(since: tm))
            progress.update(force: true, "run \(r + 1): framed in \(batchEvents)-event batches \(formatCount(maximumAcknowledged)) events/s acknowledged, \(formatCount(maximum.last!)) acknowledged and projected: the maximum load")

            let perConnectionBinary = dealt(binaryBatches, to: connections)
            let tb = monotonicNanoseconds()
            sendFramed(perConnectionBinary, port: port, window: 16, type: .binaryBatch)
            binary.append(Double(events) / seconds(since: tb))
            progress.update(force: true, "run \(r + 1): binary \(formatCount(binary.last!)) events/s acknowledged")

            let group = DispatchGroup()
            let before = server.statistics.eventsCommitted
            let t1 = monotonicNanoseconds()
            for c in 0..<connections {
                let mine = perConnection[c]
                spawn(group) { lineClient(port: port, batches: mine) }
            }
            group.wait()
            while server.statistics.eventsCommitted - before < events { usleep(1000) }
            line.append(Double(events) / seconds(since: t1))
            progress.update(force: true, "run \(r + 1): line \(formatCount(line.last!)) events/s committed")

            // Half load: batches of B (1000) at half the maximum load, with revocations on the side.
            // The maximum load is the framed rate of the same batches, counted until the events
            // are projected as well as acknowledged: the acknowledged rate alone is a burst whose
            // projection is left for later (up to 0.6M events behind at the end of 1M on a fast
            // host), and half of the 4096-event burst made the machine 80-87% busy, not half.
            // (The binary-batch rate is a burst of the same kind, more so.)
            let rate = (fixedRate ?? maximum.last! * load) / Double(batchEvents) / Double(connections)
            // Each connection offers rate × T batches.
            let durationBatches = Int(rate * latencySeconds) + 1
            while latencyBatches.count < durationBatches * connections { latencyBatches.append(nextBatch()) }
            halfLoad.append(rate * Double(batchEvents) * Double(connections))
            _ = stages.take()
            let latencies = Latencies()
            let timeline = Timeline()
            let subscribed = DispatchSemaphore(value: 0)
            let stopSubscriber = Flag()
            spawn(group) { subscriber(port: port, latencies: latencies, ready: subscribed, stop: stopSubscriber, shortSlices: schedulerHints) }
            subscribed.wait()
            // Let the server's projector finish the bursts above, so the latency phase measures
            // half load, not the tail of full load: after the binary and line phases it holds up
            // to its bound (2M events) of repeats to apply, more than 1.5 s of work.
            let backlogAtEnd = server.projectionBacklog
            let drainStart = monotonicNanoseconds()
            while server.projectionBacklog > 0 { usleep(10_000) }
            usleep(500_000)
            progress.update(force: true, "run \(r + 1): projector drained \(backlogAtEnd) events in \(String(format2: seconds(since: drainStart))) s before the latency phase")
            // The machine's own stalls, on the idle server, right before the phase they bound.
            let st = stalls(seconds: stallSeconds)
            stallTotals.over1 += st.over1ms; stallTotals.over5 += st.over5ms; stallTotals.stalled += st.stalledNs
            stallTotals.longest = max(stallTotals.longest, st.longestNs); stallTotals.seconds += stallSeconds * Double(st.cores)
            progress.update(force: true, "run \(r + 1): vCPU stalls over \(st.cores) cores in \(Int(stallSeconds)) s: \(st.over1ms) > 1 ms, \(st.over5ms) > 5 ms, longest \(String(format2: Double(st.longestNs) / 1e6)) ms")
            let anomaliesBefore = server.anomaliesRaised ?? 0
            // Each connection's batches are due as its own arrival process (below); the workload's
            // batches go to them in the order they fall due across all connections, so the server
            // receives the stream in about its order. Handing them out round-robin instead let the
            // connections drift apart by tens of batches, which put validations before their
            // token's issue or after its revocation: 30% of the events raised anomalies.
            let schedules = (0..<connections).map { c in
                arrivalOffsets(count: durationBatches, batchesPerSecond: rate, seed: seed &* 31 &+ UInt64(c), gatewayArrivals: gatewayArrivals, eventsPerBatch: batchEvents)
            }
            let assigned = assignInDueOrder(schedules)
            // A common start, a little ahead, so every client is connected when its first batch is due.
            let start = monotonicNanoseconds() + 50_000_000
            for c in 0..<connections {
                let mine = assigned[c].map { latencyBatches[$0] }
                let schedule = Schedule(start: start, offsets: schedules[c])
                spawn(group) {
                    let l = framedClient(port: port, batches: mine, window: 64, schedule: schedule, shortSlices: schedulerHints, timeline: timeline)
                    latencies.addAcks(l)
                }
            }
            // On a thread of its own: it asks for short slices like the other timestamping threads.
            nonisolated(unsafe) var revocations = 0
            let revokerDone = DispatchSemaphore(value: 0)
            startThread(name: "tl-bench-revoke") {
                revocations = revoker(port: port, seconds: latencySeconds, latencies: latencies, shortSlices: schedulerHints)
                revokerDone.signal()
            }
            // CPU over the middle of the phase, when every connection is up and none has ended
            // (an ended thread's time leaves /proc/self/task): where the offered load went.
            nonisolated(unsafe) var cpu: (threads: [String: Double], process: Double, machine: Double, seconds: Double)?
            let cpuDone = DispatchSemaphore(value: 0)
            startThread(name: "tl-bench-cpu") {
                usleep(500_000)
                let t0 = threadCPU(), p0 = processCPU(), m0 = machineJiffies(), w0 = monotonicNanoseconds()
                usleep(UInt32((latencySeconds - 1) * 1e6))
                let t1 = threadCPU(), p1 = processCPU(), m1 = machineJiffies(), w1 = monotonicNanoseconds()
                cpu = (t1.merging(t0.mapValues { -$0 }, uniquingKeysWith: +), p1 - p0,
                       m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0, Double(w1 - w0) / 1e9)
                cpuDone.signal()
            }
            revokerDone.wait()
            cpuDone.wait()
            if let cpu {
                let server = cpu.threads.filter { !$0.key.hasPrefix("tl-bench") }.values.reduce(0, +)
                let perEvent = { (x: Double) in x / (rate * Double(connections) * Double(batchEvents) * cpu.seconds) * 1e6 }
                cpuServer.append(perEvent(server)); cpuClients.append(perEvent(cpu.process - server)); machineBusy.append(cpu.machine)
                for name in ["tl-conn-read", "tl-commit", "tl-project"] { cpuThreads[name, default: []].append(perEvent(cpu.threads[name] ?? 0)) }
            }
            stopSubscriber.set()
            _ = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)).write(Array("{\"type\":\"revoked\",\"ts\":1,\"token\":\"bench-stop\"}\n".utf8))
            group.wait()
            // What the projector did besides applying: a workload that raised anomalies on many of
            // its events would measure a projector no server runs.
            let phaseEvents = durationBatches * connections * batchEvents
            anomaliesPerMillion.append(Double((server.anomaliesRaised ?? 0) - anomaliesBefore) / Double(phaseEvents) * 1e6)
            let acks = latencies.acks.sorted(), revs = latencies.revocations.sorted()
            ackP50.append(percentile(acks, 0.5)); ackP99.append(percentile(acks, 0.99))
            revP50.append(percentile(revs, 0.5)); revP99.append(percentile(revs, 0.99))
            progress.update(force: true, "run \(r + 1): ack p99 \(String(format2: ackP99.last! * 1000)) ms over \(acks.count) batches; revocation p99 \(String(format2: revP99.last! * 1000)) ms over \(revs.count) of \(revocations); \(Int(anomaliesPerMillion.last!)) anomalies per 1M events")
            let taken = stages.take()
            let batchRows = taken.filter { $0.events > 1 }
            timeline.showSlowest(batchRows, count: showSlowest)
            if let parts = timeline.slowestParts(batchRows) {
                for (i, p) in parts.enumerated() { slowParts[i].append(p.1) }
                slowNames = parts.map(\.0)
            }
            for (offset, rows) in [(0, taken.filter { $0.events == 1 }), (6, batchRows)] {
                for (i, stage) in [\StageTimes.Row.parse, \.queued, \.commit, \.publish, \.reply, \.total].enumerated() {
                    let v = rows.map { Double($0[keyPath: stage]) / 1e9 }.sorted()
                    stageP50[offset + i].append(percentile(v, 0.5)); stageP99[offset + i].append(percentile(v, 0.99))
                }
            }
            server.stop()
        }

        func med(_ x: [Double]) -> Double { let s = x.sorted(); return s[s.count / 2] }
        print("tokenledger bench server — \(events) events (gen seed \(seed)), \(connections) connections, \(runs) runs, medians, fsync always")
        print("  framed, pipelined 4096-event batches      \(formatCount(med(framed)).padding(10))events/s acknowledged   target >= 1M")
        print("    acknowledged and projected              \(formatCount(med(sustained)).padding(10))events/s")
        print("    in \("\(batchEvents)-event batches,".padding(37))\(formatCount(med(maximum)).padding(10))events/s acknowledged and projected: the maximum load")
        print("  framed, client-encoded binary batches     \(formatCount(med(binary)).padding(10))events/s acknowledged   target >= 1M")
        print("  line mode (plain NDJSON lines)            \(formatCount(med(line)).padding(10))events/s committed      target >= 500k")
        print("  ack latency at \(fixedRate != nil ? "fixed rate" : load == 0.5 ? "half load" : String(format: "%.2f load", load)), p50 / p99       \(String(format2: med(ackP50) * 1000)) / \(String(format2: med(ackP99) * 1000)) ms               target p99 <= 10 ms (\(formatCount(med(halfLoad))) events/s offered)")
        print("  revocation to subscriber, p50 / p99       \(String(format2: med(revP50) * 1000)) / \(String(format2: med(revP99) * 1000)) ms               target p99 <= 5 ms")
        let stageNames = ["parse", "queued for commit", "write + fsync", "publish", "reply", "server total"]
        func stagesLine(_ o: Int) -> String {
            (0..<6).map { "\(stageNames[$0]) \(String(format2: med(stageP50[o + $0]) * 1000)) / \(String(format2: med(stageP99[o + $0]) * 1000))" }.joined(separator: ", ") + " ms"
        }
        print("    in the server (revocations), p50 / p99  " + stagesLine(0))
        print("    in the server (batches), p50 / p99      " + stagesLine(6))
        if !slowNames.isEmpty {
            print("    slowest 1% of batches, median parts     " + (0..<slowNames.count).map { "\(slowNames[$0]) \(String(format2: med(slowParts[$0])))" }.joined(separator: ", ") + " ms")
        }
        if !cpuServer.isEmpty {
            let parts = ["tl-conn-read": "readers", "tl-commit": "committer", "tl-project": "projector"].sorted { $0.key < $1.key }
                .map { "\($0.value) \(String(format2: med(cpuThreads[$0.key] ?? [0])))" }.joined(separator: ", ")
            print("    CPU per event in that phase             server \(String(format2: med(cpuServer))) µs (\(parts)), clients \(String(format2: med(cpuClients))) µs; machine \(Int(med(machineBusy) * 100))% busy")
        }
        print("    anomalies raised in that phase          \(Int(med(anomaliesPerMillion))) per 1M events (the workload's events after the first N)")
        print("    scheduler hints                         \(schedulerHints ? "on (serve's default)" : "off (--no-scheduler-hints)")"
              + "; committer \(committerRealtime ? "real-time" : "normal") priority (--commit-priority \(commitPriority.rawValue))")
        print("  reference: loopback TCP, same bytes       \(formatCount(med(loopback)).padding(10))events/s (\(Int(med(loopback) * Double(totalBytes) / Double(events) / 1e6)) MB/s)")
        print("  reference: vCPU stalls, a spinning thread per core, \(Int(stallSeconds)) s a run: per core-second \(String(format2: Double(stallTotals.over1) / stallTotals.seconds)) > 1 ms, \(String(format2: Double(stallTotals.over5) / stallTotals.seconds)) > 5 ms; \(String(format2: Double(stallTotals.stalled) / 1e7 / stallTotals.seconds))% of the time stopped; longest \(String(format2: Double(stallTotals.longest) / 1e6)) ms")
        print("  reference: fdatasync 4 KiB, p50 / p99     \(String(format2: med(fsyncP50) * 1000)) / \(String(format2: med(fsyncP99) * 1000)) ms")
        print("  ratios: framed = \(Int(med(framed) / med(loopback) * 100))% of loopback; line = \(Int(med(line) / med(loopback) * 100))%")
        return 0
    }

    /// One paced batch as its client saw it (monotonic ns).
    struct ClientMarks {
        var due: UInt64 = 0
        var writeStart: UInt64 = 0
        var writeEnd: UInt64 = 0
        var ackAt: UInt64 = 0
    }

    /// The clients' marks by (peer, frame id), to join with the server's `StageTimes` rows: where
    /// the slowest acknowledgements spent their time, before the server's clock and in it.
    final class Timeline: @unchecked Sendable {
        private let lock = NSLock()
        private var marks: [String: [ClientMarks]] = [:]
        func add(peer: String, _ m: [ClientMarks]) { lock.withLock { marks[peer] = m } }

        /// For the `count` slowest batches: the frames around each on its connection, in ms from
        /// when it was due (stderr), to see a backlog forming and draining.
        func showSlowest(_ rows: [StageTimes.Row], count: Int) {
            guard count > 0 else { return }
            let joined = join(rows)
            let byPeer = Dictionary(grouping: joined, by: { $0.1.peer })
            for (m, r) in joined.sorted(by: { $0.0.ackAt - $0.0.due > $1.0.ackAt - $1.0.due }).prefix(count) {
                printError(String(format: "bench: slow batch %@ #%llu: %.2f ms from due to acknowledged (due at CLOCK_MONOTONIC %.3f s)", r.peer, r.frameID, Double(m.ackAt - m.due) / 1e6, Double(m.due) / 1e9))
                let around = (byPeer[r.peer] ?? []).filter { $0.1.frameID + 6 >= r.frameID && $0.1.frameID <= r.frameID + 1 }.sorted { $0.1.frameID < $1.1.frameID }
                for (mm, rr) in around {
                    let at = { (t: UInt64) in String(format: "%8.2f", Double(Int64(bitPattern: t &- m.due)) / 1e6) }
                    let parsed = rr.receivedAt + rr.parse, durable = parsed + rr.queued + rr.commit
                    printError("bench:   #\(rr.frameID) due \(at(mm.due))  written \(at(mm.writeEnd))  read \(at(rr.receivedAt))  parsed \(at(parsed))  durable \(at(durable))  acknowledged \(at(mm.ackAt))")
                }
            }
        }

        /// Each acknowledged batch's client marks with the server's row for it.
        private func join(_ rows: [StageTimes.Row]) -> [(ClientMarks, StageTimes.Row)] {
            lock.withLock {
                rows.compactMap { r in
                    guard let m = marks[r.peer], Int(r.frameID) < m.count, m[Int(r.frameID)].ackAt > 0 else { return nil }
                    return (m[Int(r.frameID)], r)
                }
            }
        }

        /// For the batches at or above the p99 acknowledgement latency: the median of each part.
        func slowestParts(_ rows: [StageTimes.Row]) -> [(String, Double)]? {
            let joined = join(rows)
            guard joined.count >= 100 else { return nil }
            let sorted = joined.sorted { $0.0.ackAt - $0.0.due < $1.0.ackAt - $1.0.due }
            let slow = sorted[(sorted.count * 99 / 100)...]
            func median(_ f: ((ClientMarks, StageTimes.Row)) -> Int64) -> Double {
                let v = slow.map { Double(f($0)) / 1e6 }.sorted()
                return v[v.count / 2]
            }
            return [
                ("total", median { Int64($0.0.ackAt) - Int64($0.0.due) }),
                ("client late", median { Int64($0.0.writeStart) - Int64($0.0.due) }),
                ("write", median { Int64($0.0.writeEnd) - Int64($0.0.writeStart) }),
                ("written to read", median { Int64($0.1.receivedAt) - Int64($0.0.writeEnd) }),
                ("server", median { Int64($0.1.total) }),
                ("ack to client", median { Int64($0.0.ackAt) - Int64($0.1.receivedAt) - Int64($0.1.total) }),
            ]
        }
    }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.withLock { value = true } }
        var isSet: Bool { lock.withLock { value } }
    }

    final class Latencies: @unchecked Sendable {
        let lock = NSLock()
        var acks = [Double]()
        var revocations = [Double]()
        var sentAt = [String: UInt64]()
        func addAcks(_ l: [Double]) { lock.withLock { acks += l } }
    }

    static func start(_ dir: String, stageTimes: StageTimes, schedulerHints: Bool, commitPriority: CommitPriority) throws(CLIError) -> (LedgerServer, UInt16) {
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: dir, options: LogOptions(preallocate: true)) } catch { throw .failure("bench", "\(error)") }
        var options = ServerOptions()
        options.listen = Endpoint(host: "127.0.0.1", port: 0)
        options.stageTimes = stageTimes
        options.schedulerHints = schedulerHints
        options.commitPriority = commitPriority
        let server = LedgerServer(log: log, options: options, logger: { if $0.hasPrefix("real-time priority") { printError("bench: server: \($0)") } })
        do { try server.start() } catch { throw .failure("bench", "\(error)") }
        return (server, server.port)
    }

    /// Clients block (on sockets, on their window), so each gets a thread of its own: a
    /// dispatch queue's pool is sized to the cores and starved them for seconds at a time.
    static func spawn(_ group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
        group.enter()
        startThread(name: "tl-bench-client") { body(); group.leave() }
    }

    /// CPU seconds so far of this process's threads, summed by thread name (utime + stime from
    /// /proc/self/task/*/stat; a thread that ended is not counted, so take both readings while
    /// the threads of interest run).
    static func threadCPU() -> [String: Double] {
        var out = [String: Double]()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return out }
        for t in tasks {
            guard let text = try? String(contentsOfFile: "/proc/self/task/\(t)/stat", encoding: .utf8),
                  let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { continue }
            let name = String(text[text.index(after: open)..<close])
            let fields = text[text.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 12, let u = Double(fields[11]), let k = Double(fields[12]) else { continue }
            out[name, default: 0] += (u + k) / ticks
        }
        return out
    }

    /// Busy and total jiffies of the whole machine (/proc/stat), for the share that was busy.
    static func machineJiffies() -> (busy: Double, total: Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = text.split(separator: "\n").first else { return (0, 0) }
        let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard v.count >= 5 else { return (0, 0) }
        let total = v.reduce(0, +)
        return (total - v[3] - v[4], total)
    }

    static func processCPU() -> Double {
        var u = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    static func seconds(since t: UInt64) -> Double { Double(monotonicNanoseconds() - t) / 1e9 }

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    /// When a paced client's batches are due: `start` (monotonic ns) plus each offset (seconds).
    struct Schedule: Sendable {
        var start: UInt64
        var offsets: [Double]
    }

    /// A connection's arrival process, in seconds from its start. Batches: a Poisson process of
    /// `batchesPerSecond`, so one connection sometimes sends several at once. Gateways: its
    /// events arrive as a Poisson process and a batch is due when it holds `eventsPerBatch` of
    /// them (as `send` does at its batch size), from a random point in its first batch cycle,
    /// so independent gateways do not send in lockstep.
    static func arrivalOffsets(count: Int, batchesPerSecond pace: Double, seed: UInt64, gatewayArrivals: Bool, eventsPerBatch: Int) -> [Double] {
        var arrivals = SplitMix64(seed: seed)
        func uniform() -> Double { Double(arrivals.next() >> 11) / Double(1 << 53) }
        func exponential(_ rate: Double) -> Double { -log(1 - uniform()) / rate }
        var t = gatewayArrivals ? uniform() / pace : 0
        var out = [Double]()
        out.reserveCapacity(count)
        for _ in 0..<count {
            if gatewayArrivals {
                let eventRate = pace * Double(eventsPerBatch)
                for _ in 0..<eventsPerBatch { t += exponential(eventRate) }
            } else {
                t += exponential(pace)
            }
            out.append(t)
        }
        return out
    }

    /// Which of the workload's batches each connection sends: `result[c][i]` is the number of
    /// the batch connection c sends i-th, numbered in the order all connections' batches fall
    /// due (ties by connection), so the stream reaches the server in about its own order.
    static func assignInDueOrder(_ schedules: [[Double]]) -> [[Int]] {
        let order = schedules.enumerated().flatMap { c, offsets in offsets.indices.map { (offsets[$0], c, $0) } }
            .sorted { ($0.0, $0.1) < ($1.0, $1.1) }
        var assigned = schedules.map { [Int](repeating: 0, count: $0.count) }
        for (j, (_, c, i)) in order.enumerated() { assigned[c][i] = j }
        return assigned
    }

    /// - Returns: each batch's acknowledgement latency in seconds.
    /// With a `schedule`, each batch is sent when it is due (`arrivalOffsets`), and its latency
    /// counts from then; without, as fast as the window allows.
    static func framedClient(port: UInt16, batches: [[UInt8]], window: Int, schedule: Schedule? = nil,
                             type: FrameType = .batch, shortSlices: Bool = false, timeline: Timeline? = nil) -> [Double] {
        guard let client = try? FramedClient(Endpoint(host: "127.0.0.1", port: port)) else { return [] }
        let socket = client.socket
        let peer = "127.0.0.1:\(socket.localPort)"
        nonisolated(unsafe) var marks = [ClientMarks](repeating: ClientMarks(), count: batches.count)
        defer { client.close() }
        let lock = Condition()
        nonisolated(unsafe) var inFlight = 0
        nonisolated(unsafe) var sentAt = [UInt64](repeating: 0, count: batches.count)
        nonisolated(unsafe) var latencies = [Double]()
        let done = DispatchSemaphore(value: 0)
        startThread(name: "tl-bench-acks") {
            // The threads that take the timestamps ask for short slices too, so what they
            // measure is the server, not their own wait for a core (clients would be elsewhere).
            if shortSlices { requestShortSlices() }
            var received = 0
            while received < batches.count, let f = try? client.next() {
                let now = monotonicNanoseconds()
                lock.mutex.locked {
                    marks[Int(f.id)].ackAt = now
                    latencies.append(Double(now - sentAt[Int(f.id)]) / 1e9)
                    inFlight -= 1
                    lock.broadcast()
                }
                received += 1
            }
            done.signal()
        }
        if shortSlices { requestShortSlices() }
        for (i, b) in batches.enumerated() {
            var due: UInt64 = 0
            if let schedule {
                due = schedule.start + UInt64(schedule.offsets[i] * 1e9)
                let now = monotonicNanoseconds()
                if due > now { usleep(UInt32((due - now) / 1000)) }
            }
            let frame = Frame(type, id: UInt64(i), payload: b).encoded
            lock.mutex.locked {
                while inFlight >= window { lock.wait() }
                inFlight += 1
                // Paced, latency counts from when the batch was due, so a client held back
                // (by its window or a full socket) does not hide the wait (coordinated omission).
                sentAt[i] = schedule == nil ? monotonicNanoseconds() : min(due, monotonicNanoseconds())
                marks[i].due = sentAt[i]
                marks[i].writeStart = monotonicNanoseconds()
            }
            if (try? socket.write(frame)) == nil { break }
            let written = monotonicNanoseconds()
            lock.mutex.locked { marks[i].writeEnd = written }
        }
        done.wait()
        timeline?.add(peer: peer, lock.mutex.locked { marks })
        return lock.mutex.locked { latencies }
    }

    static func lineClient(port: UInt16, batches: [[UInt8]]) {
        guard let socket = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)) else { return }
        for b in batches { if (try? socket.write(b)) == nil { break } }
        socket.close()
    }

    static func subscriber(port: UInt16, latencies: Latencies, ready: DispatchSemaphore, stop: Flag, shortSlices: Bool) {
        if shortSlices { requestShortSlices() }
        guard let client = try? FramedClient(Endpoint(host: "127.0.0.1", port: port), first: [Frame(.subscribe, id: 1, text: #"{"types":["revoked"]}"#)]) else {
            ready.signal()
            return
        }
        defer { client.close() }
        var signalled = false
        while !stop.isSet, let f = try? client.next() {
            let now = monotonicNanoseconds()
            if f.type == .subscribed && !signalled { signalled = true; ready.signal() }
            // Bytes, not Foundation's String search: the workload's own revocations come here
            // too, and the subscriber shares the two cores with the server it measures.
            guard f.type == .event, let id = benchRevocationID(f.payload) else { continue }
            latencies.lock.withLock {
                if let sent = latencies.sentAt.removeValue(forKey: id) { latencies.revocations.append(Double(now - sent) / 1e9) }
            }
        }
        if !signalled { ready.signal() }
    }

    static let revocationMarker = Array("\"token\":\"bench-rev-".utf8)

    static func benchRevocationID(_ payload: [UInt8]) -> String? {
        let m = revocationMarker
        guard payload.count > m.count else { return nil }
        var i = 0
        while i + m.count <= payload.count {
            if payload[i] == m[0] && payload[i..<(i + m.count)].elementsEqual(m) {
                let start = i + m.count
                let end = payload[start...].firstIndex(of: 0x22) ?? payload.count
                return String(decoding: payload[start..<end], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    /// Sends one revocation every 5 ms for `seconds`, each as its own framed batch.
    static func revoker(port: UInt16, seconds: Double, latencies: Latencies, shortSlices: Bool) -> Int {
        if shortSlices { requestShortSlices() }
        guard let socket = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)) else { return 0 }
        defer { socket.close() }
        try? socket.write(Frame.preface)
        let count = max(1, Int(seconds / 0.005))
        let start = monotonicNanoseconds()
        for i in 0..<count {
            let due = start + UInt64(i) * 5_000_000
            let now = monotonicNanoseconds()
            if due > now { usleep(UInt32((due - now) / 1000)) }
            let id = "\(i)"
            let line = "{\"type\":\"revoked\",\"ts\":\(1_795_478_400_000 + Int64(i)),\"token\":\"bench-rev-\(id)\",\"reason\":\"bench\"}\n"
            let frame = Frame(.batch, id: UInt64(i), text: line).encoded
            latencies.lock.withLock { latencies.sentAt[id] = min(due, monotonicNanoseconds()) }
            if (try? socket.write(frame)) == nil { return i }
        }
        usleep(50_000)
        return count
    }

    /// Seconds to move every batch over a loopback connection into a reader that drops it.
    static func loopbackSeconds(_ batches: [[UInt8]]) -> Double {
        guard let listener = try? Socket.listen(Endpoint(host: "127.0.0.1", port: 0)) else { return 1 }
        let port = listener.localPort
        let done = DispatchSemaphore(value: 0)
        startThread(name: "tl-bench-sink") {
            guard let (s, _) = (try? listener.accept(timeoutMs: 5000)) ?? nil else { done.signal(); return }
            var buffer = [UInt8](repeating: 0, count: 1 << 18)
            while ((try? buffer.withUnsafeMutableBytes { try s.read(into: $0) }) ?? 0) > 0 {}
            done.signal()
        }
        guard let c = try? Socket.connect(Endpoint(host: "127.0.0.1", port: port)) else { return 1 }
        let t = monotonicNanoseconds()
        for b in batches { try? c.write(b) }
        c.close()
        done.wait()
        return seconds(since: t)
    }

    /// `batches` dealt out round-robin, a list per connection.
    static func dealt(_ batches: [[UInt8]], to connections: Int) -> [[[UInt8]]] {
        (0..<connections).map { c in stride(from: c, to: batches.count, by: connections).map { batches[$0] } }
    }

    /// Each list sent by a framed client of its own, all at once, as fast as `window` allows;
    /// returns when every batch is acknowledged.
    static func sendFramed(_ perConnection: [[[UInt8]]], port: UInt16, window: Int, type: FrameType = .batch) {
        let group = DispatchGroup()
        for mine in perConnection {
            spawn(group) { _ = framedClient(port: port, batches: mine, window: window, type: type) }
        }
        group.wait()
    }

    /// A thread per core spinning on the clock for `seconds`, all at once: how often the cores
    /// were taken from this machine (a hypervisor stopping a vCPU, an interrupt storm), summed
    /// over the cores. The latency phase's p99 is judged against it: a batch in a core's hands
    /// when it stops waits out the stop, and the other core meanwhile takes on its backlog.
    static func stalls(seconds: Double) -> (over1ms: Int64, over5ms: Int64, stalledNs: Int64, longestNs: Int64, cores: Int) {
        let cores = Int(tl_cpus_available())
        let group = DispatchGroup()
        let lock = NSLock()
        nonisolated(unsafe) var total = tl_stalls()
        for cpu in 0..<cores {
            spawn(group) {
                var s = tl_stalls()
                guard tl_measure_stalls(Int32(cpu), Int64(seconds * 1e9), &s) == 0 else { return }
                lock.withLock {
                    total.over1ms += s.over1ms; total.over5ms += s.over5ms; total.stalledNs += s.stalledNs
                    total.longestNs = max(total.longestNs, s.longestNs)
                }
            }
        }
        group.wait()
        return (total.over1ms, total.over5ms, total.stalledNs, total.longestNs, cores)
    }

    static func fsyncLatency(_ dir: String) -> (Double, Double) {
        let path = dir + "/fsync-probe"
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        defer { close(fd); unlink(path) }
        let block = [UInt8](repeating: 0x5A, count: 4096)
        var samples = [Double]()
        for i in 0..<200 {
            _ = block.withUnsafeBytes { pwrite(fd, $0.baseAddress!, 4096, off_t(i * 4096)) }
            let t = monotonicNanoseconds()
            fdatasync(fd)
            samples.append(seconds(since: t))
        }
        samples.sort()
        return (percentile(samples, 0.5), percentile(samples, 0.99))
    }
}
