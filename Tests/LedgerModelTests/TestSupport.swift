import XCTest
@testable import LedgerModel

/// SplitMix64: tiny, fast and fully determined by its seed, so a failing property test can be
/// replayed from the seed it prints.
struct SeededGenerator: RandomNumberGenerator {
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

/// The seed for a property test: `LEDGER_TEST_SEED` when set (to replay a failure), else fixed.
func testSeed(_ fallback: UInt64) -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["LEDGER_TEST_SEED"], let seed = UInt64(text) { return seed }
    return fallback
}

enum RandomText {
    /// Pieces chosen to stress the codec: JSON metacharacters, every kind of control character,
    /// multi-byte scalars of each length, emoji (surrogate pairs when \u-escaped), line separators.
    static let pieces: [String] = [
        "a", "b", "Z", "0", "9", "-", "_", ".", " ", "/", ":", "{", "}", "[", "]", ",",
        "\"", "\\", "\\u0041", "\n", "\r", "\t", "\u{0}", "\u{1}", "\u{8}", "\u{C}", "\u{1F}", "\u{7F}",
        "é", "ß", "ñ", "中", "文", "\u{2028}", "\u{FEFF}", "\u{FFFF}", "😀", "🇫🇷", "👩‍👩‍👧", "\u{10FFFF}",
        "e\u{301}", "sha256:", "eyJ",
    ]

    static func string(_ rng: inout SeededGenerator, maxPieces: Int = 24, nonEmpty: Bool = false) -> String {
        let count = Int.random(in: (nonEmpty ? 1 : 0)...maxPieces, using: &rng)
        var out = ""
        for _ in 0..<count {
            if Bool.random(using: &rng) {
                out += pieces.randomElement(using: &rng)!
            } else {
                out.unicodeScalars.append(UnicodeScalar(UInt8.random(in: 0x20...0x7E, using: &rng)))
            }
        }
        return out
    }
}

enum RandomEvent {
    static func make(_ rng: inout SeededGenerator) -> Event {
        let type = EventType.allCases.randomElement(using: &rng)!
        var ts: Int64
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: ts = .min
        case 1: ts = .max
        case 2: ts = Int64.random(in: -1000...1000, using: &rng)
        default: ts = Int64.random(in: .min ... .max, using: &rng)
        }
        var event = Event(type: type, ts: ts)
        func maybe(_ rng: inout SeededGenerator) -> String? {
            Int.random(in: 0..<3, using: &rng) == 0 ? nil : RandomText.string(&rng)
        }
        if !type.isMarker || Bool.random(using: &rng) {
            event.token = tokenID(&rng)
        }
        if Bool.random(using: &rng) { event.parent = tokenID(&rng) }
        if type.isMarker || Int.random(in: 0..<4, using: &rng) == 0 {
            event.marker = RandomText.string(&rng, nonEmpty: true)
        }
        event.tokenType = maybe(&rng)
        event.sub = maybe(&rng)
        event.clientID = maybe(&rng)
        event.iss = maybe(&rng)
        event.aud = maybe(&rng)
        event.scope = maybe(&rng)
        if Bool.random(using: &rng) { event.exp = Int64.random(in: .min ... .max, using: &rng) }
        event.gateway = maybe(&rng)
        event.release = maybe(&rng)
        event.track = maybe(&rng)
        event.route = maybe(&rng)
        event.method = maybe(&rng)
        if Bool.random(using: &rng) { event.status = Int.random(in: 100...599, using: &rng) }
        event.clientIP = maybe(&rng)
        event.requestID = maybe(&rng)
        event.reason = maybe(&rng)
        if Bool.random(using: &rng) { event.weight = Int.random(in: 0...100, using: &rng) }
        for _ in 0..<Int.random(in: 0...4, using: &rng) {
            let value = RandomText.string(&rng)
            // A JWT-shaped attrs value is fingerprinted by design; keep the property exact.
            guard !value.hasPrefix("eyJ") else { continue }
            event.attrs[RandomText.string(&rng, maxPieces: 8)] = value
        }
        return event
    }

    /// A token id as the ledger keeps it: sometimes a raw JWT or a long opaque token, normalised
    /// the way the decoder must normalise it.
    static func tokenID(_ rng: inout SeededGenerator) -> String {
        let raw: String
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: raw = SampleTokens.jwt
        case 1: raw = String(repeating: "x", count: Int.random(in: 120...200, using: &rng))
        default: raw = RandomText.string(&rng, nonEmpty: true)
        }
        return TokenFingerprint.normalize(raw)
    }
}

