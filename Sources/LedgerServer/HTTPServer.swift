// A small HTTP/1.1 server on libmicrohttpd (ARCHITECTURE.md "C libraries"): the parser,
// keep-alive, pipelining, chunked uploads, timeouts and header limits are the library's; this
// file turns its callbacks into one Swift handler `(HTTPRequest) -> HTTPResponse`.
//
// Threading: MHD runs a pool of `threads` threads, each with its own epoll set over the shared
// listening socket; a request's handler runs on the thread that read it, to completion, so a
// handler may block briefly (a lock, a file read). The handler gets no C type.
//
// The C callbacks find this object through their `cls` pointer (unretained: `stop()` runs
// before the object can go away) and a request body in progress through `con_cls` (a retained
// `BodyState`, released by the request-completed callback, which MHD calls for every request
// that got one).
import CMicroHTTPD
import Glibc
import LedgerProjection

public struct HTTPRequest {
    public var method: String
    /// The path, percent-decoded by MHD, without the query string.
    public var path: String
    /// Query parameters in order, duplicates kept, percent-decoded (`+` stays `+`); nil value
    /// for a bare `?name`.
    public var query: [(name: String, value: String?)]
    public var body: [UInt8]
    fileprivate let connection: OpaquePointer?

    /// A request header (case-insensitive name); the first one when repeated.
    public func header(_ name: String) -> String? {
        guard let connection, let v = MHD_lookup_connection_value(connection, .HEADER_KIND, name) else { return nil }
        return String(cString: v)
    }

    /// For tests of the routing without a connection.
    public init(method: String, path: String, query: [(name: String, value: String?)] = [], body: [UInt8] = []) {
        self.method = method; self.path = path; self.query = query; self.body = body; self.connection = nil
    }

    fileprivate init(method: String, path: String, query: [(name: String, value: String?)], body: [UInt8], connection: OpaquePointer?) {
        self.method = method; self.path = path; self.query = query; self.body = body; self.connection = connection
    }
}

public struct HTTPResponse {
    public var status: Int
    public var contentType: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, contentType: String = "application/json", headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status; self.contentType = contentType; self.headers = headers; self.body = body
    }

    public init(status: Int, json: String, headers: [(String, String)] = []) {
        self.init(status: status, headers: headers, body: Array(json.utf8))
    }

    /// `{"error": message}`: every error this API answers has this shape.
    public static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> HTTPResponse {
        var w = JSONObjectWriter()
        w.string("error", message)
        return HTTPResponse(status: status, json: w.finish() + "\n", headers: headers)
    }
}

public struct HTTPServerOptions: Sendable {
    /// Handler threads (MHD's pool): the cores, from 2 (handlers block on locks and files) to
    /// 4 (the committer, the projector and the TCP readers need cores too).
    public var threads = min(4, max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    public var connectionsMax = 256
    /// Idle seconds before MHD closes a connection (also bounds a slow upload).
    public var timeoutSeconds = 30
    /// Per connection: the request line and headers must fit (MHD answers 414 or 431 when
    /// they do not), and MHD's read/write buffers live here.
    public var connectionMemoryBytes = 64 << 10
    /// Largest request body taken; a larger one is answered 413 without being kept.
    public var bodyBytesMax = 64 << 10
    public init() {}
}

public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

public final class HTTPServer: @unchecked Sendable {
    public typealias Handler = (HTTPRequest) -> HTTPResponse
    let handler: Handler
    let options: HTTPServerOptions
    private var daemon: OpaquePointer?
    public private(set) var port: UInt16 = 0

    public init(options: HTTPServerOptions = HTTPServerOptions(), handler: @escaping Handler) {
        self.options = options
        self.handler = handler
    }

    deinit { stop() }

    /// Binds `endpoint` (port 0: a free one) and starts serving on MHD's threads.
    public func start(_ endpoint: Endpoint) throws(HTTPServerError) {
        let socket: Socket
        do { socket = try Socket.listen(endpoint, backlog: 512) } catch { throw HTTPServerError(description: "http: \(error)") }
        port = socket.localPort
        // The daemon owns the descriptor from here on and closes it when stopped; the Socket
        // object keeps (and closes) its own.
        let fd = dup(socket.fd)
        socket.close()
        guard fd >= 0 else { throw HTTPServerError(description: "http: dup: \(String(cString: strerror(errno)))") }
        let flags = UInt32(MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue)
        let me = Unmanaged.passUnretained(self).toOpaque()
        daemon = tl_mhd_start(flags, fd, UInt32(options.threads), UInt32(options.connectionsMax), UInt32(options.timeoutSeconds),
                              options.connectionMemoryBytes, httpAccessHandler, me, httpRequestCompleted, me)
        guard daemon != nil else {
            close(fd)
            throw HTTPServerError(description: "http: libmicrohttpd would not start on \(endpoint.host):\(port)")
        }
    }

    /// Stops accepting, waits for handlers running now, closes every connection.
    public func stop() {
        if let d = daemon {
            daemon = nil
            MHD_stop_daemon(d)
        }
    }

