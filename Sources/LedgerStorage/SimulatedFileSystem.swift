import Glibc
import Synchronization

/// An in-memory file system with a crash and fault model, for deterministic storage tests.
///
/// Fault model: every file has the bytes a reader sees now and the bytes that survive a crash
/// (what the last `sync` made durable). `crash(seed:)` replays a seeded prefix of the writes made
/// since that sync, tearing the last one at a random byte, and forgets files whose directory entry
/// was never synced. `noSpaceAfterBytes` makes writes fail with ENOSPC once that many bytes were
/// written (the failing write lands partially); `failSync(after:)` makes a sync fail with EIO.
public final class SimulatedFileSystem: FileSystem, @unchecked Sendable {
    struct PendingWrite { var offset: UInt64; var bytes: [UInt8]; var truncateTo: UInt64? }

    final class File {
        var current: [UInt8] = []
        var durable: [UInt8] = []
        var pending: [PendingWrite] = []
        var nameDurable = false
    }

    private let mutex = Mutex(())
    private var files: [String: File] = [:]
    private var directories: Set<String> = ["/"]
    private var locks: Set<String> = []

    /// Total bytes writes may still add before ENOSPC; nil means unlimited.
    public var noSpaceAfterBytes: Int?
    /// Sync calls that will still succeed before one fails with EIO; nil means never fail.
    public var syncsBeforeFailure: Int?
    public private(set) var syncCount = 0

    public init() {}

