import Foundation
import Glibc
import LedgerModel
import LedgerWorkload
import XCTest

final class WorkloadNDJSONTests: XCTestCase {
    func testWriteNDJSONIsByteIdenticalToTheModelEncoder() throws {
        let configs = [
            WorkloadConfiguration(seed: 1, events: 60_000),
            WorkloadConfiguration(seed: 2, events: 1_000),
            WorkloadConfiguration(seed: 3, events: 0),
            WorkloadConfiguration(seed: 4, events: 1),
            // Extremes: one session slot and one user; a billion users (ten-digit names).
            WorkloadConfiguration(seed: 5, events: 5_000, tokens: 1, subjects: 1),
            WorkloadConfiguration(seed: 6, events: 5_000, tokens: 100_000, subjects: 1_000_000_000),
        ]
        for config in configs {
            let (seed, count) = (config.seed, config.events)
            let (bytes, summary) = try writtenNDJSON(config)
            let reference = encoded(generate(config))
            XCTAssertEqual(bytes.count, reference.count, "seed \(seed) events \(count)")
            if let i = (0..<min(bytes.count, reference.count)).first(where: { bytes[$0] != reference[$0] }) {
                let line = reference[..<i].filter { $0 == 10 }.count
                XCTFail("seed \(seed) events \(count): first difference at byte \(i), line \(line + 1)")
            }
            XCTAssertEqual(summary.events, count, "seed \(seed)")
            XCTAssertEqual(summary.bytes, bytes.count, "seed \(seed)")
            XCTAssertEqual(summary.scenario, WorkloadScenario(config), "seed \(seed)")
        }
    }

    func testEveryLineParsesAsJSONWithTheExpectedFields() throws {
        let seed: UInt64 = 5
        let config = WorkloadConfiguration(seed: seed, events: 20_000)
        let (bytes, _) = try writtenNDJSON(config)
        XCTAssertEqual(bytes.last, 10, "seed \(seed): output must end with a newline")
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false).dropLast()
        XCTAssertEqual(lines.count, config.events, "seed \(seed)")
        let tokenTypes: Set<String> = ["issued", "validated", "rejected", "refreshed", "revoked", "expired"]
        for (i, line) in lines.enumerated() {
            let at = "seed \(seed) line \(i + 1): \(String(decoding: line, as: UTF8.self))"
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], at)
            let type = try XCTUnwrap(object["type"] as? String, at)
            XCTAssertNotNil(object["ts"] as? Int, at)
            XCTAssertNil(object["seq"], at)
            if tokenTypes.contains(type) {
                for key in ["token", "release", "track", "gateway"] { XCTAssertNotNil(object[key] as? String, "\(at): no \(key)") }
                if type != "expired" {
                    XCTAssertNotNil(object["status"] as? Int, at)
                    XCTAssertNotNil(object["route"] as? String, at)
                    XCTAssertNotNil(object["method"] as? String, at)
                    XCTAssertNotNil(object["client_ip"] as? String, at)
                }
                if type == "issued" || type == "refreshed" { XCTAssertNotNil(object["exp"] as? Int, at) }
                if type == "refreshed" { XCTAssertNotNil(object["parent"] as? String, at) }
                if type == "rejected" || type == "revoked" { XCTAssertNotNil(object["reason"] as? String, at) }
            } else {
                XCTAssert(["deploy", "promote"].contains(type), at)
                for key in ["marker", "release", "track"] { XCTAssertNotNil(object[key] as? String, "\(at): no \(key)") }
                XCTAssertNotNil(object["weight"] as? Int, at)
                XCTAssertNil(object["token"], at)
            }
        }
    }

    func testProgressIsReportedInOrderAndEndsAtTheTotal() throws {
        var reports = [Int]()
        let config = WorkloadConfiguration(seed: 6, events: 150_000)
        _ = try writtenNDJSON(config) { reports.append($0) }
        XCTAssertEqual(reports.last, config.events)
        XCTAssertEqual(reports, reports.sorted())
        XCTAssertGreaterThanOrEqual(reports.count, 2)
    }

    func testWriteFailureThrowsWithErrno() {
        XCTAssertThrowsError(try WorkloadGenerator.writeNDJSON(WorkloadConfiguration(seed: 1, events: 10), to: -1, progress: nil)) { error in
            XCTAssertEqual((error as? WorkloadWriteError)?.errno, EBADF, "\(error)")
        }
    }

    func testWritesThroughAPipeWithPartialWrites() throws {
        // A pipe takes at most its buffer per write, so large chunks are written in pieces.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let config = WorkloadConfiguration(seed: 8, events: 30_000)
        let readFD = fds[0], writeFD = fds[1]
        let collected = Collected()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(readFD, $0.baseAddress!, 4096) }
                if n <= 0 { break }
                collected.bytes.append(contentsOf: chunk[..<n])
            }
            done.signal()
        }
        try WorkloadGenerator.writeNDJSON(config, to: writeFD, progress: nil)
        close(writeFD)
        done.wait()
        close(readFD)
        XCTAssertEqual(collected.bytes, encoded(generate(config)), "seed \(config.seed)")
    }
}

/// Filled by the reader thread only, read after it signals completion.
private final class Collected: @unchecked Sendable {
    var bytes = [UInt8]()
}
