// `tokenledger bench`: the hot paths measured on a generated workload, each beside the physical
// reference it is judged against (LZ4_compress_default and SHA-256 over the same canonical bytes),
// repeated and reported as medians because the machine is shared and noisy.
import Dispatch
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerStorage
import LedgerWorkload

enum BenchCommand {
    static let usage = """
    usage: tokenledger bench [--events N] [--runs R] [--seed S] [--dir DIR] [--fsync P] [--keep]
           tokenledger bench projections --help   (state rebuild, snapshots, rollback plan)
           tokenledger bench server --help        (TCP ingest, ack and subscription latency)
           tokenledger bench index --help         (token index: build, size, one token's events)
           tokenledger bench parse --help         (NDJSON ingest hot path on one core, vs LZ4 and memchr)

    Generates a workload (as 'tokenledger gen'), then measures, R times each, with medians:
      append-ndjson   NDJSON lines -> ledger (parse, fingerprint, encode, LZ4, SHA-256, fsync)
      append-binary   client-encoded batch payloads -> ledger (validate, LZ4, SHA-256, fsync)
      stored size     bytes on disk per event
      replay-decode   blocks -> decoded events
      replay-ndjson   blocks -> NDJSON lines
      verify          full verification, against single-core SHA-256 over the same bytes
    and the references: LZ4_compress_default and SHA-256 throughput on the canonical bytes.
    Build with 'swift build -c release' first; debug builds are many times slower.

      --events N    workload size (default 10M; accepts 10M, 500k)
      --runs R      repetitions per measurement (default 3)
      --seed S      workload seed (default 1)
      --dir DIR     scratch directory (default: a new one under /tmp, removed afterwards)
      --fsync P     fsync policy for the appends (default always)
      --keep        keep the scratch ledgers
    """

    struct Row {
        let name: String
        let unit: String
        var samples: [Double] = []
        let target: String
        var median: Double { let s = samples.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
    }

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        if arguments.first == "projections" { return try ProjectionBench.run(Array(arguments.dropFirst())) }
        if arguments.first == "server" { return try ServerBench.run(Array(arguments.dropFirst())) }
        if arguments.first == "index" { return try IndexBench.run(Array(arguments.dropFirst())) }
        if arguments.first == "parse" { return try ParseBench.run(Array(arguments.dropFirst())) }
        let args = try Arguments(arguments, spec: .init(options: ["events", "runs", "seed", "dir", "fsync"], flags: ["keep"]), command: "bench")
        let events = Int(try args.int("events", range: 1000...1_000_000_000) ?? 10_000_000)
        let runs = Int(try args.int("runs", range: 1...50) ?? 3)
        let seed = try args.uint("seed") ?? 1
        var fsync = FsyncPolicy.always
        if let text = args.string("fsync") {
            guard let p = FsyncPolicy(parsing: text) else { throw .usage("bench", "--fsync must be always, interval[:MS] or never") }
            fsync = p
        }
        let scratch = args.string("dir") ?? "/tmp/tokenledger-bench-\(getpid())"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { if !args.has("keep") { try? FileManager.default.removeItem(atPath: scratch) } }

