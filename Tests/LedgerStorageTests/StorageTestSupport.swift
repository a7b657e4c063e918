// Shared helpers for the storage tests: seeded event generation (every token shape the string
// table packs or must not pack), and snapshot/clone/inspect helpers over SimulatedFileSystem so
// each fault case starts from identical bytes.
import Foundation
import LedgerCrypto
import LedgerModel
import LedgerStorage
import XCTest

/// The seed for a randomized test: `LEDGER_TEST_SEED` when set (to replay a failure), else fixed.
func testSeed(_ fallback: UInt64) -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["LEDGER_TEST_SEED"], let seed = UInt64(text) { return seed }
    return fallback
}

/// Builds seeded event sequences that exercise the block codec: all types, optional fields present
/// and absent, unicode, attrs, and tokens that repeat (with and without repeated fields) so the
/// encoder's inherit path runs.
struct EventFactory {
    var rng: SplitMix64
    /// Extreme timestamps and expiries (Int64.min/max) as well as realistic ones.
    var extremeValues: Bool
    private var tokens: [String] = []
    private var lastByToken: [String: Event] = [:]
    private var clock: Int64 = 1_700_000_000_000

    init(seed: UInt64, extremeValues: Bool = true) {
        rng = SplitMix64(seed: seed)
        self.extremeValues = extremeValues
    }

    static let unicodePieces: [String] = [
        "a", "Z", "0", "-", "_", ".", " ", "/", ":", "\"", "\\", "\n", "\t", "\u{0}", "\u{7F}",
        "é", "e\u{301}", "ß", "中文", "\u{2028}", "\u{FEFF}", "😀", "🇫🇷", "👩‍👩‍👧", "\u{10FFFF}", "sha256:", "eyJ",
    ]
    static let base64URLAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }

    mutating func unicodeText(maxPieces: Int = 8) -> String {
        var out = ""
        for _ in 0..<int(0...maxPieces) {
            if chance(50) { out += EventFactory.unicodePieces.randomElement(using: &rng)! }
            else { out.unicodeScalars.append(UnicodeScalar(UInt8(int(0x20...0x7E)))) }
        }
        return out
    }

    mutating func hex(_ count: Int) -> String {
        String((0..<count).map { _ in Array("0123456789abcdef")[int(0...15)] })
    }

    mutating func base64URL(_ count: Int) -> String {
        String((0..<count).map { _ in EventFactory.base64URLAlphabet[int(0...63)] })
    }

    /// A token id of one of the shapes the string table cares about.
    mutating func tokenShape() -> String {
        switch int(0...8) {
        case 0, 1:
            let h = hex(32)
            let parts = [h.prefix(8), h.dropFirst(8).prefix(4), h.dropFirst(12).prefix(4), h.dropFirst(16).prefix(4), h.dropFirst(20)]
            let uuid = parts.joined(separator: "-")
            // Uppercase hex would not unpack to the same text: it must stay raw.
            return int(0...1) == 0 ? uuid : uuid.uppercased()
        case 2:
            // 22 chars whose last one carries zero low bits: the canonical form of 16 bytes.
            return base64URL(21) + String(["A", "Q", "g", "w"].randomElement(using: &rng)!)
        case 3:
            // Same length, but the last char has low bits set: not canonical, must stay raw.
            return base64URL(21) + String(["B", "R", "h", "x", "_", "9"].randomElement(using: &rng)!)
        case 4:
            return "sha256:" + hex(64)
        case 5:
            return "sha256:" + hex(63) + "G"   // almost a fingerprint
        case 6:
            return "eyJ" + base64URL(int(5...30)) + "." + base64URL(int(5...40)) + "." + base64URL(int(0...43))
        case 7:
            return ""
        default:
            return unicodeText()
        }
    }

    mutating func maybe(_ pool: [String], _ percent: Int = 50) -> String? {
        guard chance(percent) else { return nil }
        return chance(85) ? pool.randomElement(using: &rng)! : unicodeText()
    }

    mutating func timestamp() -> Int64 {
        if extremeValues {
            switch int(0...19) {
            case 0: return .min
            case 1: return .max
            case 2: return Int64.random(in: .min ... .max, using: &rng)
            default: break
            }
        }
        clock += Int64(int(-50...2000))
        return clock
    }

    mutating func event() -> Event {
        let type = EventType.allCases.randomElement(using: &rng)!
        var e = Event(type: type, ts: timestamp())
        var token: String?
        if !type.isMarker || chance(10) {
            if !tokens.isEmpty && chance(70) { token = tokens.randomElement(using: &rng)! }
            else {
                token = tokenShape()
                tokens.append(token!)
            }
        }
        if let token, let previous = lastByToken[token], chance(60) {
            // Repeat most fields of the token's previous event: what inherit bits encode.
            e = previous
            e.type = type
            e.ts = timestamp()
            if chance(30) { e.sub = maybe(["alice", "bob", "сергей", "李"]) }
            if chance(30) { e.gateway = maybe(["gw-1", "gw-2"]) }
            if chance(20) { e.status = nil }
        } else {
            e.token = token
            e.tokenType = maybe(["access", "refresh", "api_key", "id"])
            e.sub = maybe(["alice", "bob", "сергей", "李"])
            e.clientID = maybe(["web", "ios", "cli"])
            e.iss = maybe(["https://auth.example"])
            e.aud = maybe(["api", "billing"])
            e.scope = maybe(["read", "read write", "admin"])
            e.parent = chance(30) ? (tokens.randomElement(using: &rng) ?? tokenShape()) : nil
            e.gateway = maybe(["gw-1", "gw-2", "gw-3"])
            e.release = maybe(["v1.0.0", "v1.1.0", "v2.0.0-rc.1"])
            e.track = maybe(["stable", "canary", "blue", "green"])
            e.route = maybe(["/v1/orders", "/v1/users/{id}", "/"])
            e.method = maybe(["GET", "POST", "DELETE"])
            e.clientIP = maybe(["10.0.0.1", "::1", "2001:db8::7"])
            e.requestID = chance(50) ? hex(int(0...16)) : nil
            e.reason = maybe(["expired", "revoked", "invalid_signature", "rollback"], 30)
            e.marker = type.isMarker || chance(5) ? "m-" + hex(int(1...6)) : nil
            if chance(50) {
                let exp: Int64 = extremeValues && chance(10) ? [Int64.min, .max, 0].randomElement(using: &rng)! : e.ts &+ Int64(int(-1000...3_600_000))
                e.exp = exp
            }
            e.status = chance(50) ? int(0...999) : nil
            e.weight = chance(20) ? int(0...100) : nil
            e.attrs = [:]
            for _ in 0..<(chance(30) ? int(1...4) : 0) { e.attrs[maybe(["region", "tenant", "ключ"], 100)!] = unicodeText(maxPieces: 4) }
        }
        if let token { lastByToken[token] = e }
        return e
    }

    mutating func events(_ count: Int) -> [Event] { (0..<count).map { _ in event() } }
}

