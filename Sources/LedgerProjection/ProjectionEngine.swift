// State at any point of the ledger: the nearest trustworthy snapshot at or before the point,
// then the tail replayed from the segments. Replaying a prefix also leaves snapshots behind (at
// every marker, and every `snapshotIntervalEvents`), so the next question starts closer.
import Dispatch
import LedgerCrypto
import LedgerModel
import LedgerStorage

public enum StatePoint: Sendable, Equatable, CustomStringConvertible {
    case head
    case seq(UInt64)
    /// Epoch ms: only events with `ts` at or before it, clock = it.
    case time(Int64)
    case marker(String)

    public var description: String {
        switch self {
        case .head: "head"
        case let .seq(n): "seq \(n)"
        case let .time(t): "time \(Timestamp.formatRFC3339(epochMilliseconds: t) ?? String(t))"
        case let .marker(m): "marker \(m)"
        }
    }
}

public struct ProjectionError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

public struct StateResult {
    public let projection: Projection
    /// The clock of the state rules for this point.
    public let clock: Int64
    public let point: StatePoint
    /// For `.marker`: the marker.
    public let marker: MarkerRecord?
    /// The snapshot the state started from (nil: from the first event).
    public let snapshot: SnapshotHeader?
    public let replayedEvents: UInt64
    /// Snapshots ignored (and why) or written, for the user.
    public let notes: [String]

    public var summary: StateSummary { projection.summary(clock: clock) }
}

public final class ProjectionEngine {
    public let log: SegmentLog
    public let store: SnapshotStore?
    public let options: ProjectionOptions
    /// A snapshot is written after a block once this many events passed since the last one.
    public var snapshotIntervalEvents: UInt64 = 1_000_000
    /// Interval (non-marker) snapshots kept; marker snapshots are all kept.
    public var keepIntervalSnapshots = 3
    public var writeSnapshots = true
    public var progress: ((String) -> Void)?
    private(set) public var notes: [String] = []

    public init(log: SegmentLog, store: SnapshotStore?, options: ProjectionOptions = ProjectionOptions()) {
        self.log = log
        self.store = store
        self.options = options
    }

    /// The block holding `seq`, if any.
    func block(holding seq: UInt64) -> BlockLocation? {
        log.locateBlocks(fromSeq: seq, toSeq: seq).first
    }

    /// Snapshots that are whole, current and agree with the ledger, newest first; the others
    /// are noted once and skipped.
    func trustedSnapshots() -> [SnapshotInfo] {
        guard let store else { return [] }
        var out = [SnapshotInfo]()
        for info in store.list().reversed() {
            guard let h = info.header, info.problem == nil else {
                note("ignored snapshot \(info.name): \(info.problem ?? "unreadable") (damaged)")
                continue
            }
            if h.formatVersion != SnapshotHeader.formatVersion {
                note("ignored snapshot \(info.name): projection format version \(h.formatVersion), this build writes \(SnapshotHeader.formatVersion) (stale)")
                continue
            }
            if h.optionsHash != options.hash { continue } // built for other options: not an error
            guard h.seq >= 1, h.seq <= log.lastSeq, let b = block(holding: h.seq) else {
                note("ignored snapshot \(info.name): seq \(h.seq) is past the ledger's head \(log.lastSeq) (stale)")
                continue
            }
            guard b.header.lastSeq == h.blockLastSeq, b.header.chainHash == h.chainHash else {
                note("ignored snapshot \(info.name): the ledger's chain at seq \(h.seq) is \(b.header.chainHash.hex.prefix(16))…, the snapshot was taken on \(h.chainHash.hex.prefix(16))… (stale)")
                continue
            }
            out.append(info)
        }
        return out
    }

    private var noted = Set<String>()
    private func note(_ s: String) {
        if noted.insert(s).inserted { notes.append(s) }
    }

    /// Loads the newest trusted snapshot passing `accept`; a snapshot that fails to load is noted
    /// and the next older one tried.
    func startingPoint(_ accept: (SnapshotHeader) -> Bool) -> (Projection, SnapshotHeader?) {
        for info in trustedSnapshots() where accept(info.header!) {
            do {
                return (try store!.load(info, options: options), info.header!)
            } catch {
                note("ignored snapshot \(info.name): \(error) (damaged)")
            }
        }
        return (Projection(options: options), nil)
    }

