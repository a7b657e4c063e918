// The one file that calls the BSD socket API. Every return code is checked; failures become
// `SocketError` naming the call and errno. Blocking sockets, one thread per direction.
import CThreads
import Glibc

public struct SocketError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }

    static func errno(_ call: String, _ code: Int32 = Glibc.errno) -> SocketError {
        SocketError(message: "\(call): \(String(cString: strerror(code)))")
    }
}

public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) { self.host = host; self.port = port }

    /// `HOST:PORT` (IPv4 dotted quad or `localhost`).
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        let host = String(text[..<colon])
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }

    func address() throws(SocketError) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        let name = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, name, &addr.sin_addr) == 1 else {
            throw SocketError(message: "\(host) is not an IPv4 address")
        }
        return addr
    }
}

public final class Socket: @unchecked Sendable {
    public let fd: Int32

    init(fd: Int32) { self.fd = fd }
    deinit { close() }

    private var closed = false
    private let closeLock = Mutex()

    public func close() {
        closeLock.locked {
            if !closed { closed = true; _ = Glibc.close(fd) }
        }
    }

    /// Stops reads (they return 0) without closing, so a thread blocked in `read` wakes up.
    public func shutdownRead() { _ = Glibc.shutdown(fd, Int32(SHUT_RD)) }
    public func shutdownBoth() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    public func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public static func listen(_ endpoint: Endpoint, backlog: Int32 = 128) throws(SocketError) -> Socket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .errno("socket") }
        let s = Socket(fd: fd)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = try endpoint.address()
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw .errno("bind \(endpoint)") }
        guard Glibc.listen(fd, backlog) == 0 else { throw .errno("listen \(endpoint)") }
        return s
    }

    public static func connect(_ endpoint: Endpoint) throws(SocketError) -> Socket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .errno("socket") }
        let s = Socket(fd: fd)
        var addr = try endpoint.address()
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { throw .errno("connect \(endpoint)") }
        s.setNoDelay()
        return s
    }

    /// The port the socket is bound to (for `--listen 127.0.0.1:0`).
    public var localPort: UInt16 {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    /// Waits up to `timeoutMs` for a connection; nil on timeout.
    public func accept(timeoutMs: Int32) throws(SocketError) -> (Socket, String)? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&p, 1, timeoutMs)
        if n == 0 || (n < 0 && Glibc.errno == EINTR) { return nil }
        guard n > 0 else { throw .errno("poll") }
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let c = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(fd, $0, &len) } }
        if c < 0 {
            let e = Glibc.errno
            if e == EINTR || e == EAGAIN || e == ECONNABORTED { return nil }
            throw .errno("accept", e)
        }
        let s = Socket(fd: c)
        s.setNoDelay()
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &addr.sin_addr, &text, socklen_t(INET_ADDRSTRLEN))
        let peer = String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) + ":\(UInt16(bigEndian: addr.sin_port))"
        return (s, peer)
    }

    /// The kernel's receive buffer size: an upper bound on the bytes queued for this socket.
    public var receiveBufferBytes: Int {
        var size: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &len) == 0 else { return 1 << 20 }
        return Int(size)
    }

    func setNoDelay() {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// - Parameter queuedOnly: take only what has already arrived (0 when nothing has): a
    ///   stopping server finishes what clients sent before the stop, not what they send after.
    /// - Returns: bytes read, 0 at end of stream.
    public func read(into buffer: UnsafeMutableRawBufferPointer, queuedOnly: Bool = false) throws(SocketError) -> Int {
        while true {
            let n = queuedOnly ? recv(fd, buffer.baseAddress!, buffer.count, Int32(MSG_DONTWAIT)) : Glibc.read(fd, buffer.baseAddress!, buffer.count)
            if n < 0 && queuedOnly && (Glibc.errno == EAGAIN || Glibc.errno == EWOULDBLOCK) { return 0 }
            if n >= 0 { return n }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == ECONNRESET { return 0 }
            throw .errno("read")
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SocketError) {
        var done = 0
        while done < bytes.count {
            let n = send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw .errno("write")
            }
            done += n
        }
    }

    /// Sends what the socket takes now without blocking.
    /// - Returns: the bytes sent (possibly fewer than given), or -1 when the connection failed.
    public func sendAvailable(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = send(fd, b.baseAddress! + done, b.count - done, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if n > 0 { done += n; continue }
                if n < 0 && Glibc.errno == EINTR { continue }
                if n < 0 && (Glibc.errno == EAGAIN || Glibc.errno == EWOULDBLOCK) { return done }
                return -1
            }
            return done
        }
    }

    public func write(_ bytes: [UInt8]) throws(SocketError) {
        let r = bytes.withUnsafeBytes { b in Result { () throws(SocketError) in try write(b) } }
        try r.get()
    }
}

