import CThreads
import Glibc

/// The real file system (POSIX pread/pwrite/fsync).
public final class PosixFileSystem: FileSystem, @unchecked Sendable {
    public init() {}

    public func listDirectory(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw .io(operation: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names = [String]()
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func createDirectory(_ path: String) throws(StorageError) {
        var isDirectory = stat()
        if stat(path, &isDirectory) == 0 {
            if (isDirectory.st_mode & S_IFMT) == S_IFDIR { return }
            throw .invalidArgument("\(path) exists and is not a directory")
        }
        // Create parents as `mkdir -p` would.
        let parent = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !parent.isEmpty && parent != path && !fileExists(parent) { try createDirectory(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw .io(operation: "mkdir", path: path, errno: errno) }
    }

    public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public func open(_ path: String, create: Bool, writable: Bool) throws(StorageError) -> any FileHandle {
        var flags = writable ? O_RDWR : O_RDONLY
        if create { flags |= O_CREAT }
        flags |= O_CLOEXEC
        let fd = Glibc.open(path, flags, 0o644)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        return PosixFileHandle(fd: fd, path: path)
    }

    public func rename(_ from: String, to: String) throws(StorageError) {
        guard Glibc.rename(from, to) == 0 else { throw .io(operation: "rename to \(to)", path: from, errno: errno) }
    }

    public func remove(_ path: String) throws(StorageError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw .io(operation: "unlink", path: path, errno: errno) }
    }

    public func availableBytes(_ path: String) -> UInt64? {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return nil }
        return UInt64(st.f_bavail) &* UInt64(st.f_frsize)
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(operation: "open directory", path: path, errno: errno) }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw .io(operation: "fsync directory", path: path, errno: errno) }
    }

    public func lock(_ path: String) throws(StorageError) -> (any FileHandle)? {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            Glibc.close(fd)
            if code == EWOULDBLOCK { return nil }
            throw .io(operation: "flock", path: path, errno: code)
        }
        return PosixFileHandle(fd: fd, path: path)
    }
}

final class PosixFileHandle: FileHandle {
    let fd: Int32
    let path: String
    private var closed = false

    init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { close() }

    func size() throws(StorageError) -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(operation: "fstat", path: path, errno: errno) }
        return UInt64(st.st_size)
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws(StorageError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwrite", path: path, errno: errno)
            }
            done += n
        }
    }

    func truncate(to size: UInt64) throws(StorageError) {
        guard ftruncate(fd, off_t(size)) == 0 else { throw .io(operation: "ftruncate", path: path, errno: errno) }
    }

    func sync() throws(StorageError) {
        // fdatasync: the size change of an append is metadata fdatasync does flush.
        guard fdatasync(fd) == 0 else { throw .io(operation: "fdatasync", path: path, errno: errno) }
    }

    func startWriteback(at offset: UInt64, count: Int) {
        _ = tl_start_writeback(fd, Int64(offset), Int64(count))
    }

    func close() {
        if !closed { Glibc.close(fd); closed = true }
    }
}