    fileprivate func respond(_ connection: OpaquePointer, _ r: HTTPResponse) -> MHD_Result {
        let response = r.body.withUnsafeBytes { b in
            MHD_create_response_from_buffer(b.count, UnsafeMutableRawPointer(mutating: b.baseAddress), .RESPMEM_MUST_COPY)
        }
        guard let response else { return .NO }
        defer { MHD_destroy_response(response) }
        _ = MHD_add_response_header(response, "Content-Type", r.contentType)
        for (name, value) in r.headers { _ = MHD_add_response_header(response, name, value) }
        return MHD_queue_response(connection, UInt32(r.status), response)
    }

    fileprivate func tooLarge(_ connection: OpaquePointer, _ bytes: String) -> MHD_Result {
        respond(connection, .error(413, "request body of \(bytes) bytes is over the \(options.bodyBytesMax)-byte limit"))
    }
}

/// `con_cls` of a request without a body, between MHD's first call (headers) and the next one
/// (request complete): not an object, never released.
nonisolated(unsafe) private let noBodyMarker = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)

/// A request body arriving in pieces.
private final class BodyState {
    var bytes = [UInt8]()
    /// Bytes past the limit, read and dropped (so the client gets the 413, not a reset).
    var dropped = 0
}

private func queryParameters(_ connection: OpaquePointer) -> [(name: String, value: String?)] {
    var out = [(name: String, value: String?)]()
    withUnsafeMutablePointer(to: &out) { p in
        _ = MHD_get_connection_values_n(connection, .GET_ARGUMENT_KIND, { cls, _, key, keySize, value, valueSize in
            let list = cls!.assumingMemoryBound(to: [(name: String, value: String?)].self)
            let k = key.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: keySize), as: UTF8.self) } ?? ""
            let v = value.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: valueSize), as: UTF8.self) }
            list.pointee.append((k, v))
            return .YES
        }, p)
    }
    return out
}

private let httpAccessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadSize, conCls in
    guard let cls, let connection, let url, let method, let uploadSize, let conCls else { return .NO }
    let server = Unmanaged<HTTPServer>.fromOpaque(cls).takeUnretainedValue()
    let methodName = String(cString: method)
    if conCls.pointee == nil {
        // Headers only so far. A body announced over the limit is refused before it is read
        // (and before curl's "Expect: 100-continue" is answered).
        if let cl = MHD_lookup_connection_value(connection, .HEADER_KIND, "Content-Length"),
           let n = UInt64(String(cString: cl)), n > UInt64(server.options.bodyBytesMax) {
            return server.tooLarge(connection, String(n))
        }
        // Answer on the next call, never this one, even with no body: a response queued while MHD
        // is still in its headers-processed state is an "early" one, after which MHD stops
        // reading the connection and closes it (`Connection: close`), so every GET cost a new
        // TCP connection. With no body announced, MHD makes that next call at once, in the same
        // pass, and no per-request state is allocated (a shared marker stands for "no body").
        let cl = MHD_lookup_connection_value(connection, .HEADER_KIND, "Content-Length")
        let chunked = MHD_lookup_connection_value(connection, .HEADER_KIND, "Transfer-Encoding") != nil
        if !chunked && (cl.map { strcmp($0, "0") == 0 } ?? true) {
            conCls.pointee = noBodyMarker
            return .YES
        }
        let state = BodyState()
        conCls.pointee = Unmanaged.passRetained(state).toOpaque()
        return .YES
    }
    if conCls.pointee == noBodyMarker {
        // A body where none was announced cannot reach here: MHD frames the request by its headers.
        uploadSize.pointee = 0
        conCls.pointee = nil
        let request = HTTPRequest(method: methodName, path: String(cString: url), query: queryParameters(connection),
                                  body: [], connection: connection)
        return server.respond(connection, server.handler(request))
    }
    let state = Unmanaged<BodyState>.fromOpaque(conCls.pointee!).takeUnretainedValue()
    if uploadSize.pointee > 0 {
        let n = uploadSize.pointee
        if state.dropped == 0 && state.bytes.count + n <= server.options.bodyBytesMax, let uploadData {
            state.bytes.append(contentsOf: UnsafeRawBufferPointer(start: uploadData, count: n))
        } else {
            // A chunked body that grew past the limit: read on (MHD cannot answer mid-upload),
            // keep nothing, and give up on a client that keeps sending far past it.
            state.dropped += n
            if state.dropped > 16 << 20 { return .NO }
        }
        uploadSize.pointee = 0
        return .YES
    }
    if state.dropped > 0 { return server.tooLarge(connection, "more than \(server.options.bodyBytesMax)") }
    let request = HTTPRequest(method: methodName, path: String(cString: url), query: queryParameters(connection),
                              body: state.bytes, connection: connection)
    state.bytes = []
    return server.respond(connection, server.handler(request))
}

private let httpRequestCompleted: MHD_RequestCompletedCallback = { _, _, conCls, _ in
    guard let conCls, let state = conCls.pointee, state != noBodyMarker else {
        conCls?.pointee = nil
        return
    }
    Unmanaged<BodyState>.fromOpaque(state).release()
    conCls.pointee = nil
}
