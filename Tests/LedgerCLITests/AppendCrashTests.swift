import Foundation
import LedgerModel
import LedgerStorage
import LedgerWorkload
import XCTest

/// SIGKILLs a real `tokenledger append` mid-import and checks the durability promise: every
/// event it reported as committed is in the reopened ledger, in order, and the chain verifies.
final class AppendCrashTests: XCTestCase {
    func testKilledAppendKeepsEveryCommittedEvent() throws {
        for seed: UInt64 in [11, 22, 33] {
            try runCrash(seed: seed)
        }
    }

    private func runCrash(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let eventCount = 40_000
        var generator = WorkloadGenerator(WorkloadConfiguration(seed: seed, events: eventCount))
        var lines = [[UInt8]]()
        var expected = [Event]()
        while let e = generator.next() {
            var line = [UInt8]()
            NDJSONEncoder.append(e, to: &line)
            lines.append(line)
            expected.append(try NDJSONDecoder().decode(line: Array(line.dropLast()), lineNumber: 1))
        }
        let dir = CLI.temporaryDirectory("crash-\(seed)")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["append", "--data", dir, "--block-events", "256", "--report-commits", "--quiet"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()

        nonisolated(unsafe) var reported = Data()
        let reader = DispatchQueue(label: "reader")
        let done = DispatchSemaphore(value: 0)
        reader.async {
            reported = output.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
        // Feed bursts of lines with pauses, so commits happen throughout, then kill at a
        // seeded moment while input is still flowing.
        let killAfterBursts = 5 + Int(rng.next() % 20)
        var sent = 0
        var bursts = 0
        while sent < lines.count && bursts < killAfterBursts {
            let burst = 200 + Int(rng.next() % 1500)
            let end = min(lines.count, sent + burst)
            var chunk = [UInt8]()
            for l in lines[sent..<end] { chunk += l }
            // Tear the last line of some bursts in two, as a real stream would.
            if rng.next() % 3 == 0 && end < lines.count {
                let partial = lines[end].prefix(Int(rng.next() % UInt64(lines[end].count)))
                chunk += partial
                input.fileHandleForWriting.write(Data(chunk))
                usleep(useconds_t(2000 + rng.next() % 20000))
                input.fileHandleForWriting.write(Data(lines[end].dropFirst(partial.count)))
                sent = end + 1
            } else {
                input.fileHandleForWriting.write(Data(chunk))
                sent = end
            }
            bursts += 1
            usleep(useconds_t(5000 + rng.next() % 40000))
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        done.wait()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "seed \(seed): append was expected to die by SIGKILL")

        let committed = String(decoding: reported, as: UTF8.self).split(separator: "\n")
            .compactMap { $0.hasPrefix("committed ") ? UInt64($0.dropFirst(10)) : nil }
        XCTAssertFalse(committed.isEmpty, "seed \(seed): no commit was reported before the kill (sent \(sent) lines)")
        let lastCommitted = committed.max() ?? 0

        let log = try SegmentLog.open(directory: dir)
        XCTAssertTrue(log.recovery.damage.isEmpty, "seed \(seed): \(log.recovery)")
        XCTAssertGreaterThanOrEqual(log.lastSeq, lastCommitted, "seed \(seed): reported commit \(lastCommitted), ledger holds \(log.lastSeq)")
        var seq = 0
        for location in log.blocks {
            for e in try log.readBlock(location).events {
                XCTAssertEqual(e, expected[seq], "seed \(seed): event at seq \(seq + 1) differs from input line \(seq + 1)")
                seq += 1
            }
        }
        XCTAssertEqual(UInt64(seq), log.lastSeq, "seed \(seed)")
        try log.close()
        let report = try Verifier(directory: dir).run()
        XCTAssertTrue(report.ok, "seed \(seed): \(report.problem!)")

        // The chain continues: import the rest and verify again.
        let restStart = Int(report.lastSeq)
        var rest = Data()
        for l in lines[restStart...] { rest.append(contentsOf: l) }
        let result = try CLI.run(["append", "--data", dir, "--quiet"], stdin: rest)
        XCTAssertEqual(result.status, 0, "seed \(seed): \(result.stderr)")
        let final = try Verifier(directory: dir).run()
        XCTAssertTrue(final.ok, "seed \(seed)")
        XCTAssertEqual(final.lastSeq, UInt64(eventCount), "seed \(seed)")
    }
}
