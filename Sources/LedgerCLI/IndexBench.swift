// `tokenledger bench index`: the token index (FORMAT.md "Token index") on a generated or given
// ledger. Building it and querying one token's events, each query beside its physical reference
// measured in the same run: LZ4-decompressing the blocks that query touched, and fully decoding
// them (checksum, LZ4, `DecodedBlock`), which is what answering without an index costs per block.
import Foundation
import LedgerModel
import LedgerStorage
import LedgerWorkload

enum IndexBench {
    static let usage = """
    usage: tokenledger bench index [--events N] [--runs R] [--seed S] [--queries Q] [--data DIR]
                                   [--dir DIR] [--keep] [--checkpoint-rows K]

    Generates a ledger (as 'gen | append'; or uses --data DIR), then, R times, with medians:
      build        index every block from scratch (the .tix files are removed first), write the
                   .tix files; their size in bytes per event
      open         a new index over the written files (load and check them)
      queries      Q random tokens (seeded) plus the 20 busiest, one 'events(token:)' each,
                   reported per kind (1 event, more, busiest): median, p99, max latency
    and, per query, the physical reference in the same run: LZ4-decompressing the blocks the
    query touched, and fully decoding them (checksum + LZ4 + DecodedBlock), with the ratios.
    With --data the ledger's .tix files are removed and rewritten.

      --events N    ledger size when generating (default 1M)
      --runs R      repetitions (default 3)
      --seed S      workload and query seed (default 7)
      --queries Q   random tokens per run (default 1000)
      --checkpoint-rows K
                    rows between the row decoder's checkpoints in the .tix (default 256; 0: none)
    """

    struct Query {
        let id: String
        let count: Int
        let kind: Int   // 0: one event, 1: more, 2: busiest
    }