    public func state(at point: StatePoint) throws(ProjectionError) -> StateResult {
        switch point {
        case .head:
            return try prefix(upTo: log.lastSeq, point: point, clock: nil, marker: nil)
        case let .seq(n):
            guard n <= log.lastSeq else { throw ProjectionError(message: "seq \(n) is past the ledger's head (seq \(log.lastSeq))") }
            return try prefix(upTo: n, point: point, clock: nil, marker: nil)
        case let .marker(id):
            // A snapshot taken at the marker knows it; otherwise the state now does.
            let markerRecord: MarkerRecord
            // The oldest: where an id repeats, the first marker with it is the one meant, and a
            // later one's snapshot knows that (its own marker list names the first).
            if let info = trustedSnapshots().last(where: { $0.header?.marker == id }) {
                do {
                    let p = try store!.load(info, options: options)
                    if let m = p.marker(named: id), m.seq == p.lastSeq {
                        return StateResult(projection: p, clock: m.ts, point: point, marker: m, snapshot: info.header, replayedEvents: 0, notes: notes)
                    }
                } catch {
                    note("ignored snapshot \(info.name): \(error) (damaged)")
                }
            }
            do {
                let now = try prefix(upTo: log.lastSeq, point: .head, clock: nil, marker: nil)
                guard let m = now.projection.marker(named: id) else {
                    let known = now.projection.markers.map(\.marker)
                    throw ProjectionError(message: "unknown marker \"\(id)\" (" + (known.isEmpty ? "the ledger has no markers" : "known: " + known.suffix(12).joined(separator: ", ")) + ")")
                }
                markerRecord = m
            }
            return try prefix(upTo: markerRecord.seq, point: point, clock: markerRecord.ts, marker: markerRecord)
        case let .time(t):
            return try atTime(t)
        }
    }

    private func prefix(upTo target: UInt64, point: StatePoint, clock: Int64?, marker: MarkerRecord?) throws(ProjectionError) -> StateResult {
        let (p, header) = startingPoint { $0.seq <= target }
        let replayed = try replay(p, from: p.lastSeq + 1, to: target, tsMax: nil, snapshotting: writeSnapshots && store != nil)
        return StateResult(projection: p, clock: clock ?? p.headClock, point: point, marker: marker, snapshot: header,
                           replayedEvents: replayed, notes: notes)
    }

    private func atTime(_ t: Int64) throws(ProjectionError) -> StateResult {
        // Only a snapshot whose every event is at or before `t` can start a time-filtered state.
        let (p, header) = startingPoint { $0.maxTs <= t }
        let replayed = try replay(p, from: p.lastSeq + 1, to: log.lastSeq, tsMax: t, snapshotting: false)
        return StateResult(projection: p, clock: t, point: .time(t), marker: nil, snapshot: header, replayedEvents: replayed, notes: notes)
    }

    /// Applies events `from...to` (those with `ts` ≤ `tsMax` when given) to `p`.
    /// - Returns: the number of events applied.
    func replay(_ p: Projection, from: UInt64, to: UInt64, tsMax: Int64?, snapshotting: Bool) throws(ProjectionError) -> UInt64 {
        guard from <= to else { return 0 }
        let locations = Array(log.locateBlocks(fromSeq: from, toSeq: to, until: tsMax))
        guard !locations.isEmpty else { return 0 }
        let startCount = p.eventCount
        // Counted from where this replay starts (a snapshot or the first event).
        var lastSnapshotSeq = p.lastSeq
        let total = to - from + 1
        let startNs = monotonicNanoseconds()
        try forEachBlock(locations, verb: "replay") { (location, block) throws(ProjectionError) in
            let first = location.header.firstSeq
            let lo = Int(max(from, first) - first)
            let hi = Int(min(to, location.header.lastSeq) - first) + 1
            if snapshotting {
                // Markers get a snapshot at their own sequence number, even inside a block.
                var start = lo
                for i in lo..<hi where block.types[i].isMarker {
                    p.apply(block, firstSeq: first, range: start..<(i + 1), tsMax: tsMax)
                    start = i + 1
                    if let m = p.markers.last, m.seq == first + UInt64(i) {
                        saveSnapshot(p, location, marker: m.marker)
                        lastSnapshotSeq = p.lastSeq
                    }
                }
                p.apply(block, firstSeq: first, range: start..<hi, tsMax: tsMax)
                if hi == block.count && p.lastSeq - lastSnapshotSeq >= snapshotIntervalEvents && p.lastSeq < log.lastSeq {
                    saveSnapshot(p, location, marker: nil)
                    lastSnapshotSeq = p.lastSeq
                }
            } else {
                p.apply(block, firstSeq: first, range: lo..<hi, tsMax: tsMax)
            }
            if let progress {
                let done = location.header.lastSeq - from + 1
                let seconds = Double(monotonicNanoseconds() - startNs) / 1e9
                progress("replayed through seq \(min(location.header.lastSeq, to)) (\(done * 100 / max(total, 1))%, \(seconds > 0 ? Int(Double(done) / seconds) : 0) events/s)")
            }
        }
        // The head is worth a snapshot when the tail was long: the next question starts there.
        if snapshotting, to == log.lastSeq, p.lastSeq - lastSnapshotSeq >= snapshotIntervalEvents, let b = block(holding: p.lastSeq) {
            saveSnapshot(p, b, marker: nil)
        }
        return p.eventCount - startCount
    }

