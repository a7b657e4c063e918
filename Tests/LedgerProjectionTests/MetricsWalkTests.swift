import XCTest
import LedgerModel
@testable import LedgerProjection

/// A server renders /metrics from a token walk taken a page of records at a time (so lookups get
/// the lock in between); on a state that does not change meanwhile it must equal the one-go text.
final class MetricsWalkTests: XCTestCase {
    func testPagedWalkEqualsTheWholeWalkAcrossRecordPages() {
        let seed = UInt64(ProcessInfo.processInfo.environment["LEDGER_TEST_SEED"] ?? "") ?? 0x3E7
        var rng = SplitMix(seed)
        let p = Projection()
        // More tokens than one record page holds, so the walk really goes page by page.
        let tokens = RecordPages.pageCount + 5_000
        let releases = ["v1", "v2", "v3"], tracks = ["stable", "canary"]
        var seq: UInt64 = 1
        for i in 0..<tokens {
            let ts = Int64(1_000_000 + i)
            var e = Event(type: .issued, ts: ts)
            e.token = "t-\(i)"
            e.release = releases[Int(rng.next() % 3)]
            e.track = tracks[Int(rng.next() % 2)]
            e.exp = ts + Int64(rng.next() % 200_000)
            p.apply(e, seq: seq); seq += 1
            if rng.next() % 5 == 0 {
                var r = Event(type: .revoked, ts: ts + 1)
                r.token = e.token
                p.apply(r, seq: seq); seq += 1
            }
        }
        let clock = Int64(1_000_000 + tokens + 50_000)
        var walk = p.tokenMetricsWalk(clock: clock)
        var chunks = 0
        while p.continueWalk(&walk) { chunks += 1 }
        XCTAssertEqual(chunks, (tokens + TokenMetricsWalk.chunk - 1) / TokenMetricsWalk.chunk, "seed \(seed)")
        XCTAssertFalse(p.continueWalk(&walk), "a finished walk stays finished")
        XCTAssertEqual(p.prometheusText(clock: clock, walk: walk), p.prometheusText(clock: clock), "seed \(seed)")
    }
}

private struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