    private func withLock<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
        mutex._unsafeLock()
        defer { mutex._unsafeUnlock() }
        return try body()
    }

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        try withLock { () throws(StorageError) -> [String] in
            guard directories.contains(path) else { throw .io(operation: "opendir", path: path, errno: ENOENT) }
            let prefix = path.hasSuffix("/") ? path : path + "/"
            return files.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
                .map { String($0.dropFirst(prefix.count)) }.sorted()
        }
    }

    public func createDirectory(_ path: String) throws(StorageError) {
        try withLock { () throws(StorageError) in
            _ = directories.insert(path)
        }
    }

    public func fileExists(_ path: String) -> Bool {
        (try? withLock { () throws(StorageError) -> Bool in files[path] != nil || directories.contains(path) }) ?? false
    }

    public func open(_ path: String, create: Bool, writable: Bool) throws(StorageError) -> any FileHandle {
        try withLock { () throws(StorageError) -> any FileHandle in
            if files[path] == nil {
                guard create else { throw .io(operation: "open", path: path, errno: ENOENT) }
                files[path] = File()
            }
            return SimulatedFileHandle(fs: self, path: path, writable: writable)
        }
    }

    public func rename(_ from: String, to: String) throws(StorageError) {
        try withLock { () throws(StorageError) in
            guard let file = files.removeValue(forKey: from) else { throw .io(operation: "rename", path: from, errno: ENOENT) }
            file.nameDurable = false
            files[to] = file
        }
    }

    public func remove(_ path: String) throws(StorageError) {
        try withLock { () throws(StorageError) in _ = files.removeValue(forKey: path) }
    }

    /// Whether `availableBytes` tells what `noSpaceAfterBytes` leaves (off: it says it does not
    /// know, as a writer that checks nothing first sees a disk fill).
    public var reportsAvailableBytes = false

    public func availableBytes(_ path: String) -> UInt64? {
        mutex.withLock { _ in reportsAvailableBytes ? noSpaceAfterBytes.map { UInt64(max(0, $0)) } : nil }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        try withLock { () throws(StorageError) in
            let prefix = path.hasSuffix("/") ? path : path + "/"
            for (name, file) in files where name.hasPrefix(prefix) { file.nameDurable = true }
        }
    }

    public func lock(_ path: String) throws(StorageError) -> (any FileHandle)? {
        try withLock { () throws(StorageError) -> (any FileHandle)? in
            if locks.contains(path) { return nil }
            locks.insert(path)
            if files[path] == nil { files[path] = File() }
            return SimulatedFileHandle(fs: self, path: path, writable: true, isLock: true)
        }
    }

    // MARK: Test controls

    /// Loses everything not made durable, tearing writes made since the last sync at a seeded point.
    public func crash(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        mutex._unsafeLock()
        defer { mutex._unsafeUnlock() }
        // In name order: dictionary order changes from run to run (seeded hashing), and the
        // seed must pick the same fate for the same file every time.
        for name in files.keys.sorted() {
            let file = files[name]!
            if !file.nameDurable && file.durable.isEmpty && !file.pending.isEmpty {
                // An entry never synced may or may not survive.
                if rng.next() % 2 == 0 { files.removeValue(forKey: name); continue }
            }
            var bytes = file.durable
            let keep = file.pending.isEmpty ? 0 : Int(rng.next() % UInt64(file.pending.count + 1))
            for (i, write) in file.pending.prefix(keep).enumerated() {
                var w = write
                if i == keep - 1, let t = w.truncateTo == nil ? Optional(w.bytes.count) : nil, t > 0 {
                    w.bytes = Array(w.bytes.prefix(Int(rng.next() % UInt64(t + 1))))
                }
                SimulatedFileSystem.apply(w, to: &bytes)
            }
            file.current = bytes
            file.durable = bytes
            file.pending = []
        }
        locks.removeAll()
    }

    public func contents(_ path: String) -> [UInt8]? {
        mutex._unsafeLock(); defer { mutex._unsafeUnlock() }
        return files[path]?.current
    }

    /// Replaces a file's bytes as if written and synced (for fixtures and tampering tests).
    public func setContents(_ path: String, _ bytes: [UInt8]) {
        mutex._unsafeLock(); defer { mutex._unsafeUnlock() }
        let file = files[path] ?? File()
        file.current = bytes; file.durable = bytes; file.pending = []; file.nameDurable = true
        files[path] = file
    }

    public func flipBit(_ path: String, byte offset: Int, bit: Int) {
        mutex._unsafeLock(); defer { mutex._unsafeUnlock() }
        guard let file = files[path], offset < file.current.count else { return }
        file.current[offset] ^= UInt8(1 << (bit & 7))
        file.durable = file.current
    }

    public var allFiles: [String] {
        mutex._unsafeLock(); defer { mutex._unsafeUnlock() }
        return files.keys.sorted()
    }

    static func apply(_ write: PendingWrite, to bytes: inout [UInt8]) {
        if let t = write.truncateTo {
            if Int(t) < bytes.count { bytes.removeLast(bytes.count - Int(t)) } else { bytes += [UInt8](repeating: 0, count: Int(t) - bytes.count) }
            return
        }
        let end = Int(write.offset) + write.bytes.count
        if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
        bytes.replaceSubrange(Int(write.offset)..<end, with: write.bytes)
    }

    // MARK: Handle operations

    fileprivate func file(_ path: String) throws(StorageError) -> File {
        guard let f = files[path] else { throw .io(operation: "access", path: path, errno: ENOENT) }
        return f
    }

    fileprivate func handleWrite(_ path: String, offset: UInt64, bytes: UnsafeRawBufferPointer) throws(StorageError) {
        try withLock { () throws(StorageError) in
            let f = try file(path)
            var data = Array(bytes)
            var failure: StorageError?
            if let budget = noSpaceAfterBytes {
                if data.count > budget {
                    data = Array(data.prefix(budget))
                    failure = .io(operation: "pwrite", path: path, errno: ENOSPC)
                }
                noSpaceAfterBytes = budget - data.count
            }
            let w = PendingWrite(offset: offset, bytes: data, truncateTo: nil)
            SimulatedFileSystem.apply(w, to: &f.current)
            f.pending.append(w)
            if let failure { throw failure }
        }
    }

    fileprivate func handleTruncate(_ path: String, size: UInt64) throws(StorageError) {
        try withLock { () throws(StorageError) in
            let f = try file(path)
            let w = PendingWrite(offset: 0, bytes: [], truncateTo: size)
            SimulatedFileSystem.apply(w, to: &f.current)
            f.pending.append(w)
        }
    }

    fileprivate func handleSync(_ path: String) throws(StorageError) {
        try withLock { () throws(StorageError) in
            let f = try file(path)
            syncCount += 1
            if let left = syncsBeforeFailure {
                if left <= 0 { throw .io(operation: "fdatasync", path: path, errno: EIO) }
                syncsBeforeFailure = left - 1
            }
            f.durable = f.current
            f.pending = []
        }
    }

    fileprivate func handleRead(_ path: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        try withLock { () throws(StorageError) -> Int in
            let f = try file(path)
            guard offset < UInt64(f.current.count) else { return 0 }
            let n = min(buffer.count, f.current.count - Int(offset))
            f.current.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n)
            }
            return n
        }
    }

    fileprivate func handleSize(_ path: String) throws(StorageError) -> UInt64 {
        try withLock { () throws(StorageError) -> UInt64 in UInt64(try file(path).current.count) }
    }

    fileprivate func unlock(_ path: String) {
        mutex._unsafeLock(); defer { mutex._unsafeUnlock() }
        locks.remove(path)
    }
}

final class SimulatedFileHandle: FileHandle {
    let fs: SimulatedFileSystem
    let path: String
    let writable: Bool
    let isLock: Bool
    private var closed = false

    init(fs: SimulatedFileSystem, path: String, writable: Bool, isLock: Bool = false) {
        self.fs = fs; self.path = path; self.writable = writable; self.isLock = isLock
    }

    func size() throws(StorageError) -> UInt64 { try fs.handleSize(path) }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        try fs.handleRead(path, offset: offset, into: buffer)
    }
    func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(StorageError) {
        guard writable else { throw .io(operation: "pwrite", path: path, errno: EBADF) }
        try fs.handleWrite(path, offset: offset, bytes: bytes)
    }
    func truncate(to size: UInt64) throws(StorageError) {
        guard writable else { throw .io(operation: "ftruncate", path: path, errno: EBADF) }
        try fs.handleTruncate(path, size: size)
    }
    func sync() throws(StorageError) { try fs.handleSync(path) }
    func close() {
        if !closed { closed = true; if isLock { fs.unlock(path) } }
    }
    deinit { close() }
}

/// A small seeded generator (SplitMix64) for fault injection; never the system RNG.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
