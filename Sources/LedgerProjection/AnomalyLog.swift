/// The anomalies raised so far, in seq order, kept in fixed pages. The log only grows (a
/// server's reaches millions of records), and as one array each doubling copied all of it into
/// a fresh buffer under the state's lock: in one `bench server` run the projector spent 0.21 s
/// in `Array.append`'s memmove and the kernel zeroing the new pages (perf), and the largest
/// copies held HTTP queries and subscriptions for tens of milliseconds. A page, once full, is
/// never moved. Counts by kind are kept as records arrive, so `/metrics` and `state` do not
/// walk the log.
struct AnomalyLog: RandomAccessCollection, Equatable {
    /// 16,384 records of 56 bytes: under a MiB per page.
    static let pageShift = 14
    static let pageRecords = 1 << pageShift

    private var pages: [[AnomalyRecord]] = []
    private(set) var count = 0
    /// By `AnomalyKind.rawValue`.
    private var byKind = [UInt64](repeating: 0, count: Int(AnomalyKind.allCases.map(\.rawValue).max()!) + 1)

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(i: Int) -> AnomalyRecord {
        precondition(i >= 0 && i < count, "anomaly \(i) of \(count)")
        return pages[i >> Self.pageShift][i & (Self.pageRecords - 1)]
    }

    mutating func append(_ record: AnomalyRecord) {
        if count & (Self.pageRecords - 1) == 0 {
            var page = [AnomalyRecord]()
            page.reserveCapacity(Self.pageRecords)
            pages.append(page)
        }
        pages[pages.count - 1].append(record)
        count += 1
        byKind[Int(record.kind.rawValue)] &+= 1
    }

    /// Room for the page list of `n` records (the pages themselves are made as they fill).
    mutating func reserveCapacity(_ n: Int) {
        pages.reserveCapacity(n >> Self.pageShift + 1)
    }

    func count(of kind: AnomalyKind) -> UInt64 { byKind[Int(kind.rawValue)] }
}
