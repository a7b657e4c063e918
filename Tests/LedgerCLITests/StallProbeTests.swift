import CThreads
import Foundation
import XCTest

/// `bench server`'s reference for the latency phase: a thread spinning on the clock must see
/// the time its core was taken from it.
final class StallProbeTests: XCTestCase {
    func testTwoSpinnersOnOneCoreEachSeeTheOtherTakingTheCore() {
        let group = DispatchGroup()
        nonisolated(unsafe) var results = [tl_stalls](repeating: tl_stalls(), count: 2)
        nonisolated(unsafe) var codes = [Int32](repeating: -1, count: 2)
        let duration: Int64 = 400_000_000
        for i in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                var s = tl_stalls()
                codes[i] = tl_measure_stalls(0, duration, &s)
                results[i] = s
                group.leave()
            }
        }
        group.wait()
        XCTAssertEqual(codes, [0, 0])
        for s in results {
            // Both pinned to the same core: each runs by turns, so a large share of its time
            // is gaps longer than 0.5 ms (the scheduler's slices are 0.7 ms or more).
            XCTAssertGreaterThan(s.stalledNs, duration / 5, "stalled \(s.stalledNs) ns of \(duration)")
            XCTAssertGreaterThanOrEqual(s.longestNs, 500_000)
            XCTAssertLessThan(s.longestNs, duration)
        }
    }

    func testAnIdleCoreShowsLittleStoppedTime() {
        var s = tl_stalls()
        XCTAssertEqual(tl_measure_stalls(0, 100_000_000, &s), 0)
        // Not zero on a shared VM, but far from the turns above.
        XCTAssertLessThan(s.stalledNs, 50_000_000)
        XCTAssertGreaterThan(s.longestNs, 0)
    }

    func testACoreTheProcessMayNotUseIsRefused() {
        var s = tl_stalls()
        XCTAssertEqual(tl_measure_stalls(Int32(tl_cpus_available()), 1_000_000, &s), EINVAL)
        XCTAssertGreaterThanOrEqual(tl_cpus_available(), 1)
    }
}
