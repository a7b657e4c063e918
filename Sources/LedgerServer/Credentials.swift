// Per-gateway keys (`serve --keys FILE`). The file holds one `GATEWAY-ID KEY` pair per line
// (`#` comments, blank lines allowed). Keys are kept only as SHA-256 digests and compared in
// constant time; neither keys nor attempted keys are ever logged.
import Foundation
import LedgerCrypto

public struct Credentials: Sendable {
    public static let keyBytesMin = 16
    private var digests: [String: Digest32] = [:]

    public var isEmpty: Bool { digests.isEmpty }
    public var gateways: [String] { digests.keys.sorted() }

    public init(parsing text: String, source: String) throws(CredentialsError) {
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count == 2 else {
                throw CredentialsError("\(source) line \(n + 1): expected \"GATEWAY-ID KEY\", got \(parts.count) fields")
            }
            let gateway = String(parts[0]), key = String(parts[1])
            guard key.utf8.count >= Credentials.keyBytesMin else {
                throw CredentialsError("\(source) line \(n + 1): the key for \(gateway) is shorter than \(Credentials.keyBytesMin) bytes")
            }
            guard digests[gateway] == nil else { throw CredentialsError("\(source) line \(n + 1): gateway \(gateway) appears twice") }
            digests[gateway] = SHA256.hash(Array(key.utf8))
        }
        guard !digests.isEmpty else { throw CredentialsError("\(source): no gateway keys") }
    }

    /// - Returns: whether `key` is `gateway`'s key. Takes the same time whether the gateway is
    ///   known or not and wherever the bytes differ.
    public func check(gateway: String, key: String) -> Bool {
        let expected = digests[gateway] ?? SHA256.hash(Array("no such gateway: \(gateway)".utf8))
        return constantTimeEqual(SHA256.hash(Array(key.utf8)), expected) && digests[gateway] != nil
    }
}

public struct CredentialsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}