enum SampleTokens {
    /// A well-formed HS256 JWT (header.payload.signature).
    static let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
}

/// Writes an event as JSON the way other producers might: fields in random order, random
/// whitespace between tokens, and optionally every string escaped (`\uXXXX` with surrogate pairs
/// for non-ASCII, `\/` for slashes), to exercise paths the canonical encoder never takes.
enum VariantEncoder {
    static func line(_ event: Event, _ rng: inout SeededGenerator, escapeAll: Bool) -> String {
        var fields: [(String, String)] = [("type", quote(event.type.name, escapeAll)), ("ts", String(event.ts))]
        func add(_ name: String, _ value: String?) {
            if let value { fields.append((name, quote(value, escapeAll))) }
        }
        add("token", event.token); add("token_type", event.tokenType); add("sub", event.sub)
        add("client_id", event.clientID); add("iss", event.iss); add("aud", event.aud); add("scope", event.scope)
        if let exp = event.exp { fields.append(("exp", String(exp))) }
        add("parent", event.parent); add("gateway", event.gateway); add("release", event.release)
        add("track", event.track); add("route", event.route); add("method", event.method)
        if let status = event.status { fields.append(("status", String(status))) }
        add("client_ip", event.clientIP); add("request_id", event.requestID); add("reason", event.reason)
        add("marker", event.marker)
        if let weight = event.weight { fields.append(("weight", String(weight))) }
        if !event.attrs.isEmpty {
            let entries = event.attrs.shuffled(using: &rng).map { quote($0.key, escapeAll) + ws(&rng) + ":" + ws(&rng) + quote($0.value, escapeAll) }
            fields.append(("attrs", "{" + ws(&rng) + entries.joined(separator: ws(&rng) + "," + ws(&rng)) + ws(&rng) + "}"))
        }
        // Absent optionals may also be spelled as null.
        for name in ["sub", "exp", "status", "attrs", "parent"] where !fields.contains(where: { $0.0 == name }) && Bool.random(using: &rng) {
            fields.append((name, "null"))
        }
        fields.shuffle(using: &rng)
        let body = fields.map { quote($0.0, escapeAll) + ws(&rng) + ":" + ws(&rng) + $0.1 }
        return ws(&rng) + "{" + ws(&rng) + body.joined(separator: ws(&rng) + "," + ws(&rng)) + ws(&rng) + "}" + ws(&rng)
    }

    static func ws(_ rng: inout SeededGenerator) -> String {
        ["", "", "", " ", "\t", "  ", " \t "].randomElement(using: &rng)!
    }

    static func quote(_ text: String, _ escapeAll: Bool) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{8}": out += "\\b"
            case "\u{C}": out += "\\f"
            case "/" where escapeAll: out += "\\/"
            default:
                if scalar.value < 0x20 || (escapeAll && scalar.value >= 0x7F) {
                    for unit in String(scalar).utf16 { out += "\\u" + hex4(unit, upper: unit & 1 == 0) }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func hex4(_ unit: UInt16, upper: Bool) -> String {
        let digits = String(unit, radix: 16, uppercase: upper)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }
}

extension XCTestCase {
    /// Decodes a line that must fail.
    /// - Returns: the error, or nil (after recording a failure) if the line decoded.
    func decodeError(_ line: String, lineNumber: Int = 1, limits: EventLimits = .default,
                     file: StaticString = #filePath, line testLine: UInt = #line) -> EventDecodeError? {
        do {
            let event = try NDJSONDecoder(limits: limits).decode(line: line, lineNumber: lineNumber)
            XCTFail("expected an error, decoded \(event) from \(line)", file: file, line: testLine)
            return nil
        } catch {
            return error
        }
    }

    func assertDecodeError(_ line: String, _ description: String, lineNumber: Int = 1, limits: EventLimits = .default,
                           file: StaticString = #filePath, line testLine: UInt = #line) {
        guard let error = decodeError(line, lineNumber: lineNumber, limits: limits, file: file, line: testLine) else { return }
        XCTAssertEqual(error.description, description, "input: \(line)", file: file, line: testLine)
    }

    func decoded(_ line: String, limits: EventLimits = .default, file: StaticString = #filePath, line testLine: UInt = #line) -> Event? {
        do {
            return try NDJSONDecoder(limits: limits).decode(line: line)
        } catch {
            XCTFail("\(error) (input: \(line))", file: file, line: testLine)
            return nil
        }
    }
}
