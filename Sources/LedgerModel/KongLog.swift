// Adapter for Kong Gateway's log serializer (PRODUCT.md "Event model", last paragraph; issue 4
// "Line mode"): the `tcp-log`, `udp-log`, `http-log` and `file-log` plugins all write the table
// returned by `kong.log.serialize()`, JSON-encoded by lua-cjson, one object per line. Line mode
// recognises such an object with `KongLog.looksLikeKong` and maps it to a v1 `Event` here.
//
// The JSON is parsed by a small strict parser of its own (nested objects and arrays are allowed,
// unlike the v1 decoder), into a flat array of nodes that point back into the line; a String is
// built only for the few values the mapping keeps.

/// Maps one Kong log-serializer object (tcp-log/udp-log/http-log/file-log) to a v1 `Event`.
///
/// # Input
/// - One JSON object per line (RFC 8259), valid UTF-8 (checked before parsing; the first bad byte
///   is reported with its offset), at most `limits.lineBytesMax` (64 KiB) bytes, objects and
///   arrays nested at most `KongLog.depthMax` (16) deep counting the outer object as 1. One
///   trailing `"\r"` is ignored; anything after the closing `}` is an error. Strings may not hold
///   raw control characters or lone `\u` surrogates. A key the adapter reads may appear only once
///   in its object (a repeated one is an error, so a crafted line cannot say two things); other
///   keys are not checked. JSON `null` counts as absent (cjson writes `ngx.null` as `null`).
/// - Every field not listed below is dropped: this is a foreign format, and Kong's objects carry
///   much that the ledger does not model (headers, latencies, tries, workspace, the full route and
///   service entities). `request.headers.authorization` and `proxy-authorization` (Kong writes
///   `"REDACTED"` there by default) are never read, so they cannot reach the ledger.
///
/// # Mapping
/// | v1 field | taken from |
/// |---|---|
/// | `token` | custom field `Options.tokenField` (default `token_id`) at the top level, else in the object `custom` (`Options.customObject`). A `Bearer ` prefix is cut off; `""` and `"REDACTED"` count as absent; a JWT-looking value or one over 128 bytes becomes `sha256:<hex>` (`TokenFingerprint.normalize`) |
/// | `type`, `reason` | from `response.status`, see below |
/// | `ts` | `started_at` (epoch ms; a fractional part, as older Kong versions could write, is truncated; an exponent is rejected) |
/// | `status` | `response.status` (required integer, 100-599) |
/// | `method` | `request.method` |
/// | `route` | `request.uri` up to the first `?` (the query string may carry secrets and is dropped) |
/// | `client_ip` | `client_ip` |
/// | `request_id` | `request.id` (Kong 3.5+), else the header `x-kong-request-id` in `response.headers`, else `x-kong-request-id` or `kong-request-id` (the correlation-id plugin's default header) in `request.headers`; an array-valued header gives its first value |
/// | `sub` | custom field `sub`, else `consumer.username`, else `consumer.id`, else `authenticated_entity.consumer_id` |
/// | `client_id` | custom field `client_id`, else `consumer.custom_id`, else `authenticated_entity.id` (the id of the credential Kong authenticated: key-auth key, OAuth2 application, JWT secret, ...) |
/// | `gateway` | custom field `gateway` (the serializer carries no node name; set it with `kong.node.get_hostname()`), else absent |
/// | `release`, `track` | custom fields `release`, `track` |
/// | `attrs.kong_route`, `attrs.kong_service` | `route.name`, `service.name` |
///
/// "Custom field X" means a top-level string X, else X inside the `custom` object; a top-level
/// value wins. Kong adds them with the plugin's `custom_fields_by_lua` (`token_id = "return
/// kong.request.get_header('x-token-id')"`; a dotted name such as `custom.token_id` lands in the
/// `custom` object) or with `kong.log.set_serialize_value` from a pre-function plugin.
///
/// # Event type
/// | `response.status` | token present | becomes |
/// |---|---|---|
/// | 401 | yes | `rejected`, reason = custom field `reason`, else `invalid` |
/// | 403 | yes, and the request was authenticated | `rejected`, reason = custom field `reason`, else `insufficient_scope` |
/// | 403 | yes, not authenticated | not a token event (error): a plugin refused the request before authentication |
/// | 100-399 | yes | `validated` (Kong let the request through with this token) |
/// | any other 4xx/5xx | yes, and the request was authenticated (`authenticated_entity` or `consumer` present) | `validated`: authentication ran before the failure (a 404/429/5xx from the upstream or a later plugin), so Kong accepted the token |
/// | any other 4xx/5xx | yes, not authenticated | not a token event (error): the request failed before or without authentication (unrouted 404, 400, a 5xx before auth), so it says nothing about the token |
/// | any | no | not a token event (error) |
///
/// "Not a token event" errors have a reason starting with `KongLog.notATokenEvent`, so line mode
/// can count them apart from malformed lines. The custom `reason` is ignored on `validated`.
///
/// # Limits
/// Mapped strings are limited to `limits.fieldBytesMax` bytes and the attrs values to
/// `limits.attrValueBytesMax`; a longer value is an error naming the field (no silent truncation).
public enum KongLog {
    public struct Options: Sendable {
        /// Name of the custom field holding the token id (top level, else inside `customObject`).
        public var tokenField: String
        /// Name of the object that may hold the custom fields (`custom_fields_by_lua` with dotted
        /// names, `custom.token_id`, builds it).
        public var customObject: String
        public var limits: EventLimits