func encodePayload(_ events: [Event]) -> [UInt8] {
    var encoder = BlockPayloadEncoder(expectedEvents: events.count)
    for e in events { encoder.append(e) }
    return encoder.finish()
}

/// A clock the tests move by hand.
final class ManualClock: LedgerStorage.Clock, @unchecked Sendable {
    var ms: Int64
    init(ms: Int64 = 1_700_000_000_000) { self.ms = ms }
    func nowMs() -> Int64 { ms += 1; return ms }
}

let ledgerDirectory = "/ledger"

extension SimulatedFileSystem {
    /// Every file's current bytes, by path.
    func snapshot() -> [String: [UInt8]] {
        var out = [String: [UInt8]]()
        for path in allFiles { out[path] = contents(path) }
        return out
    }

    /// A fresh file system holding `files` as durable contents (no locks held).
    static func from(_ files: [String: [UInt8]], directory: String = ledgerDirectory) -> SimulatedFileSystem {
        let fs = SimulatedFileSystem()
        try! fs.createDirectory(directory)
        try! fs.createDirectory(joinPath(directory, SegmentLog.quarantineDirectory))
        for (path, bytes) in files { fs.setContents(path, bytes) }
        return fs
    }

    func segmentPaths(_ directory: String = ledgerDirectory) -> [String] {
        allFiles.filter { $0.hasPrefix(directory + "/") && $0.hasSuffix(".seg") && !$0.contains("/quarantine/") }.sorted()
    }

    func size(_ path: String) -> Int { contents(path)?.count ?? -1 }
}

func openLog(_ fs: SimulatedFileSystem, _ options: LogOptions = LogOptions(), clock: any LedgerStorage.Clock = ManualClock()) throws -> SegmentLog {
    try SegmentLog.open(directory: ledgerDirectory, options: options, fileSystem: fs, clock: clock)
}

func verify(_ fs: any FileSystem, decode: Bool = true, directory: String = ledgerDirectory) throws -> VerifyReport {
    var verifier = Verifier(directory: directory, fileSystem: fs)
    verifier.decodePayloads = decode
    return try verifier.run()
}

/// Every event the log holds, read through locateBlocks/readBlock.
func readAll(_ log: SegmentLog) throws -> [Event] {
    var out = [Event]()
    for location in log.locateBlocks() { out += try log.readBlock(location).events }
    return out
}

func segmentPath(_ name: String) -> String { joinPath(ledgerDirectory, name) }
func indexPath(_ segment: String) -> String { joinPath(ledgerDirectory, String(segment.dropLast(4)) + ".idx") }

/// Runs a command and returns its standard output; fails the test when it exits non-zero.
func runCommand(_ executable: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = Foundation.FileHandle.nullDevice
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    XCTAssertEqual(process.terminationStatus, 0, "\(executable) \(arguments.joined(separator: " ")) failed", file: file, line: line)
    return data
}

func temporaryDirectory(_ label: String) -> String {
    let template = NSTemporaryDirectory() + "tokenledger-\(label)-XXXXXX"
    var bytes = Array(template.utf8CString)
    let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    return String(cString: bytes)
}
