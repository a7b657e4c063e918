import Foundation
import LedgerServer

/// `--gateway ID --key-file FILE` for the client commands: the HELLO frame that authenticates.
enum ClientAuth {
    static let options: Set<String> = ["gateway", "key-file"]
    static let help = """
      --gateway ID --key-file FILE   authenticate as gateway ID with the key in FILE (first
                                     line), for servers started with --keys
    """

    static func hello(_ args: Arguments) throws(CLIError) -> Frame? {
        let gateway = args.string("gateway"), file = args.string("key-file")
        guard gateway != nil || file != nil else { return nil }
        guard let gateway, let file else { throw .usage(args.command, "--gateway and --key-file go together") }
        guard let key = readKey(file) else { throw .failure(args.command, "cannot read a key from \(file)") }
        var object = [UInt8]()
        object += Array("{\"gateway\":".utf8)
        object += Array(jsonString(gateway).utf8)
        object += Array(",\"key\":".utf8)
        object += Array(jsonString(key).utf8)
        object += Array("}".utf8)
        return Frame(.hello, id: 0, payload: object)
    }

    /// The key in a key file: its first line, trimmed; nil when unreadable or empty.
    static func readKey(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let key = text.split(separator: "\n").first.map({ String($0).trimmingCharacters(in: .whitespacesAndNewlines) }),
              !key.isEmpty else { return nil }
        return key
    }

    static func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [])
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