    static let kindNames = ["tokens with 1 event", "tokens with 2+ events", "busiest 20 tokens"]

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["events", "runs", "seed", "queries", "data", "dir", "checkpoint-rows"], flags: ["keep"]),
                                 command: "bench index")
        let events = Int(try args.int("events", range: 1000...1_000_000_000) ?? 1_000_000)
        let runs = Int(try args.int("runs", range: 1...50) ?? 3)
        let seed = try args.uint("seed") ?? 7
        let queryCount = Int(try args.int("queries", range: 1...1_000_000) ?? 1000)
        let checkpointRows = Int(try args.int("checkpoint-rows", range: 0...1_048_576) ?? 256)
        let scratch = args.string("dir") ?? "/tmp/tokenledger-bench-index-\(getpid())"
        let progress = Progress(label: "bench")
        func fail(_ e: any Error) -> CLIError { .failure("bench index", "\(e)") }

        // 1. The ledger.
        let dir: String
        if let given = args.string("data") {
            dir = given
        } else {
            try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            dir = scratch + "/ledger"
            try? FileManager.default.removeItem(atPath: dir)
            do {
                let log = try SegmentLog.open(directory: dir, options: LogOptions(fsync: .never))
                var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: events))
                var batch = [Event]()
                batch.reserveCapacity(16384)
                var written = 0
                while let e = generator.next() {
                    batch.append(e)
                    if batch.count == 16384 {
                        try log.append(batch); written += batch.count; batch.removeAll(keepingCapacity: true)
                        progress.update("ledger: \(formatCount(Double(written))) events")
                    }
                }
                if !batch.isEmpty { try log.append(batch) }
                try log.close()
            } catch { throw fail(error) }
        }
        defer { if args.string("data") == nil && !args.has("keep") { try? FileManager.default.removeItem(atPath: scratch) } }
        let log: SegmentLog
        do { log = try SegmentLog.open(directory: dir, options: LogOptions(readOnly: true)) } catch { throw fail(error) }
        let blocks = log.blocks
        guard !blocks.isEmpty else { throw .failure("bench index", "the ledger at \(dir) is empty") }
        let totalEvents = log.lastSeq - blocks[0].header.firstSeq + 1
        let segmentCount = Set(blocks.map(\.segment)).count

        // 2. Every id and how many events name it (as the index defines it), from a full scan.
        var counts = [String: Int]()
        for (b, location) in blocks.enumerated() {
            let block: DecodedBlock
            do { block = try log.readBlock(location) } catch { throw fail(error) }
            var perString = [Int](repeating: 0, count: block.strings.count)
            for i in 0..<block.count {
                let t = block.ref(i, .token)
                if let t { perString[Int(t)] += 1 }
                if block.types[i] == .refreshed, let p = block.ref(i, .parent), p != t { perString[Int(p)] += 1 }
            }
            for (s, n) in perString.enumerated() where n > 0 { counts[block.strings[s], default: 0] += n }
            progress.update("counting tokens: block \(b + 1) of \(blocks.count)")
        }
        var rng = SplitMix64(seed: seed ^ 0x1D3)
        let byCount = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        let hot = byCount.prefix(20).map { Query(id: $0.key, count: $0.value, kind: 2) }
        let hotIDs = Set(hot.map(\.id))
        let pool = byCount.dropFirst(20).map(\.key).sorted()
        var sample = [Query]()
        if !pool.isEmpty {
            var picked = Set<Int>()
            while picked.count < min(queryCount, pool.count) { picked.insert(Int(rng.next() % UInt64(pool.count))) }
            sample = picked.sorted().map { i in Query(id: pool[i], count: counts[pool[i]]!, kind: counts[pool[i]]! == 1 ? 0 : 1) }
        }
        var queries = sample + hot
        queries.shuffle(using: &rng)
        printError("bench: ledger of \(totalEvents) events in \(blocks.count) blocks, \(segmentCount) segment(s), \(counts.count) token ids; \(queries.count) queries (\(hotIDs.count) busiest), \(runs) runs")

        // Stored bytes of each block, read once (outside every timing), for the references.
        let fs = PosixFileSystem()
        var storedCache = [Int: [UInt8]]()
        func stored(_ b: Int) throws(CLIError) -> [UInt8] {
            if let s = storedCache[b] { return s }
            let l = blocks[b]
            do {
                let h = try fs.open(joinPath(dir, l.segment), create: false, writable: false)
                defer { h.close() }
                let bytes = try h.read(at: l.offset + UInt64(BlockHeader.size), count: Int(l.header.storedBytes))
                storedCache[b] = bytes
                return bytes
            } catch { throw fail(error) }
        }
        func blockIndex(of seq: UInt64) -> Int {
            var lo = 0, hi = blocks.count
            while lo < hi { let mid = (lo + hi) / 2; if blocks[mid].header.lastSeq < seq { lo = mid + 1 } else { hi = mid } }
            return lo
        }

        var buildSeconds = [Double](), openSeconds = [Double](), indexBytes = [Double]()
        // [kind][stat] per run: stats are median, p99, max of latency; median LZ4, median decode,
        // median ratio to LZ4, median ratio to decode, median blocks and events per query.
        var perRun = [[[Double]]](repeating: [[Double]](repeating: [], count: 9), count: 3)
        for run in 1...runs {
            // Build from the blocks.
            removeIndexFiles(dir)
            var start = monotonicNanoseconds()
            let builder = TokenIndex(directory: dir, checkpointRows: checkpointRows)
            builder.update(blocks: blocks)
            do { try builder.refresh() } catch { throw fail(error) }
            builder.waitForWrites()
            buildSeconds.append(BenchCommand.elapsed(start))
            for n in builder.notes { printError("bench: note: \(n)") }
            let bytes = indexFileBytes(dir)
            indexBytes.append(Double(bytes))
            progress.update(force: true, "run \(run): index built in \(String(format2: buildSeconds.last! * 1000)) ms, \(bytes) bytes")

            // Open from the files.
            start = monotonicNanoseconds()
            let index = TokenIndex(directory: dir, checkpointRows: checkpointRows)
            index.update(blocks: blocks)
            do { try index.refresh() } catch { throw fail(error) }
            openSeconds.append(BenchCommand.elapsed(start))
            let st = index.statistics
            if st.filesLoaded != segmentCount || st.blocksDecoded != 0 {
                printError("bench: warning: opening used \(st.filesLoaded) of \(segmentCount) files and decoded \(st.blocksDecoded) blocks")
            }

            // Queries, and per touched block its reference times (each block measured once a run).
            var lz4Time = [Int: Double](), decodeTime = [Int: Double]()
            var samples = [[(latency: Double, lz4: Double, decode: Double, blocks: Int, events: Int)]](repeating: [], count: 3)
            for (q, query) in queries.enumerated() {
                let t0 = monotonicNanoseconds()
                let found: [IndexedEvent]
                do { found = try index.events(token: query.id) } catch { throw fail(error) }
                let latency = BenchCommand.elapsed(t0)
                guard found.count == query.count else {
                    throw .failure("bench index", "token \(query.id): the index gave \(found.count) events, a full scan \(query.count)")
                }
                var touched = [Int]()
                for f in found { let b = blockIndex(of: f.seq); if touched.last != b { touched.append(b) } }
                var lz4 = 0.0, decode = 0.0
                for b in touched {
                    if lz4Time[b] == nil {
                        let s = try stored(b)
                        let header = blocks[b].header
                        var raw = [UInt8](repeating: 0, count: Int(header.rawBytes))
                        let t1 = monotonicNanoseconds()
                        let ok = s.withUnsafeBytes { src in raw.withUnsafeMutableBytes { LZ4.decompress(src, into: $0) } }
                        lz4Time[b] = BenchCommand.elapsed(t1)
                        if header.codec == .none { lz4Time[b] = 0 }
                        let t2 = monotonicNanoseconds()
                        let decoded = s.withUnsafeBytes { BlockReader.rawPayload(header: header, stored: $0) }.flatMap { BlockReader.decode(header: header, raw: $0) }
                        decodeTime[b] = BenchCommand.elapsed(t2)
                        guard ok || header.codec == .none, case .success = decoded else { throw .failure("bench index", "block \(b) does not decode") }
                    }
                    lz4 += lz4Time[b]!
                    decode += decodeTime[b]!
                }
                samples[query.kind].append((latency, lz4, decode, touched.count, found.count))
                progress.update("run \(run): query \(q + 1) of \(queries.count)")
            }
            for k in 0..<3 where !samples[k].isEmpty {
                let s = samples[k]
                let latencies = s.map(\.latency).sorted()
                perRun[k][0].append(median(latencies))
                perRun[k][1].append(latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))])
                perRun[k][2].append(latencies.last!)
                perRun[k][3].append(median(s.map(\.lz4)))
                perRun[k][4].append(median(s.map(\.decode)))
                perRun[k][5].append(median(s.map { $0.latency / max($0.lz4, 1e-9) }))
                perRun[k][6].append(median(s.map { $0.latency / max($0.decode, 1e-9) }))
                perRun[k][7].append(median(s.map { Double($0.blocks) }))
                perRun[k][8].append(median(s.map { Double($0.events) }))
            }
            let qs = index.statistics
            if run == runs {
                printError("bench: run \(run): blocks decoded from checkpoints \(qs.checkpointDecodes), from their start \(qs.fullWalks), damaged records \(qs.damagedCheckpoints)")
            }
        }
        try? log.close()

        func ms(_ seconds: Double) -> String { String(format2: seconds * 1000) }
        let build = median(buildSeconds), bytes = median(indexBytes)
        print("tokenledger bench index — \(totalEvents) events, \(blocks.count) blocks, \(segmentCount) segment(s), \(counts.count) token ids (seed \(seed)), \(runs) runs, medians, \(ProcessInfo.processInfo.activeProcessorCount) cores, checkpoints every \(checkpointRows) rows")
        print("  build (decode token refs of every block, write .tix)  \(ms(build).padding(9))ms   \(formatCount(Double(totalEvents) / build)) events/s")
        print("  open (load + check the .tix files)                    \(ms(median(openSeconds)).padding(9))ms")
        print("  index size                                            \(String(format2: bytes / 1_048_576).padding(9))MiB  \(String(format2: bytes / Double(totalEvents))) B/event   target: a few B/event (PostgreSQL (token, seq) ~270)")
        for k in 0..<3 where !perRun[k][0].isEmpty {
            let r = perRun[k].map(median)
            print("  \(kindNames[k]) (\(queries.filter { $0.kind == k }.count) queries; median \(Int(r[8])) events in \(Int(r[7])) blocks)")
            print("    query latency     median \(ms(r[0]).padding(8))ms  p99 \(ms(r[1]).padding(8))ms  max \(ms(r[2]).padding(8))ms   target <= 2 ms at 1M, <= 10 ms at 10M")
            print("    reference, same blocks: LZ4 decompress \(ms(r[3]))ms, full decode \(ms(r[4]))ms (medians)")
            print("    ratio (median of per-query ratios): query = \(String(format2: r[5]))x LZ4 decompress, \(String(format2: r[6]))x full decode")
        }
        return 0
    }

    static func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }

    static func removeIndexFiles(_ dir: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".tix") {
            try? FileManager.default.removeItem(atPath: dir + "/" + name)
        }
    }

    static func indexFileBytes(_ dir: String) -> Int {
        var total = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasSuffix(".tix") {
            total += ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + name))?[.size] as? Int) ?? 0
        }
        return total
    }
}
