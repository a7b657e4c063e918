// Segments written ahead with zeros (FORMAT.md, "Preallocated space"; LogOptions.preallocate).
//
// An append to the end of a file makes every fdatasync also write the inode (the size changed)
// and makes the kernel allocate and fill fresh page-cache pages: on this project's machine a
// commit's write + fdatasync took 0.30 ms at p50 that way, and 0.19 ms overwriting blocks of a
// file already written with zeros and synced (BENCHMARKS.md). So the next segment is prepared
// in the background as a zero-filled, synced file of another name, and a roll renames it into
// place. Preparing the active segment itself would not do: its fdatasync would then write the
// preparer's dirty zeros too, inside a commit.
import CThreads
import Dispatch
import Glibc
import Synchronization

/// A file system that measures another one; background work that is not a commit goes to
/// `unmeasured`.
public protocol MeasuringFileSystem: FileSystem {
    var unmeasured: any FileSystem { get }
}

/// What the segment preparer has done since the log was opened, for an operator: a preparation
/// that fails costs nothing but the speed it was for, so without these nobody would know the
/// disk is nearly full until the commits find out.
public final class PreparationRecord: Sendable {
    private struct Counts {
        var prepared = 0
        var failed = 0
        var lastFailure: StorageError?
        /// The most recent preparation failed (none has succeeded since `lastFailure`).
        var failing = false
        var onFailure: (@Sendable (StorageError) -> Void)?
    }
    private let counts = Mutex(Counts())

    init() {}

    /// Files prepared, and preparations that failed or were not started for want of room.
    public var prepared: Int { counts.withLock { $0.prepared } }
    public var failed: Int { counts.withLock { $0.failed } }
    public var lastFailure: StorageError? { counts.withLock { $0.lastFailure } }

    /// Calls `handler` on the preparer's thread after each failure from now on (the log's
    /// owner logs them), and at once on this thread when the most recent preparation failed
    /// (at open, before there was anyone to tell).
    public func onFailure(_ handler: @escaping @Sendable (StorageError) -> Void) {
        let pending = counts.withLock { c -> StorageError? in
            c.onFailure = handler
            return c.failing ? c.lastFailure : nil
        }
        if let pending { handler(pending) }
    }

    func recordPrepared() {
        counts.withLock { c in
            c.prepared += 1
            c.failing = false
        }
    }

    func recordFailure(_ error: StorageError) {
        let handler = counts.withLock { c -> (@Sendable (StorageError) -> Void)? in
            c.failed += 1
            c.lastFailure = error
            c.failing = true
            return c.onFailure
        }
        handler?(error)
    }
}

/// Prepares zero-filled files for the next segment, one at a time, on a thread of its own.
final class SegmentPreparer: @unchecked Sendable {
    /// A file being filled (removed on open: it may be short after a crash).
    static let partialName = "next-segment.zero.partial"
    /// A file filled and synced, ready to become the next segment.
    static let readyName = "next-segment.zero"

    let fs: any FileSystem
    let directory: String
    /// How many bytes each prepared file has.
    let bytes: UInt64
    private struct State {
        var running = false
        var ready = false
        var stopping = false
    }
    private let state = Mutex(State())
    private let done = DispatchSemaphore(value: 0)
    private let queue = DispatchQueue(label: "tl-prealloc", qos: .utility)

    let record: PreparationRecord

    init(fs: any FileSystem, directory: String, bytes: UInt64, record: PreparationRecord = PreparationRecord()) {
        self.record = record
        // Its long syncs are not commits: a measuring wrapper (serve's fsync histogram) is skipped.
        self.fs = (fs as? any MeasuringFileSystem)?.unmeasured ?? fs
        self.directory = directory; self.bytes = bytes
        let partial = joinPath(directory, Self.partialName)
        if self.fs.fileExists(partial) { try? self.fs.remove(partial) }
        let ready = joinPath(directory, Self.readyName)
        if self.fs.fileExists(ready) {
            // Only a file that was renamed here after its sync exists under this name; one of
            // another size (segmentBytesMax changed) is still all zeros and still usable.
            state.withLock { $0.ready = true }
        }
    }

    var isReady: Bool { state.withLock { $0.ready } }

