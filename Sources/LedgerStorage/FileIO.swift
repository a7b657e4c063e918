// File IO behind an interface. The storage layer never calls the OS directly, so tests can run
// it on `SimulatedFileSystem`: torn writes at any byte, bit flips, ENOSPC and failing fsync, all
// reproducible from a seed.

public protocol FileSystem: AnyObject, Sendable {
    func listDirectory(_ path: String) throws(StorageError) -> [String]
    func createDirectory(_ path: String) throws(StorageError)
    func fileExists(_ path: String) -> Bool
    /// Opens (and with `create`, creates) a file for reading and writing at explicit offsets.
    func open(_ path: String, create: Bool, writable: Bool) throws(StorageError) -> any FileHandle
    func rename(_ from: String, to: String) throws(StorageError)
    func remove(_ path: String) throws(StorageError)
    /// Makes a directory's entries (created, renamed files) durable.
    func syncDirectory(_ path: String) throws(StorageError)
    /// Takes an exclusive advisory lock on `path` held until the handle is closed.
    /// - Returns: nil when another holder has it.
    func lock(_ path: String) throws(StorageError) -> (any FileHandle)?
    /// Bytes an unprivileged writer may still add on the file system holding `path`; nil when
    /// unknown.
    func availableBytes(_ path: String) -> UInt64?
}

extension FileSystem {
    public func availableBytes(_ path: String) -> UInt64? { nil }
}

public protocol FileHandle: AnyObject {
    var path: String { get }
    func size() throws(StorageError) -> UInt64
    /// Reads up to `buffer.count` bytes at `offset`; fewer only at end of file.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int
    /// Writes all of `bytes` at `offset` or throws (a partial write may have reached the file).
    func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(StorageError)
    func truncate(to size: UInt64) throws(StorageError)
    func sync() throws(StorageError)
    /// Starts writing back `count` bytes at `offset` without waiting and without a cache flush
    /// (sync_file_range); durability still needs `sync()`. A no-op where there is no such call.
    func startWriteback(at offset: UInt64, count: Int)
    func close()
}

extension FileHandle {
    public func startWriteback(at offset: UInt64, count: Int) {}

    public func read(at offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let result = out.withUnsafeMutableBytes { buffer in
            Result { () throws(StorageError) in try read(at: offset, into: buffer) }
        }
        let n = try result.get()
        if n < count { out.removeLast(count - n) }
        return out
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws(StorageError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(StorageError) in try write(at: offset, raw) } }
        try result.get()
    }
}

public func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