        public init(tokenField: String = "token_id", customObject: String = "custom", limits: EventLimits = .default) {
            self.tokenField = tokenField
            self.customObject = customObject
            self.limits = limits
        }

        public static let `default` = Options()
    }

    /// Deepest nesting of objects and arrays accepted; the outer object is depth 1.
    public static let depthMax = 16

    /// Start of the reason of an error for a well-formed Kong object that describes no token event.
    public static let notATokenEvent = "not a token event"

    /// Cheap shape test, run on every line in line mode: a JSON object whose top-level keys include
    /// `request` and `response` (objects) and `started_at` (a number), and not `type`, which every
    /// v1 event has (so a Kong custom field named `type` makes the line a v1 event, which then
    /// fails to decode: name custom fields otherwise). Reads top-level keys only (nested values are skipped by bracket counting) and
    /// returns at once when the first key is `type`, as the v1 encoder writes it. It validates
    /// nothing: a line it accepts may still fail `event(from:)`.
    public static func looksLikeKong(_ line: UnsafeRawBufferPointer) -> Bool {
        guard let base = line.baseAddress else { return false }
        return KongShape.matches(base.assumingMemoryBound(to: UInt8.self), line.count)
    }

    public static func looksLikeKong(_ line: String) -> Bool {
        var copy = line
        return copy.withUTF8 { looksLikeKong(UnsafeRawBufferPointer($0)) }
    }

    /// - Parameters:
    ///   - line: one line without its `"\n"`; a trailing `"\r"` is tolerated.
    ///   - lineNumber: 1-based, used only in errors.
    public static func event(from line: UnsafeRawBufferPointer, lineNumber: Int, options: Options = .default) throws(EventDecodeError) -> Event {
        guard let base = line.baseAddress, line.count > 0 else {
            throw EventDecodeError(line: lineNumber, byteOffset: 0, reason: "empty line (expected a JSON object)")
        }
        let p = base.assumingMemoryBound(to: UInt8.self)
        var n = line.count
        if p[n - 1] == 0x0D { n -= 1 }
        guard n > 0 else { throw EventDecodeError(line: lineNumber, byteOffset: 0, reason: "empty line (expected a JSON object)") }
        guard n <= options.limits.lineBytesMax else {
            throw EventDecodeError(line: lineNumber, byteOffset: options.limits.lineBytesMax,
                                   reason: "line is \(n) bytes, over the limit of \(options.limits.lineBytesMax)")
        }
        if let problem = EventUTF8Validation.firstProblem(p, n) {
            throw EventDecodeError(line: lineNumber, byteOffset: problem.offset, reason: "invalid UTF-8 (\(problem.reason))")
        }
        var parser = KongJSONParser(p: p, n: n, line: lineNumber)
        try parser.parseDocument()
        let mapper = KongMapper(doc: KongJSONDocument(p: p, nodes: parser.nodes, line: lineNumber), options: options)
        return try mapper.map()
    }