    /// Starts preparing the next file unless one is ready or being prepared, or the disk is
    /// nearly full: a preparation starts only while twice its size is free, so that what it
    /// takes never leaves the commits (and snapshots, index files) less than a segment's room.
    func start() {
        let go = state.withLock { s -> Bool in
            if s.running || s.ready || s.stopping { return false }
            s.running = true
            return true
        }
        guard go else { return }
        if let free = fs.availableBytes(directory), free < bytes &* 2 {
            state.withLock { $0.running = false }
            // ENOSPC, not `.failed`: the log goes on; only this preparation is left out.
            record.recordFailure(.io(operation: "skipped: \(free) bytes free, under twice the segment size (\(bytes &* 2)), in", path: directory, errno: ENOSPC))
            return
        }
        queue.async { [self] in
            let outcome: StorageError? = Result { () throws(StorageError) in try prepare() }.failureValue
            // A preparation that failed (a full disk, most likely) must not keep the space it
            // took from the commits: the partial file goes, and the next roll makes its segment
            // as without preallocation.
            if outcome != nil { try? fs.remove(joinPath(directory, Self.partialName)) }
            state.withLock { s in
                s.running = false
                if outcome == nil { s.ready = true }
            }
            // Stopped by close: not a failure anyone needs to hear of.
            if let outcome, !state.withLock({ $0.stopping }) { record.recordFailure(outcome) } else if outcome == nil { record.recordPrepared() }
            done.signal()
        }
    }

    /// The ready file's path, now the caller's to rename; nil when none is ready.
    func take() -> String? {
        state.withLock { s -> String? in
            guard s.ready else { return nil }
            s.ready = false
            return joinPath(directory, Self.readyName)
        }
    }

    /// Waits for a preparation in progress to end (it stops early).
    func stop() {
        let wait = state.withLock { s -> Bool in
            s.stopping = true
            return s.running
        }
        if wait { done.wait() }
    }

    /// Blocks until no preparation is running (tests).
    func waitUntilIdle() {
        while state.withLock({ $0.running }) { usleep(1000) }
    }

    /// Bytes written per step, and the pause after each: the commits' fsyncs share the disk
    /// with it, and 64 MiB written at once held them up to 10 ms behind it (p99).
    static let stepBytes = 256 << 10
    static let pauseMicroseconds: UInt32 = 4_000

    private func prepare() throws(StorageError) {
        // Its writes go after the commits' where the I/O scheduler allows (mq-deadline does).
        let previousIOPriority = tl_thread_set_io_idle(1)
        defer { _ = tl_thread_restore_io_priority(previousIOPriority) }
        let partial = joinPath(directory, Self.partialName)
        let handle = try fs.open(partial, create: true, writable: true)
        defer { handle.close() }
        try handle.truncate(to: 0)
        let chunk = [UInt8](repeating: 0, count: Self.stepBytes)
        var offset: UInt64 = 0
        while offset < bytes {
            if state.withLock({ $0.stopping }) {
                try? fs.remove(partial)
                throw .failed("stopped")
            }
            let n = Int(min(UInt64(chunk.count), bytes - offset))
            try handle.write(at: offset, n == chunk.count ? chunk : Array(chunk[0..<n]))
            offset += UInt64(n)
            // Written back step by step (without a cache flush per step), so no burst of dirty
            // pages is left for the one sync at the end.
            handle.startWriteback(at: offset - UInt64(n), count: n)
            if offset < bytes { usleep(Self.pauseMicroseconds) }
        }
        try handle.sync()
        try fs.rename(partial, to: joinPath(directory, Self.readyName))
        try fs.syncDirectory(directory)
    }
}

/// Whether the bytes of `handle` from `offset` to `size` are all zero: space written ahead,
/// not a torn write (a block header never starts with a zero byte).
func allZero(_ handle: any FileHandle, from offset: UInt64, to size: UInt64) throws(StorageError) -> Bool {
    var at = offset
    while at < size {
        let buffer = try handle.read(at: at, count: Int(min(1 << 20, size - at)))
        let n = buffer.count
        if n == 0 { return true }
        let zero = buffer.withUnsafeBytes { raw -> Bool in
            var i = 0
            while i + 8 <= n { if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }; i += 8 }
            while i < n { if raw[i] != 0 { return false }; i += 1 }
            return true
        }
        if !zero { return false }
        at += UInt64(n)
    }
    return true
}

/// The offset just past the last non-zero byte in `offset..<size` (`offset` when there is none):
/// where a last segment's data ends when preallocated zeros follow it.
func endOfData(_ handle: any FileHandle, from offset: UInt64, to size: UInt64) throws(StorageError) -> UInt64 {
    var end = size
    while end > offset {
        let start = end - min(1 << 20, end - offset)
        let bytes = try handle.read(at: start, count: Int(end - start))
        if let last = bytes.lastIndex(where: { $0 != 0 }) { return start + UInt64(last) + 1 }
        end = start
    }
    return offset
}

/// How many of the `count` bytes at `offset` a tail cut keeps in quarantine: all of them, unless
/// they end in 64 KiB or more of zeros, which is preallocated space or a zero-filled write (no
/// block ends that way: payloads are LZ4 output), not data. The file is cut at `offset` anyway.
func keptBytes(_ handle: any FileHandle, from offset: UInt64, count: UInt64) throws(StorageError) -> UInt64 {
    let end = try endOfData(handle, from: offset, to: offset + count)
    return offset + count - end >= 64 << 10 ? end - offset : count
}

extension Result {
    fileprivate var failureValue: Failure? { if case let .failure(e) = self { e } else { nil } }
}
