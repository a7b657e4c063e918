// The anomaly log in pages behaves as the array it replaced: the same records in the same
// order, across page boundaries, with counts by kind that match a walk of the records, and a
// copy that does not change with the original.
import XCTest
@testable import LedgerProjection

final class AnomalyLogTests: XCTestCase {
    func testPagesHoldTheSameRecordsAsAnArray() {
        for seed: UInt64 in [1, 2, 3] {
            var random = SplitMix64(seed: seed)
            var log = AnomalyLog(), array = [AnomalyRecord]()
            let n = AnomalyLog.pageRecords * 2 + random.below(AnomalyLog.pageRecords)
            var copyAt: (AnomalyLog, Int)?
            for i in 0..<n {
                let kind = AnomalyKind.allCases[random.below(AnomalyKind.allCases.count)]
                let r = AnomalyRecord(seq: UInt64(i + 1), ts: Int64(random.next() >> 1), kind: kind, token: UInt32(random.below(1000)))
                log.append(r)
                array.append(r)
                if i == AnomalyLog.pageRecords + 7 { copyAt = (log, i + 1) }
            }
            XCTAssertEqual(log.count, n, "seed \(seed)")
            XCTAssertEqual(Array(log), array, "seed \(seed): every record, in order")
            for i in [0, AnomalyLog.pageRecords - 1, AnomalyLog.pageRecords, n - 1] {
                XCTAssertEqual(log[i], array[i], "seed \(seed): record \(i)")
            }
            let from = AnomalyLog.pageRecords - 3
            XCTAssertEqual(Array(log[from...]), Array(array[from...]), "seed \(seed): a slice across a page boundary")
            for k in AnomalyKind.allCases {
                XCTAssertEqual(log.count(of: k), UInt64(array.filter { $0.kind == k }.count), "seed \(seed): count of \(k)")
            }
            let (copy, copiedCount) = copyAt!
            XCTAssertEqual(copy.count, copiedCount, "seed \(seed): a copy keeps its own length")
            XCTAssertEqual(Array(copy), Array(array[..<copiedCount]), "seed \(seed): and its own records")
            var rebuilt = AnomalyLog()
            rebuilt.reserveCapacity(n)
            for r in array { rebuilt.append(r) }
            XCTAssertEqual(rebuilt, log, "seed \(seed): equal logs compare equal")
        }
    }
}
