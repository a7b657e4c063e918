// libFuzzer target for NDJSON ingest: arbitrary bytes through LineFramer and NDJSONDecoder.
// Built by `tools/fuzz ndjson` as one module together with the sources it needs.
//
// Besides "never crashes, never trips ASan", it checks properties that must hold for any input:
// - framing does not depend on chunking (all at once vs. chunk sizes drawn from the input);
// - a decoded event re-encodes (NDJSONEncoder) to a line that decodes to an equal event;
// - no decoded token or parent still needs fingerprinting, and every field is within the limits;
// - an in-range timestamp formats as RFC 3339 and parses back to itself;
// - the direct path the server takes (`decode(line:lineNumber:into:gateway:)`, bytes straight
//   into a block encoder) agrees with decode-then-append: the same refusal text, and the same
//   payload bytes and decoded columns for what it keeps, with and without a gateway.
// A violated property calls fatalError, which libFuzzer reports as a crash with the input saved.

import LedgerModel

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    FuzzNDJSON.checkFramingIgnoresChunking(input)
    FuzzNDJSON.decodeEveryLine(input)
    // The whole input as one line too, so '\n' and '\r' also land inside values and keys.
    FuzzNDJSON.checkDecode(input, lineNumber: 1)
    FuzzNDJSON.checkDirectPath(input)
    return 0
}

enum FuzzNDJSON {
    static let decoder = NDJSONDecoder()
    /// Re-encoding can lengthen a line (an escaped "\b" becomes "\u0008"), so the second decode
    /// must not fail on the line limit alone.
    static let relaxedDecoder: NDJSONDecoder = {
        var limits = EventLimits()
        limits.lineBytesMax = 1 << 30
        return NDJSONDecoder(limits: limits)
    }()

    enum Framed: Equatable {
        case line(Int, [UInt8])
        case oversized(Int, Int)
    }

    static func frame(_ input: UnsafeRawBufferPointer, lineBytesMax: Int, chunkSizes: inout SplitMix?) -> [Framed] {
        var limits = EventLimits()
        limits.lineBytesMax = lineBytesMax
        var framer = LineFramer(limits: limits)
        var out: [Framed] = []
        func drain() {
            while let result = framer.nextLine() {
                switch result {
                case .line(let number, let bytes): out.append(.line(number, Array(bytes)))
                case .oversized(let number, let count): out.append(.oversized(number, count))
                }
            }
        }
        var start = 0
        while start < input.count {
            var size = input.count
            if chunkSizes != nil { size = Int(chunkSizes!.next() % 97) + 1 }
            let end = min(input.count, start + size)
            framer.append(UnsafeRawBufferPointer(rebasing: input[start..<end]))
            drain()
            start = end
        }
        framer.finish()
        drain()
        return out
    }

    static func checkFramingIgnoresChunking(_ input: UnsafeRawBufferPointer) {
        // A small limit, derived from the input, so oversized lines are common.
        let lineBytesMax = input.isEmpty ? 8 : Int(input[0] % 64) + 1
        var none: SplitMix? = nil
        var chunks: SplitMix? = SplitMix(seed: UInt64(input.count) &* 0x9E37_79B9 ^ UInt64(input.last ?? 0))
        let whole = frame(input, lineBytesMax: lineBytesMax, chunkSizes: &none)
        let chunked = frame(input, lineBytesMax: lineBytesMax, chunkSizes: &chunks)
        if whole != chunked {
            fatalError("LineFramer results depend on chunking: \(whole) vs \(chunked)")
        }
    }

    static func decodeEveryLine(_ input: UnsafeRawBufferPointer) {
        var framer = LineFramer()
        framer.append(input)
        framer.finish()
        while let result = framer.nextLine() {
            if case .line(let number, let bytes) = result {
                bytes.withUnsafeBytes { checkDecode($0, lineNumber: number) }
            }
        }
    }

