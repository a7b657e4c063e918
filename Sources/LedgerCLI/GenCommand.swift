import Foundation
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
      --scenario F   also write the scripted story as JSON to file F: releases, markers,
                     the bad canary, the compromised key and when it is reused
    """

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: ["events", "seed", "tokens", "subjects", "start", "scenario"]), command: "gen")
        guard let events = try args.int("events", range: 0...10_000_000_000) else { throw .usage("gen", "--events is required") }
        var configuration = WorkloadConfiguration(seed: try args.uint("seed") ?? 1, events: Int(events))
        if let k = try args.int("tokens", range: 1...100_000_000) { configuration.tokens = Int(k) }
        if let u = try args.int("subjects", range: 1...1_000_000_000) { configuration.subjects = Int(u) }
        if let start = args.string("start") {
            if let ms = Int64(start) { configuration.startMs = ms } else {
                do { configuration.startMs = try Timestamp.parse(start) } catch { throw .usage("gen", "--start: \(error)") }
            }
        }
        if let path = args.string("scenario") {
            let json = scenarioJSON(WorkloadScenario(configuration))
            guard FileManager.default.createFile(atPath: path, contents: Data(json.utf8)) else {
                throw .failure("gen", "\(path): cannot write the scenario file")
            }
        }
        let progress = Progress(label: "gen")
        do {
            try WorkloadGenerator.writeNDJSON(configuration, to: 1) { written in
                progress.update("\(formatCount(Double(written))) of \(formatCount(Double(events))) events")
            }
        } catch {
            // A reader that stops early (`| head`) is not an error.
            if let e = error as? WorkloadWriteError, e.errno == EPIPE { return 0 }
            throw .failure("gen", "writing output: \(error)")
        }
        return 0
    }
}

extension GenCommand {
    static func scenarioJSON(_ s: WorkloadScenario) -> String {
        func q(_ v: String?) -> String { v.map { "\"\($0)\"" } ?? "null" }
        var markers = [String]()
        for m in s.markers {
            markers.append("{\"marker\":\(q(m.id)),\"type\":\(q(m.type.name)),\"release\":\(q(m.release)),\"track\":\(q(m.track)),\"weight\":\(m.weight),\"seq\":\(m.eventIndex + 1)}")
        }
        var text = "{\"events\":\(s.events),\"stable_release\":\(q(s.stableRelease)),\"bad_canary_release\":\(q(s.badCanaryRelease)),"
        text += "\"bad_canary_marker\":\(q(s.badCanaryMarker)),\"last_good_marker\":\(q(s.lastGoodMarker)),\"canary_gateway\":\(q(s.canaryGateway)),"
        text += "\"markers\":[\(markers.joined(separator: ","))]"
        if let c = s.compromised {
            text += ",\"compromised\":{\"token\":\(q(c.token)),\"sub\":\(q(c.sub)),\"client_id\":\(q(c.clientID)),\"attacker_ip\":\(q(c.attackerIP)),"
            text += "\"revoked_seq\":\(c.revokedIndex + 1),\"revalidated_seqs\":[\(c.revalidatedIndices.map { String($0 + 1) }.joined(separator: ","))]}"
        }
        return text + "}\n"
    }
}
