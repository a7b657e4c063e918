// `tokenledger bench parse`: the NDJSON ingest hot path on one core, as a server's reader thread
// runs it (BlockBuilder.append(line:) per line, finish() per batch: parse, fingerprint, encode,
// LZ4), beside its physical references measured in the same run over the same bytes:
// LZ4_compress_default of the payloads it produced, and a plain memchr split into lines.
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerStorage
import LedgerWorkload

enum ParseBench {
    static let usage = """
    usage: tokenledger bench parse [--events N] [--runs R] [--seed S] [--batch B] [--block-events K] [--gateway G]

    Generates a workload (as 'tokenledger gen') as NDJSON in memory, then, R times, with medians,
    on one thread:
      parse      BlockBuilder.append(line:) for every line and finish() every B lines (as the
                 server does per batch: decode, fingerprint, block encode, LZ4), keeping columns
      lz4        LZ4_compress_default of the canonical payloads the parse produced
      memchr     splitting the same NDJSON bytes into lines with memchr
    Reported per event: wall-clock and thread CPU nanoseconds, and events/s.

      --events N        workload size (default 1M)
      --runs R          repetitions (default 7)
      --seed S          workload seed (default 1)
      --batch B         lines per finish() (default 4096, the server bench's batch)
      --block-events K  events per block at most (default 16384, the server's)
      --gateway G       pass G as the authenticated gateway (default: none)
    """

    struct Sample { var wallNs: Double; var cpuNs: Double }

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        if arguments.contains("--help") || arguments.contains("-h") { print(usage); return 0 }
        let args = try Arguments(arguments, spec: .init(options: ["events", "runs", "seed", "batch", "block-events", "gateway"], flags: []),
                                 command: "bench parse")
        let events = Int(try args.int("events", range: 1000...100_000_000) ?? 1_000_000)
        let runs = Int(try args.int("runs", range: 1...50) ?? 7)
        let seed = try args.uint("seed") ?? 1
        let batch = Int(try args.int("batch", range: 1...10_000_000) ?? 4096)
        let blockEventsMax = Int(try args.int("block-events", range: 1...1_000_000) ?? 16_384)
        let gateway = args.string("gateway")

        let progress = Progress(label: "bench parse")
        var ndjson = [UInt8]()
        ndjson.reserveCapacity(events * 300)
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: events))
        var n = 0
        while let e = generator.next() {
            var event = e
            if let gateway { event.gateway = gateway }
            NDJSONEncoder.append(event, to: &ndjson)
            n += 1
            if n % 1_000_000 == 0 { progress.update("generating workload: \(formatCount(Double(n))) of \(formatCount(Double(events)))") }
        }
        printError("bench parse: \(n) events, \(ndjson.count) bytes of NDJSON (\(ndjson.count / max(1, n)) bytes/event), seed \(seed), batch \(batch), \(runs) runs")

        let decoder = NDJSONDecoder()
        var parse: [Sample] = [], lz4: [Sample] = [], split: [Sample] = []
        var payloadBytes = 0
        for run in 1...runs {
            // parse (the measured path)
            var payloads = [[UInt8]]()
            var failure: String?
            var builder = BlockBuilder(blockEventsMax: blockEventsMax)
            var parsed = 0
            var t = Clocks()
            ndjson.withUnsafeBytes { raw in
                let base = raw.baseAddress!
                var start = 0
                var lineNumber = 0
                var inBatch = 0
                while start < raw.count {
                    let end = memchr(base + start, 0x0A, raw.count - start).map { UnsafeRawPointer($0) - base } ?? raw.count
                    lineNumber += 1
                    let line = UnsafeRawBufferPointer(start: base + start, count: end - start)
                    start = end + 1
                    do { try builder.append(line: line, lineNumber: lineNumber, decoder: decoder, gateway: gateway) } catch {
                        failure = "\(error)"; return
                    }
                    inBatch += 1
                    if inBatch == batch {
                        inBatch = 0
                        do { for b in try builder.finish().blocks { payloads.append(b.raw) } } catch { failure = "\(error)"; return }
                    }
                }
                do { for b in try builder.finish().blocks { payloads.append(b.raw) } } catch { failure = "\(error)"; return }
                parsed = lineNumber
            }
            parse.append(t.sample(per: parsed))
            if let failure { throw .failure("bench parse", failure) }
            payloadBytes = payloads.reduce(0) { $0 + $1.count }
            // A digest of every payload, to compare builds: the bytes must not change.
            var digest: UInt64 = 0
            for p in payloads { digest = digest &* 31 &+ p.withUnsafeBytes { XXH64.hash($0) } }

            // reference: LZ4 over the same payloads
            t = Clocks()
            var compressed = 0
            for p in payloads {
                compressed &+= (try? p.withUnsafeBytes { r in Result { () throws(StorageError) in try LZ4.compress(r) } }.get().count) ?? 0
            }
            lz4.append(t.sample(per: parsed))

            // reference: memchr line split over the same bytes
            t = Clocks()
            var lines = 0
            ndjson.withUnsafeBytes { raw in
                let base = raw.baseAddress!
                var start = 0
                while start < raw.count {
                    let end = memchr(base + start, 0x0A, raw.count - start).map { UnsafeRawPointer($0) - base } ?? raw.count
                    lines &+= 1
                    start = end + 1
                }
            }
            split.append(t.sample(per: parsed))
            guard lines == parsed else { throw .failure("bench parse", "split found \(lines) lines, parse \(parsed)") }
            progress.update(force: true, "run \(run): parse \(String(format1: parse.last!.wallNs)) ns/event (cpu \(String(format1: parse.last!.cpuNs))), "
                            + "lz4 \(String(format1: lz4.last!.wallNs)), memchr \(String(format1: split.last!.wallNs)); "
                            + "\(payloads.count) payloads, \(payloadBytes) bytes, xxh64 chain \(String(digest, radix: 16)), \(compressed) bytes compressed")
        }

        func median(_ s: [Sample], _ key: (Sample) -> Double) -> Double { let v = s.map(key).sorted(); return v[v.count / 2] }
        print("tokenledger bench parse — \(n) events (seed \(seed)), \(ndjson.count / max(1, n)) bytes/line, "
              + "\(String(format1: Double(payloadBytes) / Double(max(1, n)))) canonical bytes/event, batch \(batch), \(runs) runs, medians, 1 thread")
        for (name, s) in [("parse: BlockBuilder.append(line:) + finish()", parse), ("reference: LZ4 compress of the payloads", lz4),
                          ("reference: memchr line split", split)] {
            let wall = median(s, \.wallNs), cpu = median(s, \.cpuNs)
            print("  " + name.padding(46) + (String(format1: wall) + " ns/event").padding(18) + (String(format1: cpu) + " cpu ns/event").padding(22)
                  + formatCount(1e9 / wall) + " events/s")
        }
        let p = median(parse, \.cpuNs), l = median(lz4, \.cpuNs), m = median(split, \.cpuNs)
        print("  ratios (cpu): parse = \(String(format1: p / l))x LZ4 compress, \(String(format1: p / max(0.001, m)))x memchr split")
        return 0
    }

    /// Wall and thread CPU time since creation.
    struct Clocks {
        let wall0 = monotonicNanoseconds()
        let cpu0 = Clocks.threadCPU()

        static func threadCPU() -> UInt64 {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        }

        func sample(per events: Int) -> Sample {
            let e = Double(max(1, events))
            return Sample(wallNs: Double(monotonicNanoseconds() - wall0) / e, cpuNs: Double(Clocks.threadCPU() - cpu0) / e)
        }
    }
}