    public static func event(from line: String, lineNumber: Int = 1, options: Options = .default) throws(EventDecodeError) -> Event {
        var copy = line
        let result = copy.withUTF8 { utf8 in
            Result { () throws(EventDecodeError) -> Event in
                try event(from: UnsafeRawBufferPointer(utf8), lineNumber: lineNumber, options: options)
            }
        }
        return try result.get()
    }
}

// MARK: - Mapping

struct KongMapper {
    let doc: KongJSONDocument
    let options: KongLog.Options
    var limits: EventLimits { options.limits }
    var line: Int { doc.line }

    func map() throws(EventDecodeError) -> Event {
        let root = 0
        guard let request = try object(doc.member(root, "request", path: "request"), "request") else {
            throw EventDecodeError(line: line, field: "request", reason: "missing (required in a Kong log object)")
        }
        guard let response = try object(doc.member(root, "response", path: "response"), "response") else {
            throw EventDecodeError(line: line, field: "response", reason: "missing (required in a Kong log object)")
        }
        guard let statusNode = try present(doc.member(response, "status", path: "response.status")) else {
            throw EventDecodeError(line: line, field: "response.status", reason: "missing (required)")
        }
        let status64 = try integer(statusNode, "response.status", allowFraction: false)
        guard (100...599).contains(status64) else {
            throw fieldError("response.status", "HTTP status \(status64) out of range 100-599", at: statusNode)
        }
        let status = Int(status64)
        guard let startedNode = try present(doc.member(root, "started_at", path: "started_at")) else {
            throw EventDecodeError(line: line, field: "started_at", reason: "missing (required)")
        }
        let ts = try integer(startedNode, "started_at", allowFraction: true)

        let custom = try object(doc.member(root, options.customObject, path: options.customObject), options.customObject)
        let consumer = try object(doc.member(root, "consumer", path: "consumer"), "consumer")
        let entity = try object(doc.member(root, "authenticated_entity", path: "authenticated_entity"), "authenticated_entity")

        // The token first: without it nothing else matters.
        guard let token = try tokenValue(custom: custom) else {
            throw EventDecodeError(line: line, field: options.tokenField,
                                   reason: "\(KongLog.notATokenEvent): no token id (custom field \(EventMessageText.quoted(options.tokenField)) absent at the top level and in \(EventMessageText.quoted(options.customObject)))")
        }

        var event = Event(type: .validated, ts: ts, token: token)
        switch status {
        case 403 where consumer == nil && entity == nil:
            // A 403 before authentication (bot detection, IP restriction) is not about the token.
            throw fieldError("response.status", "\(KongLog.notATokenEvent): status 403 on a request Kong did not authenticate says nothing about the token", at: statusNode)
        case 401, 403:
            event.type = .rejected
            event.reason = try customString("reason", custom: custom) ?? (status == 401 ? "invalid" : "insufficient_scope")
        case ..<400:
            event.type = .validated
        default:
            guard consumer != nil || entity != nil else {
                throw fieldError("response.status", "\(KongLog.notATokenEvent): status \(status) on a request Kong did not authenticate says nothing about the token", at: statusNode)
            }
            event.type = .validated
        }
        event.status = status

        event.method = try string(doc.member(request, "method", path: "request.method"), "request.method")
        if var uri = try string(doc.member(request, "uri", path: "request.uri"), "request.uri") {
            if let q = uri.utf8.firstIndex(of: UInt8(ascii: "?")) { uri = String(uri[..<q]) }
            event.route = uri.isEmpty ? nil : uri
        }
        event.clientIP = try string(doc.member(root, "client_ip", path: "client_ip"), "client_ip")
        event.requestID = try requestID(request: request, response: response)

        event.sub = try customString("sub", custom: custom)
        if event.sub == nil, let consumer {
            event.sub = try string(doc.member(consumer, "username", path: "consumer.username"), "consumer.username")
        }
        if event.sub == nil, let consumer {
            event.sub = try string(doc.member(consumer, "id", path: "consumer.id"), "consumer.id")
        }
        if event.sub == nil, let entity {
            event.sub = try string(doc.member(entity, "consumer_id", path: "authenticated_entity.consumer_id"), "authenticated_entity.consumer_id")
        }
        event.clientID = try customString("client_id", custom: custom)
        if event.clientID == nil, let consumer {
            event.clientID = try string(doc.member(consumer, "custom_id", path: "consumer.custom_id"), "consumer.custom_id")
        }
        if event.clientID == nil, let entity {
            event.clientID = try string(doc.member(entity, "id", path: "authenticated_entity.id"), "authenticated_entity.id")
        }

        event.gateway = try customString("gateway", custom: custom)
        event.release = try customString("release", custom: custom)
        event.track = try customString("track", custom: custom)

        if let route = try object(doc.member(root, "route", path: "route"), "route"),
           let name = try string(doc.member(route, "name", path: "route.name"), "route.name", max: limits.attrValueBytesMax) {
            event.attrs["kong_route"] = name
        }
        if let service = try object(doc.member(root, "service", path: "service"), "service"),
           let name = try string(doc.member(service, "name", path: "service.name"), "service.name", max: limits.attrValueBytesMax) {
            event.attrs["kong_service"] = name
        }
        return event
    }

