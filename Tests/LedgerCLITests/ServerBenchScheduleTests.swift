@testable import LedgerCLI
import XCTest

/// The latency phase of `bench server` offers each connection's batches as its own arrival
/// process and hands out the workload's batches in the order they fall due across connections.
final class ServerBenchScheduleTests: XCTestCase {
    func testBatchesAreHandedOutInTheOrderTheyFallDue() {
        for seed in UInt64(1)...6 {
            for gateways in [false, true] {
                let schedules = (0..<4).map { c in
                    ServerBench.arrivalOffsets(count: 300, batchesPerSecond: 150, seed: seed &* 31 &+ UInt64(c), gatewayArrivals: gateways, eventsPerBatch: 50)
                }
                let context = "seed \(seed), gateways \(gateways)"
                for offsets in schedules {
                    XCTAssertEqual(offsets.count, 300, context)
                    XCTAssertTrue(zip(offsets, offsets.dropFirst()).allSatisfy { $0 < $1 }, "offsets increase: \(context)")
                    // 300 batches at 150/s: about 2 s, and a Poisson process is nowhere near 1 s or 4 s.
                    XCTAssertEqual(offsets.last!, 2, accuracy: 0.5, context)
                }
                let assigned = ServerBench.assignInDueOrder(schedules)
                // Every batch number once.
                XCTAssertEqual(assigned.flatMap { $0 }.sorted(), Array(0..<1200), context)
                // Batch j is due no earlier than batch j - 1, whichever connections send them.
                var due = [Double](repeating: 0, count: 1200)
                for (c, numbers) in assigned.enumerated() { for (i, j) in numbers.enumerated() { due[j] = schedules[c][i] } }
                XCTAssertTrue(zip(due, due.dropFirst()).allSatisfy { $0 <= $1 }, "in due order: \(context)")
                // Independent processes: no connection sends every fourth batch in lockstep.
                XCTAssertNotEqual(assigned[0], Array(stride(from: 0, to: 1200, by: 4)), context)
            }
        }
    }
}