    /// Every line of the input, and the whole input as one line, through both paths into one
    /// block each (so strings repeat across lines and the encoder's caches are exercised).
    static func checkDirectPath(_ input: UnsafeRawBufferPointer) {
        var lines: [[UInt8]] = [Array(input)]
        var framer = LineFramer()
        framer.append(input)
        framer.finish()
        while let result = framer.nextLine() {
            if case .line(_, let bytes) = result { lines.append(Array(bytes)) }
        }
        for gateway in [nil, "gw-a"] as [String?] {
            var viaEvents = BlockPayloadEncoder(expectedEvents: 16)
            var direct = BlockPayloadEncoder(expectedEvents: 16, keepColumns: true)
            for (n, bytes) in lines.enumerated() {
                var expected: Result<Event, EventDecodeError>
                do throws(EventDecodeError) {
                    var e = try decoder.decode(line: bytes, lineNumber: n + 1)
                    if let gateway {
                        if e.gateway == nil { e.gateway = gateway }
                        if e.gateway != gateway { throw EventDecodeError(line: n + 1, reason: "gateway") }
                    }
                    if let problem = BlockPayloadEncoder.unencodable(e) { throw EventDecodeError(line: n + 1, reason: problem) }
                    expected = .success(e)
                } catch {
                    expected = .failure(error)
                }
                let got: Result<EventType, EventDecodeError> = bytes.withUnsafeBytes { raw in
                    Result { () throws(EventDecodeError) in try decoder.decode(line: raw, lineNumber: n + 1, into: &direct, gateway: gateway) }
                }
                switch (expected, got) {
                case let (.success(e), .success(type)):
                    if e.type != type { fatalError("direct path: type \(type), decode: \(e.type)") }
                    viaEvents.append(e)
                case let (.failure(a), .failure(b)):
                    // Gateway refusals are worded by each caller; every other error is the decoder's.
                    if a.reason != "gateway" && a.description != b.description {
                        fatalError("direct path refused with \"\(b)\", decode with \"\(a)\"")
                    }
                default:
                    fatalError("direct path and decode disagree on line \(n + 1) (gateway \(gateway ?? "none")): \(expected) vs \(got)")
                }
                if viaEvents.count != direct.count { fatalError("a refused line left something in the encoder") }
            }
            guard direct.count > 0 else { continue }
            let payload = direct.finish()
            if payload != viaEvents.finish() { fatalError("direct path payload differs from decode-then-append") }
            guard let decoded = try? BlockPayloadDecoder.decode(payload) else { fatalError("direct path payload does not decode") }
            if direct.decodedBlock().events != decoded.events { fatalError("decodedBlock() differs from the payload") }
        }
    }

    static func checkDecode(_ line: UnsafeRawBufferPointer, lineNumber: Int) {
        let event: Event
        do {
            event = try decoder.decode(line: line, lineNumber: lineNumber)
        } catch {
            if error.line != lineNumber { fatalError("error names line \(error.line), not \(lineNumber): \(error)") }
            if let offset = error.byteOffset, offset < 0 || offset > line.count {
                fatalError("error offset \(offset) outside a \(line.count)-byte line: \(error)")
            }
            _ = error.description
            return
        }
        checkInvariants(event)
        let reencoded = NDJSONEncoder.line(event)
        do {
            let again = try relaxedDecoder.decode(line: reencoded, lineNumber: lineNumber)
            if again != event {
                fatalError("round trip changed the event:\n\(event)\n\(again)\nline: \(reencoded)")
            }
        } catch {
            fatalError("re-encoded event does not decode: \(error)\nline: \(reencoded)")
        }
        if let text = Timestamp.formatRFC3339(epochMilliseconds: event.ts) {
            guard (try? Timestamp.parseRFC3339(text)) == event.ts else { fatalError("RFC 3339 round trip failed for \(event.ts): \(text)") }
        }
    }

    static func checkInvariants(_ event: Event) {
        let limits = EventLimits.default
        for id in [event.token, event.parent] {
            guard var id else { continue }
            let raw = id.withUTF8 { TokenFingerprint.needsFingerprint(UnsafeRawBufferPointer($0)) }
            if raw || id.isEmpty { fatalError("decoder let a raw or empty token id through: \(id)") }
        }
        if !event.type.isMarker && event.token == nil { fatalError("token event without token") }
        if event.type.isMarker && (event.marker ?? "").isEmpty { fatalError("marker event without marker") }
        let strings = [event.tokenType, event.sub, event.clientID, event.iss, event.aud, event.scope, event.gateway,
                       event.release, event.track, event.route, event.method, event.clientIP, event.requestID,
                       event.reason, event.marker, event.token, event.parent]
        for value in strings {
            if let value, value.utf8.count > limits.fieldBytesMax { fatalError("field over the limit: \(value.utf8.count) bytes") }
        }
        if let status = event.status, !(100...599).contains(status) { fatalError("status \(status)") }
        if let weight = event.weight, !(0...100).contains(weight) { fatalError("weight \(weight)") }
        if event.attrs.count > limits.attrsCountMax { fatalError("\(event.attrs.count) attrs") }
        for (key, value) in event.attrs where key.utf8.count > limits.attrKeyBytesMax || value.utf8.count > limits.attrValueBytesMax {
            fatalError("attr over the limits: \(key)")
        }
    }
}

/// Chunk sizes drawn deterministically from the input, so a crash reproduces from the input alone.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