    /// Reads and decodes `locations` in order (a second thread decoding ahead), handing each
    /// block to `body`; a block that cannot be read ends the walk with an error naming it.
    func forEachBlock(_ locations: [BlockLocation], verb: String, _ body: (BlockLocation, DecodedBlock) throws(ProjectionError) -> Void) throws(ProjectionError) {
        let prefetch = BlockPrefetcher(log: log, locations: locations)
        for location in locations {
            switch prefetch.next() {
            case let .success(block):
                do { try body(location, block) } catch {
                    prefetch.cancel()
                    throw error
                }
            case let .failure(e):
                prefetch.cancel()
                throw ProjectionError(message: "cannot \(verb) seq \(location.header.firstSeq)-\(location.header.lastSeq): \(e)")
            }
        }
    }

    private func saveSnapshot(_ p: Projection, _ location: BlockLocation, marker: String?) {
        guard let store else { return }
        do {
            let info = try store.write(p, blockLastSeq: location.header.lastSeq, chainHash: location.header.chainHash, marker: marker)
            let removed = store.prune(keepInterval: keepIntervalSnapshots)
            progress?("wrote snapshot \(info.name) (\(info.fileBytes) bytes)" + (removed.isEmpty ? "" : ", removed \(removed.count) older"))
        } catch {
            // A snapshot is an optimisation: failing to write one (read-only directory, full
            // disk) never fails the question being answered.
            note("could not write a snapshot at seq \(p.lastSeq): \(error)")
            writeSnapshots = false
        }
    }
}

/// Reads and decodes blocks on another thread, a few ahead of the caller, so decoding and
/// applying run on both cores.
final class BlockPrefetcher: @unchecked Sendable {
    private let log: SegmentLog
    private let locations: [BlockLocation]
    private var results: [Result<DecodedBlock, StorageError>?]
    private let filled = DispatchSemaphore(value: 0)
    private let free: DispatchSemaphore
    private var consumed = 0
    private let lock = DispatchQueue(label: "prefetch")
    private var cancelled = false
    static let depth = 4

    init(log: SegmentLog, locations: [BlockLocation]) {
        self.log = log
        self.locations = locations
        self.results = Array(repeating: nil, count: locations.count)
        self.free = DispatchSemaphore(value: BlockPrefetcher.depth)
        DispatchQueue.global().async { [self] in
            for (i, location) in locations.enumerated() {
                free.wait()
                if lock.sync(execute: { cancelled }) { filled.signal(); return }
                let r = Result { () throws(StorageError) in try log.readBlock(location) }
                lock.sync { results[i] = r }
                filled.signal()
                if case .failure = r { return }
            }
        }
    }

    func next() -> Result<DecodedBlock, StorageError> {
        filled.wait()
        let r = lock.sync { () -> Result<DecodedBlock, StorageError> in
            let r = results[consumed]!
            results[consumed] = nil
            return r
        }
        consumed += 1
        free.signal()
        return r
    }

    /// Stops the reader early (it may finish the block in hand).
    func cancel() {
        lock.sync { cancelled = true }
        free.signal()
    }
}