    /// The token id, normalised; nil when absent, empty or Kong's redaction placeholder.
    func tokenValue(custom: Int?) throws(EventDecodeError) -> String? {
        let name = options.tokenField
        let path: String
        var node = try present(doc.member(0, name, path: name))
        if node != nil {
            path = name
        } else if let custom {
            path = options.customObject + "." + name
            node = try present(doc.member(custom, name, path: path))
        } else {
            path = name
        }
        guard let node else { return nil }
        guard doc.nodes[node].kind == .string else {
            // Never quote a token value, not even a mistyped one.
            throw fieldError(path, "expected a string (the token id), got \(kindName(node))", at: node)
        }
        var bytes = doc.stringBytes(node)
        // `Bearer <token>` when the field was filled from the Authorization header itself.
        if bytes.count >= 7, bytes.prefix(6).map({ $0 | 0x20 }) == Array("bearer".utf8), bytes[6] == 0x20 {
            bytes.removeFirst(7)
            while bytes.first == 0x20 { bytes.removeFirst() }
        }
        if bytes.isEmpty || bytes == Array("REDACTED".utf8) { return nil }
        let normalized = bytes.withUnsafeBytes { raw in
            TokenFingerprint.needsFingerprint(raw, tokenBytesMax: limits.tokenBytesMax)
                ? TokenFingerprint.fingerprint(raw) : String(decoding: raw, as: UTF8.self)
        }
        return normalized
    }

    func requestID(request: Int, response: Int) throws(EventDecodeError) -> String? {
        if let id = try string(doc.member(request, "id", path: "request.id"), "request.id") { return id }
        if let headers = try object(doc.member(response, "headers", path: "response.headers"), "response.headers"),
           let id = try header(headers, "x-kong-request-id", path: "response.headers") { return id }
        if let headers = try object(doc.member(request, "headers", path: "request.headers"), "request.headers") {
            if let id = try header(headers, "x-kong-request-id", path: "request.headers") { return id }
            if let id = try header(headers, "kong-request-id", path: "request.headers") { return id }
        }
        return nil
    }

    /// A header value: Kong writes a repeated header as an array of its values; the first is taken.
    func header(_ headers: Int, _ name: String, path: String) throws(EventDecodeError) -> String? {
        let fieldPath = path + "." + name
        guard let node = try present(doc.member(headers, name, path: fieldPath)) else { return nil }
        if doc.nodes[node].kind == .array {
            let first = node + 1
            guard first < doc.nodes[node].next else { return nil }
            return try string(first, fieldPath)
        }
        return try string(node, fieldPath)
    }

    /// A custom field: top level first, then inside the custom object.
    func customString(_ name: String, custom: Int?) throws(EventDecodeError) -> String? {
        if let value = try string(doc.member(0, name, path: name), name) { return value }
        guard let custom else { return nil }
        let path = options.customObject + "." + name
        return try string(doc.member(custom, name, path: path), path)
    }

    // MARK: Typed access

    /// nil for an absent member or JSON null.
    func present(_ node: Int?) throws(EventDecodeError) -> Int? {
        guard let node, doc.nodes[node].kind != .null else { return nil }
        return node
    }

    func object(_ node: Int?, _ path: String) throws(EventDecodeError) -> Int? {
        guard let node = try present(node) else { return nil }
        guard doc.nodes[node].kind == .object else {
            throw fieldError(path, "expected an object, got \(describe(node))", at: node)
        }
        return node
    }