        // 1. The workload, in memory, so input reading is not what is measured.
        let progress = Progress(label: "bench")
        var ndjson = [UInt8]()
        ndjson.reserveCapacity(events * 260)
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: events))
        var n = 0
        while let e = generator.next() {
            NDJSONEncoder.append(e, to: &ndjson)
            n += 1
            if n % 1_000_000 == 0 { progress.update("generating workload: \(formatCount(Double(n))) of \(formatCount(Double(events)))") }
        }
        printError("bench: workload \(events) events, \(ndjson.count) bytes of NDJSON (\(ndjson.count / events) bytes/event), seed \(seed), \(runs) runs, fsync \(fsync)")

        var appendNDJSON = Row(name: "append from NDJSON", unit: "events/s", target: ">= 2M")
        var appendBinary = Row(name: "append from binary batches", unit: "events/s", target: ">= 5M")
        var storedPerEvent = Row(name: "stored size", unit: "bytes/event", target: "<= 20")
        var replayDecode = Row(name: "replay decode", unit: "events/s", target: ">= 15M")
        var replayNDJSON = Row(name: "replay to NDJSON", unit: "events/s", target: ">= 2M")
        var verifyRate = Row(name: "verify", unit: "MB/s canonical", target: ">= 70% of SHA-256")
        var sha = Row(name: "reference: SHA-256 (1 core)", unit: "MB/s", target: "")
        var lz4 = Row(name: "reference: LZ4_compress_default (1 core)", unit: "MB/s", target: "")
        var lz4Events = Row(name: "reference: LZ4 compress, as events", unit: "events/s", target: "")
        var canonicalPerEvent = Row(name: "canonical (uncompressed) size", unit: "bytes/event", target: "")
        var decodeOnly = Row(name: "phase: NDJSON decode only (1 core)", unit: "events/s", target: "")
        var encodeOnly = Row(name: "phase: block encode only (1 core)", unit: "events/s", target: "")

        for run in 1...runs {
            let dirA = scratch + "/ndjson-\(run)"
            let dirB = scratch + "/binary-\(run)"
            try? FileManager.default.removeItem(atPath: dirA)
            try? FileManager.default.removeItem(atPath: dirB)

            // append from NDJSON
            let logA = try openLog(dirA, fsync: fsync)
            var options = NDJSONImporter.Options()
            options.showProgress = false
            let importer = NDJSONImporter(log: logA, options: options)
            var t0 = monotonicNanoseconds()
            let chunk = 8 << 20
            var offset = 0
            while offset < ndjson.count {
                let end = min(ndjson.count, offset + chunk)
                ndjson.withUnsafeBytes { raw in importer.feed(UnsafeRawBufferPointer(rebasing: raw[offset..<end])) }
                offset = end
            }
            let outcome = try importer.finish()
            do { try logA.sync() } catch { throw .failure("bench", "\(error)") }
            var seconds = elapsed(t0)
            guard outcome.events == UInt64(events) else { throw .failure("bench", "imported \(outcome.events) of \(events) events") }
            appendNDJSON.samples.append(Double(events) / seconds)
            printError("bench: run \(run): append from NDJSON \(formatCount(Double(events) / seconds))/s")

            let storedBytes = directoryBytes(dirA)
            storedPerEvent.samples.append(Double(storedBytes) / Double(events))

            // The canonical payloads: the bytes the chain hashes, and what a binary client sends.
            var payloads = [[UInt8]]()
            for location in logA.blocks {
                do { payloads.append(try logA.readRawPayload(location)) } catch { throw .failure("bench", "\(error)") }
            }
            let canonicalBytes = payloads.reduce(0) { $0 + $1.count }
            canonicalPerEvent.samples.append(Double(canonicalBytes) / Double(events))

            // append from binary batches
            let logB = try openLog(dirB, fsync: fsync)
            t0 = monotonicNanoseconds()
            var index = 0
            let window = 8
            while index < payloads.count {
                let slice = Array(payloads[index..<min(payloads.count, index + window)])
                var blocks = [EncodedBlock?](repeating: nil, count: slice.count)
                slice.withUnsafeBufferPointer { input in
                    blocks.withUnsafeMutableBufferPointer { out in
                        nonisolated(unsafe) let outBase = out.baseAddress!
                        nonisolated(unsafe) let items = input
                        DispatchQueue.concurrentPerform(iterations: items.count) { i in
                            outBase[i] = try? EncodedBlock(validatedPayload: items[i])
                        }
                    }
                }
                let encoded = blocks.compactMap { $0 }
                guard encoded.count == slice.count else { throw .failure("bench", "a binary batch did not validate") }
                do { try logB.append(encoded: encoded) } catch { throw .failure("bench", "\(error)") }
                index += window
            }
            seconds = elapsed(t0)
            guard logB.lastSeq == UInt64(events), logB.chainHash == logA.chainHash else {
                throw .failure("bench", "binary append produced a different chain than the NDJSON append")
            }
            appendBinary.samples.append(Double(events) / seconds)
            try? logB.close()

            // replay decode (both cores, blocks in parallel, as replay of a large range does)
            let locations = logA.blocks
            t0 = monotonicNanoseconds()
            let decodedCount = try parallelBlocks(logA, locations) { block, _ in block.count }
            seconds = elapsed(t0)
            guard decodedCount == events else { throw .failure("bench", "decoded \(decodedCount) events, expected \(events)") }
            replayDecode.samples.append(Double(events) / seconds)

            // replay to NDJSON
            t0 = monotonicNanoseconds()
            let ndjsonBytes = try parallelBlocks(logA, locations) { block, location in
                let writer = BlockNDJSONWriter(block)
                var out = [UInt8]()
                out.reserveCapacity(block.count * 300)
                for i in 0..<block.count {
                    writer.append(i, seq: location.header.firstSeq + UInt64(i), receivedAt: location.header.receivedAt, to: &out)
                }
                return out.count
            }
            seconds = elapsed(t0)
            replayNDJSON.samples.append(Double(events) / seconds)
            _ = ndjsonBytes

            // verify
            t0 = monotonicNanoseconds()
            let report: VerifyReport
            do { report = try Verifier(directory: dirA).run() } catch { throw .failure("bench", "\(error)") }
            seconds = elapsed(t0)
            guard report.ok, report.events == UInt64(events) else { throw .failure("bench", "verify failed: \(report.problem?.description ?? "event count")") }
            verifyRate.samples.append(Double(canonicalBytes) / seconds / 1e6)

            // references over the same canonical bytes, one core
            let hasher = SHA256Hasher()
            t0 = monotonicNanoseconds()
            for p in payloads { p.withUnsafeBytes { hasher.update($0) } }
            _ = hasher.finalize()
            seconds = elapsed(t0)
            sha.samples.append(Double(canonicalBytes) / seconds / 1e6)

            t0 = monotonicNanoseconds()
            var compressedTotal = 0
            for p in payloads { compressedTotal += (try? p.withUnsafeBytes { r in Result { () throws(StorageError) in try LZ4.compress(r) } }.get().count) ?? 0 }
            seconds = elapsed(t0)
            lz4.samples.append(Double(canonicalBytes) / seconds / 1e6)
            lz4Events.samples.append(Double(events) / seconds)
            // Single-core phases of the import, on the first 1M events, to show what bounds it.
            let sample = min(events, 1_000_000)
            var sampleEvents = [Event]()
            sampleEvents.reserveCapacity(sample)
            let decoder = NDJSONDecoder()
            t0 = monotonicNanoseconds()
            ndjson.withUnsafeBytes { raw in
                var start = 0
                while sampleEvents.count < sample, start < raw.count,
                      let nl = memchr(raw.baseAddress! + start, 0x0A, raw.count - start) {
                    let end = UnsafeRawPointer(nl) - raw.baseAddress!
                    if let e = try? decoder.decode(line: UnsafeRawBufferPointer(rebasing: raw[start..<end]), lineNumber: sampleEvents.count + 1) {
                        sampleEvents.append(e)
                    }
                    start = end + 1
                }
            }
            decodeOnly.samples.append(Double(sampleEvents.count) / elapsed(t0))
            t0 = monotonicNanoseconds()
            var blockStart = 0
            var rawTotal = 0
            while blockStart < sampleEvents.count {
                var encoder = BlockPayloadEncoder(expectedEvents: 16384)
                for e in sampleEvents[blockStart..<min(sampleEvents.count, blockStart + 16384)] { encoder.append(e) }
                rawTotal += encoder.finish().count
                blockStart += 16384
            }
            encodeOnly.samples.append(Double(sampleEvents.count) / elapsed(t0))
            _ = rawTotal

            try? logA.close()
            if !args.has("keep") {
                try? FileManager.default.removeItem(atPath: dirA)
                try? FileManager.default.removeItem(atPath: dirB)
            }
        }

        print("tokenledger bench — \(events) events (gen seed \(seed)), \(runs) runs, medians, fsync \(fsync), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        let rows = [appendNDJSON, appendBinary, storedPerEvent, canonicalPerEvent, replayDecode, replayNDJSON, verifyRate, sha, lz4, lz4Events,
                    decodeOnly, encodeOnly]
        for r in rows {
            let value = r.unit.hasPrefix("bytes") ? String(format2: r.median) : (r.unit == "events/s" ? formatCount(r.median) : String(format1: r.median))
            print("  " + r.name.padding(42) + value.padding(10) + r.unit.padding(16) + (r.target.isEmpty ? "" : "target " + r.target))
        }
        print("  ratios: verify = \(Int(verifyRate.median / sha.median * 100))% of single-core SHA-256; "
              + "append-ndjson = \(Int(appendNDJSON.median / lz4Events.median * 100))% of LZ4-compress-only event rate; "
              + "append-binary = \(Int(appendBinary.median / lz4Events.median * 100))% of it")
        print("  for scale: NDJSON is \(ndjson.count / events) bytes/event; stored is \(String(format1: Double(ndjson.count) / Double(events) / storedPerEvent.median))x smaller")
        return 0
    }

    static func openLog(_ dir: String, fsync: FsyncPolicy) throws(CLIError) -> SegmentLog {
        // A fixed clock makes received_at, and so the chain, identical across the two appends.
        do { return try SegmentLog.open(directory: dir, options: LogOptions(fsync: fsync), clock: FixedClock(ms: WorkloadConfiguration.defaultStartMs)) } catch { throw .failure("bench", "\(error)") }
    }

    static func elapsed(_ start: UInt64) -> Double { max(1e-9, Double(monotonicNanoseconds() - start) / 1e9) }

    static func directoryBytes(_ dir: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".seg") }.reduce(0) { total, name in
            total + ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as? Int) ?? 0)
        }
    }

    /// Reads and decodes blocks on every core; `body` runs per block and its results are summed.
    static func parallelBlocks(_ log: SegmentLog, _ locations: [BlockLocation], _ body: @escaping @Sendable (DecodedBlock, BlockLocation) -> Int) throws(CLIError) -> Int {
        let directory = log.directory
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        var totals = [Int](repeating: 0, count: workers)
        var failures = [String?](repeating: nil, count: workers)
        totals.withUnsafeMutableBufferPointer { t in
            failures.withUnsafeMutableBufferPointer { f in
                nonisolated(unsafe) let tBase = t.baseAddress!
                nonisolated(unsafe) let fBase = f.baseAddress!
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    // One read-only log per worker: a SegmentLog has one owner at a time.
                    guard let reader = try? SegmentLog.open(directory: directory, options: LogOptions(readOnly: true)) else {
                        fBase[w] = "cannot open \(directory)"; return
                    }
                    var i = w
                    while i < locations.count {
                        do { tBase[w] += body(try reader.readBlock(locations[i]), locations[i]) } catch { fBase[w] = "\(error)"; return }
                        i += workers
                    }
                }
            }
        }
        if let f = failures.compactMap({ $0 }).first { throw .failure("bench", f) }
        return totals.reduce(0, +)
    }
}