/// A pthread mutex (heap-allocated: a pthread object must not move).
public final class Mutex: @unchecked Sendable {
    fileprivate let raw: UnsafeMutablePointer<pthread_mutex_t>
    /// - Parameter priorityInheritance: PTHREAD_PRIO_INHERIT, for a mutex the real-time
    ///   committer shares with threads of lower priority (connection readers, the projector in
    ///   SCHED_IDLE): a holder preempted inside it runs at the waiter's priority until it lets
    ///   go, instead of the committer waiting for a core to free up. Uncontended, it is the same
    ///   atomic operation as a plain mutex.
    public init(priorityInheritance: Bool = false) {
        raw = .allocate(capacity: 1)
        raw.initialize(to: pthread_mutex_t())
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        if priorityInheritance { pthread_mutexattr_setprotocol(&attr, Int32(PTHREAD_PRIO_INHERIT)) }
        pthread_mutex_init(raw, &attr)
        pthread_mutexattr_destroy(&attr)
    }
    deinit { pthread_mutex_destroy(raw); raw.deallocate() }
    public func lock() { pthread_mutex_lock(raw) }
    public func unlock() { pthread_mutex_unlock(raw) }
    @discardableResult
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock(); defer { unlock() }
        return try body()
    }
}

/// A condition variable bound to one `Mutex`.
public final class Condition: @unchecked Sendable {
    public let mutex: Mutex
    private let c: UnsafeMutablePointer<pthread_cond_t>
    public init(priorityInheritance: Bool = false) {
        mutex = Mutex(priorityInheritance: priorityInheritance)
        c = .allocate(capacity: 1)
        c.initialize(to: pthread_cond_t())
        pthread_cond_init(c, nil)
    }
    deinit { pthread_cond_destroy(c); c.deallocate() }
    /// Call with `mutex` held.
    public func wait() { pthread_cond_wait(c, mutex.raw) }
    /// Call with `mutex` held. - Returns: false on timeout.
    @discardableResult
    public func wait(timeoutMs: Int) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ns = Int(ts.tv_nsec) + (timeoutMs % 1000) * 1_000_000
        ts.tv_sec += timeoutMs / 1000 + ns / 1_000_000_000
        ts.tv_nsec = ns % 1_000_000_000
        return pthread_cond_timedwait(c, mutex.raw, &ts) == 0
    }
    public func signal() { pthread_cond_signal(c) }
    public func broadcast() { pthread_cond_broadcast(c) }
}

/// Starts a detached thread with a large enough stack.
/// Starts a detached thread named `name` (at most 15 bytes: what `top -H`, `ps -L` and perf
/// show, so an operator can tell the committer from a connection's reader).
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(_ n: String, _ b: @escaping @Sendable () -> Void) { name = n; body = b }
    }
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, 1 << 20)
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(String(name.utf8.prefix(15))!, body)).toOpaque()
    let r = pthread_create(&thread, &attr, { arg in
        let b = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue() as! Box
        _ = tl_thread_set_name(b.name)
        b.body()
        return nil
    }, box)
    pthread_attr_destroy(&attr)
    precondition(r == 0, "pthread_create failed: \(r)")
}

/// Asks for short scheduler slices for the calling thread (see `tl_thread_request_slice`):
/// for threads on the acknowledgement path, which run briefly after each wake-up and should
/// not wait behind a connection thread parsing a large batch. A no-op where unsupported.
public func requestShortSlices(microseconds: UInt64 = 100) {
    _ = tl_thread_request_slice(microseconds * 1000)
}

/// Asks for slices of this length for the calling thread (0: the scheduler's default). A no-op
/// where unsupported.
public func requestSlice(microseconds: UInt64) {
    _ = tl_thread_request_slice(microseconds * 1000)
}

/// Puts the calling thread at the lowest real-time priority (SCHED_FIFO 1).
/// - Returns: nil, or why not (needs CAP_SYS_NICE, or RLIMIT_RTPRIO >= 1: systemd LimitRTPRIO=1).
public func requestRealtimePriority() -> String? {
    let r = tl_thread_set_realtime(1)
    return r == 0 ? nil : String(cString: strerror(r))
}
