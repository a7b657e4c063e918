// What /metrics adds to the projection's own metrics (Projection+Prometheus.swift): latency
// histograms measured by the server, and the file system wrapper that times fsyncs.
import LedgerStorage

/// A Prometheus histogram of durations. Recording takes one uncontended lock per call (the
/// committer records a whole commit's submissions in one call); rendering copies the counts.
public final class LatencyHistogram: @unchecked Sendable {
    /// Upper bounds in seconds, as written in the `le` label: 100 µs (a page-cache write) up to
    /// 10 s (a disk in trouble).
    static let bounds = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]
    private static let boundsNs: [UInt64] = bounds.map { UInt64((Double($0)! * 1e9).rounded()) }
    private let lock = Mutex()
    /// Per bucket, not cumulative; the last one is above every bound.
    private var counts = [UInt64](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    private var sumNs: UInt64 = 0
    private var total: UInt64 = 0

    public init() {}

    @inline(__always) private static func bucket(_ ns: UInt64) -> Int {
        var i = 0
        while i < boundsNs.count && ns > boundsNs[i] { i += 1 }
        return i
    }

    public func record(ns: UInt64) {
        let b = LatencyHistogram.bucket(ns)
        lock.locked {
            counts[b] &+= 1
            sumNs &+= ns
            total &+= 1
        }
    }

    public func record(_ durations: some Sequence<UInt64>) {
        lock.locked {
            for ns in durations {
                counts[LatencyHistogram.bucket(ns)] &+= 1
                sumNs &+= ns
                total &+= 1
            }
        }
    }

    public var count: UInt64 { lock.locked { total } }

    /// The family in the text exposition format: cumulative `_bucket`s, `_sum` in seconds, `_count`.
    public func prometheus(name: String, help: String) -> String {
        let (c, sum, n) = lock.locked { (counts, sumNs, total) }
        var out = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var running: UInt64 = 0
        for (i, le) in LatencyHistogram.bounds.enumerated() {
            running += c[i]
            out += "\(name)_bucket{le=\"\(le)\"} \(running)\n"
        }
        out += "\(name)_bucket{le=\"+Inf\"} \(n)\n"
        out += "\(name)_sum \(Double(sum) / 1e9)\n"
        out += "\(name)_count \(n)\n"
        return out
    }
}

/// The POSIX file system with every fsync (file or directory) timed into a histogram. The
/// storage layer does its fsyncs inside `SegmentLog.append`, so this is where they can be seen
/// one by one without changing it.
public final class TimedFileSystem: MeasuringFileSystem, @unchecked Sendable {
    let base: any FileSystem
    public var unmeasured: any FileSystem { base }
    public let syncs: LatencyHistogram

    public init(base: any FileSystem = PosixFileSystem(), syncs: LatencyHistogram) {
        self.base = base
        self.syncs = syncs
    }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] { try base.listDirectory(path) }
    public func createDirectory(_ path: String) throws(StorageError) { try base.createDirectory(path) }
    public func fileExists(_ path: String) -> Bool { base.fileExists(path) }
    public func open(_ path: String, create: Bool, writable: Bool) throws(StorageError) -> any FileHandle {
        TimedFileHandle(try base.open(path, create: create, writable: writable), syncs: syncs)
    }
    public func rename(_ from: String, to: String) throws(StorageError) { try base.rename(from, to: to) }
    public func remove(_ path: String) throws(StorageError) { try base.remove(path) }
    public func syncDirectory(_ path: String) throws(StorageError) {
        let start = monotonicNanoseconds()
        defer { syncs.record(ns: monotonicNanoseconds() - start) }
        try base.syncDirectory(path)
    }
    public func lock(_ path: String) throws(StorageError) -> (any FileHandle)? { try base.lock(path) }
}

final class TimedFileHandle: FileHandle {
    let base: any FileHandle
    let syncs: LatencyHistogram

    init(_ base: any FileHandle, syncs: LatencyHistogram) {
        self.base = base
        self.syncs = syncs
    }

    var path: String { base.path }
    func size() throws(StorageError) -> UInt64 { try base.size() }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int { try base.read(at: offset, into: buffer) }
    func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(StorageError) { try base.write(at: offset, bytes) }
    func truncate(to size: UInt64) throws(StorageError) { try base.truncate(to: size) }
    func sync() throws(StorageError) {
        let start = monotonicNanoseconds()
        defer { syncs.record(ns: monotonicNanoseconds() - start) }
        try base.sync()
    }
    func close() { base.close() }
}