    /// A non-empty string of at most `max` bytes; nil when absent, null or empty.
    func string(_ node: Int?, _ path: String, max: Int? = nil) throws(EventDecodeError) -> String? {
        guard let node = try present(node) else { return nil }
        guard doc.nodes[node].kind == .string else {
            throw fieldError(path, "expected a string, got \(describe(node))", at: node)
        }
        let bytes = doc.stringBytes(node)
        let limit = max ?? limits.fieldBytesMax
        guard bytes.count <= limit else {
            throw fieldError(path, "value is \(bytes.count) bytes, over the limit of \(limit)", at: node)
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    func integer(_ node: Int, _ path: String, allowFraction: Bool) throws(EventDecodeError) -> Int64 {
        let n = doc.nodes[node]
        guard n.kind == .number else {
            throw fieldError(path, "expected an integer, got \(describe(node))", at: node)
        }
        let raw = UnsafeRawBufferPointer(start: doc.p + Int(n.start), count: Int(n.end - n.start))
        var digitsEnd = raw.count
        if let dot = raw.firstIndex(of: UInt8(ascii: ".")) { digitsEnd = dot }
        let hasExponent = raw.contains(UInt8(ascii: "e")) || raw.contains(UInt8(ascii: "E"))
        guard !hasExponent, allowFraction || digitsEnd == raw.count,
              let value = DecimalDigits.parseInt64(UnsafeRawBufferPointer(rebasing: raw[0..<digitsEnd])) else {
            let what = hasExponent || digitsEnd != raw.count ? "expected an integer" : "integer out of range"
            throw fieldError(path, "\(what), got \(EventMessageText.excerpt(raw))", at: node)
        }
        return value
    }

    func kindName(_ node: Int) -> String {
        switch doc.nodes[node].kind {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        }
    }

    /// The value for an error message: scalars as their (bounded) JSON text.
    func describe(_ node: Int) -> String {
        let n = doc.nodes[node]
        switch n.kind {
        case .object, .array: return kindName(node)
        default: return EventMessageText.excerpt(UnsafeRawBufferPointer(start: doc.p + Int(n.start), count: Int(n.end - n.start)))
        }
    }

    func fieldError(_ path: String, _ reason: String, at node: Int) -> EventDecodeError {
        EventDecodeError(line: line, byteOffset: Int(doc.nodes[node].start), field: path, reason: reason)
    }
}

// MARK: - Parsed document

/// One JSON value in document order; a container's members follow it, and `next` is the index
/// just past its subtree, so siblings are found by jumping.
struct KongJSONNode {
    enum Kind: UInt8 { case object, array, string, number, bool, null }
    var kind: Kind
    /// A string value containing backslash escapes.
    var escaped = false
    var keyEscaped = false
    /// First byte of the value (the quote, for a string) and one past its last byte.
    var start: Int32
    var end: Int32 = 0
    /// The member's key, quotes excluded; -1 outside objects.
    var keyStart: Int32 = -1
    var keyEnd: Int32 = -1
    var next: Int32 = 0
}

struct KongJSONDocument {
    let p: UnsafePointer<UInt8>
    let nodes: [KongJSONNode]
    let line: Int

    /// The member of `object` named `key`, or nil; an error if the key appears more than once.
    func member(_ object: Int, _ key: String, path: String) throws(EventDecodeError) -> Int? {
        var found: Int?
        var child = object + 1
        let end = Int(nodes[object].next)
        while child < end {
            if keyEquals(child, key) {
                if found != nil {
                    throw EventDecodeError(line: line, byteOffset: Int(nodes[child].keyStart) - 1, field: path, reason: "repeated key")
                }
                found = child
            }
            child = Int(nodes[child].next)
        }
        return found
    }

    func keyEquals(_ node: Int, _ want: String) -> Bool {
        let n = nodes[node]
        let start = Int(n.keyStart), end = Int(n.keyEnd)
        if !n.keyEscaped {
            return UnsafeBufferPointer(start: p + start, count: end - start).elementsEqual(want.utf8)
        }
        guard let decoded = KongJSONText.unescape(p, start, end) else { return false }
        return decoded.elementsEqual(want.utf8)
    }

    /// The unescaped UTF-8 of a string node (already validated by the parser).
    func stringBytes(_ node: Int) -> [UInt8] {
        let n = nodes[node]
        let start = Int(n.start) + 1, end = Int(n.end) - 1
        if !n.escaped { return Array(UnsafeBufferPointer(start: p + start, count: end - start)) }
        return KongJSONText.unescape(p, start, end) ?? []
    }
}

// MARK: - Parser

/// Strict RFC 8259 parser over a line already checked for UTF-8 and length.
struct KongJSONParser {
    let p: UnsafePointer<UInt8>
    let n: Int
    let line: Int
    var i = 0
    var nodes: [KongJSONNode] = []

    init(p: UnsafePointer<UInt8>, n: Int, line: Int) {
        self.p = p; self.n = n; self.line = line
        nodes.reserveCapacity(128)
    }

    mutating func parseDocument() throws(EventDecodeError) {
        skipWhitespace()
        guard i < n, p[i] == UInt8(ascii: "{") else {
            throw i < n ? unexpected("expected a JSON object ('{')") : error("expected a JSON object, found only whitespace", at: i)
        }
        try parseValue(depth: 1, keyStart: -1, keyEnd: -1, keyEscaped: false)
        skipWhitespace()
        guard i == n else { throw unexpected("unexpected data after the closing '}'") }
    }

    mutating func parseValue(depth: Int, keyStart: Int, keyEnd: Int, keyEscaped: Bool) throws(EventDecodeError) {
        guard i < n else { throw error("expected a value, found the end of the line", at: i) }
        let index = nodes.count
        nodes.append(KongJSONNode(kind: .null, keyEscaped: keyEscaped, start: Int32(i), keyStart: Int32(keyStart), keyEnd: Int32(keyEnd)))
        let c = p[i]
        switch c {
        case UInt8(ascii: "{"):
            guard depth <= KongLog.depthMax else {
                throw error("nesting deeper than \(KongLog.depthMax) levels", at: i)
            }
            nodes[index].kind = .object
            i += 1
            skipWhitespace()
            if i < n && p[i] == UInt8(ascii: "}") {
                i += 1
            } else {
                while true {
                    skipWhitespace()
                    guard i < n, p[i] == UInt8(ascii: "\"") else { throw unexpected("expected a key string") }
                    let ks = i + 1
                    let escaped = try scanString()
                    let ke = i - 1
                    skipWhitespace()
                    guard i < n, p[i] == UInt8(ascii: ":") else { throw unexpected("expected ':' after a key") }
                    i += 1
                    skipWhitespace()
                    try parseValue(depth: depth + 1, keyStart: ks, keyEnd: ke, keyEscaped: escaped)
                    skipWhitespace()
                    guard i < n else { throw error("unterminated object, found the end of the line", at: i) }
                    if p[i] == UInt8(ascii: ",") { i += 1; continue }
                    if p[i] == UInt8(ascii: "}") { i += 1; break }
                    throw unexpected("expected ',' or '}' in an object")
                }
            }
        case UInt8(ascii: "["):
            guard depth <= KongLog.depthMax else {
                throw error("nesting deeper than \(KongLog.depthMax) levels", at: i)
            }
            nodes[index].kind = .array
            i += 1
            skipWhitespace()
            if i < n && p[i] == UInt8(ascii: "]") {
                i += 1
            } else {
                while true {
                    skipWhitespace()
                    try parseValue(depth: depth + 1, keyStart: -1, keyEnd: -1, keyEscaped: false)
                    skipWhitespace()
                    guard i < n else { throw error("unterminated array, found the end of the line", at: i) }
                    if p[i] == UInt8(ascii: ",") { i += 1; continue }
                    if p[i] == UInt8(ascii: "]") { i += 1; break }
                    throw unexpected("expected ',' or ']' in an array")
                }
            }
        case UInt8(ascii: "\""):
            nodes[index].kind = .string
            nodes[index].escaped = try scanString()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            nodes[index].kind = .number
            try scanNumber()
        case UInt8(ascii: "t"):
            nodes[index].kind = .bool
            try literal("true")
        case UInt8(ascii: "f"):
            nodes[index].kind = .bool
            try literal("false")
        case UInt8(ascii: "n"):
            nodes[index].kind = .null
            try literal("null")
        default:
            throw unexpected("expected a value")
        }
        nodes[index].end = Int32(i)
        nodes[index].next = Int32(nodes.count)
    }

    /// At an opening quote; leaves `i` after the closing quote.
    /// - Returns: whether the string holds escapes.
    mutating func scanString() throws(EventDecodeError) -> Bool {
        let open = i
        i += 1
        var escaped = false
        while i < n {
            let c = p[i]
            if c == UInt8(ascii: "\"") { i += 1; return escaped }
            if c < 0x20 { throw error("raw control character \(EventMessageText.byte(c)) in a string (must be escaped)", at: i) }
            if c == UInt8(ascii: "\\") {
                escaped = true
                guard i + 1 < n else { break }
                switch p[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard let unit = KongJSONText.hex4(p, n, i + 2) else {
                        throw error("invalid \\u escape (expected four hex digits)", at: i)
                    }
                    if unit >= 0xDC00 && unit <= 0xDFFF {
                        throw error("lone low surrogate \\u\(EventMessageText.hex4(UInt32(unit))) in a string", at: i)
                    }
                    if unit >= 0xD800 && unit <= 0xDBFF {
                        guard i + 12 <= n, p[i + 6] == UInt8(ascii: "\\"), p[i + 7] == UInt8(ascii: "u"),
                              let low = KongJSONText.hex4(p, n, i + 8), low >= 0xDC00 && low <= 0xDFFF else {
                            throw error("high surrogate \\u\(EventMessageText.hex4(UInt32(unit))) not followed by a low surrogate", at: i)
                        }
                        i += 12
                    } else {
                        i += 6
                    }
                default:
                    throw error("invalid escape \\\(String(decoding: [p[i + 1]], as: UTF8.self)) in a string", at: i)
                }
                continue
            }
            i += 1
        }
        throw error("unterminated string, found the end of the line", at: open)
    }

    mutating func scanNumber() throws(EventDecodeError) {
        let start = i
        if p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < n, DecimalDigits.isDigit(p[i]) else { throw unexpected("expected a digit in a number") }
        if p[i] == UInt8(ascii: "0") {
            i += 1
            if i < n && DecimalDigits.isDigit(p[i]) { throw error("leading zeros are not allowed in JSON numbers", at: start) }
        } else {
            while i < n && DecimalDigits.isDigit(p[i]) { i += 1 }
        }
        if i < n && p[i] == UInt8(ascii: ".") {
            i += 1
            guard i < n, DecimalDigits.isDigit(p[i]) else { throw unexpected("expected a digit after '.' in a number") }
            while i < n && DecimalDigits.isDigit(p[i]) { i += 1 }
        }
        if i < n && (p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E")) {
            i += 1
            if i < n && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i += 1 }
            guard i < n, DecimalDigits.isDigit(p[i]) else { throw unexpected("expected a digit in a number's exponent") }
            while i < n && DecimalDigits.isDigit(p[i]) { i += 1 }
        }
    }

    mutating func literal(_ word: StaticString) throws(EventDecodeError) {
        let count = word.utf8CodeUnitCount
        let start = i
        for k in 0..<count {
            guard i + k < n, p[i + k] == word.utf8Start[k] else {
                throw error("invalid literal (expected \(word))", at: start)
            }
        }
        i += count
    }

    mutating func skipWhitespace() {
        while i < n {
            let c = p[i]
            guard c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D else { return }
            i += 1
        }
    }

    func error(_ reason: String, at offset: Int) -> EventDecodeError {
        EventDecodeError(line: line, byteOffset: offset, reason: reason)
    }

    /// `expected X, found Y` at the current byte.
    func unexpected(_ expectation: String) -> EventDecodeError {
        guard i < n else { return error(expectation + ", found the end of the line", at: i) }
        return error(expectation + ", found " + EventMessageText.byte(p[i]), at: i)
    }
}

enum KongJSONText {
    static func hexValue(_ c: UInt8) -> UInt16? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt16(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt16(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt16(c - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Four hex digits at `at`, bounds-checked against `n`.
    static func hex4(_ p: UnsafePointer<UInt8>, _ n: Int, _ at: Int) -> UInt16? {
        guard at >= 0, at + 4 <= n else { return nil }
        var value: UInt16 = 0
        for k in 0..<4 {
            guard let d = hexValue(p[at + k]) else { return nil }
            value = value << 4 | d
        }
        return value
    }

    /// Unescapes the inside of a JSON string (`start..<end`, quotes excluded).
    /// - Returns: nil on a malformed escape or lone surrogate (possible only on unparsed input).
    static func unescape(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var i = start
        while i < end {
            let c = p[i]
            guard c == UInt8(ascii: "\\") else { out.append(c); i += 1; continue }
            guard i + 1 < end else { return nil }
            let e = p[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let unit = hex4(p, end, i) else { return nil }
                i += 4
                var scalar = UInt32(unit)
                if unit >= 0xDC00 && unit <= 0xDFFF { return nil }
                if unit >= 0xD800 && unit <= 0xDBFF {
                    guard i + 6 <= end, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u"),
                          let low = hex4(p, end, i + 2), low >= 0xDC00 && low <= 0xDFFF else { return nil }
                    i += 6
                    scalar = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                }
                guard let s = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: UTF8.encode(s)!)
            default:
                return nil
            }
        }
        return out
    }
}

// MARK: - Shape test

/// The scan behind `KongLog.looksLikeKong`: top-level keys only, no validation, never traps.
enum KongShape {
    static func matches(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        var i = 0
        func skipWhitespace() {
            while i < n && (p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0D || p[i] == 0x0A) { i += 1 }
        }
        skipWhitespace()
        guard i < n, p[i] == UInt8(ascii: "{") else { return false }
        i += 1
        var request = false, response = false, startedAt = false
        while true {
            skipWhitespace()
            guard i < n, p[i] == UInt8(ascii: "\"") else { return false }
            let keyStart = i + 1
            guard let afterKey = skipString(p, n, i) else { return false }
            let keyEnd = afterKey - 1
            i = afterKey
            skipWhitespace()
            guard i < n, p[i] == UInt8(ascii: ":") else { return false }
            i += 1
            skipWhitespace()
            guard i < n else { return false }
            let first = p[i]
            switch key(p, keyStart, keyEnd) {
            case .type: return false
            case .request: request = first == UInt8(ascii: "{")
            case .response: response = first == UInt8(ascii: "{")
            case .startedAt: startedAt = first == UInt8(ascii: "-") || DecimalDigits.isDigit(first)
            case .other: break
            case .malformed: return false
            }
            guard let afterValue = skipValue(p, n, i) else { return false }
            i = afterValue
            skipWhitespace()
            guard i < n else { return false }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            return p[i] == UInt8(ascii: "}") && request && response && startedAt
        }
    }

    enum Key { case type, request, response, startedAt, other, malformed }

    static func key(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Key {
        func classify(_ bytes: UnsafeBufferPointer<UInt8>) -> Key {
            switch bytes.count {
            case 4 where bytes.elementsEqual("type".utf8): .type
            case 7 where bytes.elementsEqual("request".utf8): .request
            case 8 where bytes.elementsEqual("response".utf8): .response
            case 10 where bytes.elementsEqual("started_at".utf8): .startedAt
            default: .other
            }
        }
        let raw = UnsafeBufferPointer(start: p + start, count: end - start)
        guard raw.contains(UInt8(ascii: "\\")) else { return classify(raw) }
        guard let decoded = KongJSONText.unescape(p, start, end) else { return .malformed }
        return decoded.withUnsafeBufferPointer(classify)
    }

    /// At an opening quote. - Returns: the index after the closing quote, or nil at the end.
    static func skipString(_ p: UnsafePointer<UInt8>, _ n: Int, _ open: Int) -> Int? {
        var i = open + 1
        while i < n {
            if p[i] == UInt8(ascii: "\\") { i += 2; continue }
            if p[i] == UInt8(ascii: "\"") { return i + 1 }
            i += 1
        }
        return nil
    }

    /// Skips one value by bracket counting (strings honoured). - Returns: the index after it.
    static func skipValue(_ p: UnsafePointer<UInt8>, _ n: Int, _ start: Int) -> Int? {
        var i = start
        let c = p[i]
        if c == UInt8(ascii: "\"") { return skipString(p, n, i) }
        if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
            var depth = 0
            while i < n {
                switch p[i] {
                case UInt8(ascii: "\""):
                    guard let next = skipString(p, n, i) else { return nil }
                    i = next
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return i + 1 }
                default: break
                }
                i += 1
            }
            return nil
        }
        while i < n {
            switch p[i] {
            case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0D, 0x0A: return i
            default: i += 1
            }
        }
        return i
    }
}
