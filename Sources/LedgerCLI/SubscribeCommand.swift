import Glibc
import LedgerModel
import LedgerServer

enum SubscribeCommand {
    static let usage = """
    usage: tokenledger subscribe --to HOST:PORT [--type T]... [--alerts] [--from-seq N]
                                 [--no-events] [--limit N] [--gateway ID --key-file FILE]

    Prints, live, every new event on the ledger that matches (NDJSON with "seq" and
    "received_at"), and with --alerts every anomaly alert (a JSON object with "anomaly").
    With --from-seq, first everything from that sequence number on, then live: no gap, no
    duplicate. Runs until interrupted, the server goes away (exit 1), or --limit lines.

      --type T       only events of these types (repeat, or comma-separate)
      --alerts       also the anomaly alerts (from --from-seq on, then live)
      --no-events    alerts only
      --from-seq N   start from this sequence number (default: only what comes next)
      --limit N      stop after printing N lines

    """ + ClientAuth.help

    static func run(_ arguments: [String]) throws(CLIError) -> Int32 {
        let args = try Arguments(arguments, spec: .init(options: Set(["to", "type", "from-seq", "limit"]).union(ClientAuth.options), flags: ["alerts", "no-events"]), command: "subscribe")
        guard let endpoint = Endpoint(parsing: try args.required("to")) else { throw .usage("subscribe", "--to expects HOST:PORT") }
        var types = [String]()
        for list in args.strings("type") {
            for name in list.split(separator: ",") {
                guard EventType(name: name) != nil else { throw .usage("subscribe", "--type: unknown event type \"\(name)\"") }
                types.append(String(name))
            }
        }
        let limit = try args.uint("limit") ?? UInt64.max
        var request = "{"
        var fields = [String]()
        if let from = try args.uint("from-seq") {
            guard from >= 1 else { throw .usage("subscribe", "--from-seq must be at least 1") }
            fields.append("\"from_seq\":\(from)")
        }
        if !types.isEmpty { fields.append("\"types\":[" + types.map { "\"\($0)\"" }.joined(separator: ",") + "]") }
        if args.has("alerts") { fields.append("\"alerts\":true") }
        if args.has("no-events") { fields.append("\"events\":false") }
        request += fields.joined(separator: ",") + "}"

        let hello = try ClientAuth.hello(args)
        let client: FramedClient
        do { client = try FramedClient(endpoint, payloadBytesMax: 1 << 20, first: (hello.map { [$0] } ?? []) + [Frame(.subscribe, id: 1, text: request)]) } catch {
            throw .failure("subscribe", "\(error)")
        }
        let out = OutputStream(fd: 1, flushBytes: 0)
        var printed: UInt64 = 0
        var lastSeq: UInt64 = 0
        while true {
            let next: Frame?
            do { next = try client.next() } catch { throw .failure("subscribe", error.reason) }
            guard let frame = next else {
                throw .failure("subscribe", "the server closed the connection" + (lastSeq > 0 ? " after seq \(lastSeq); resume with --from-seq \(lastSeq + 1)" : ""))
            }
            do {
                switch frame.type {
                case .welcome:
                    break
                case .subscribed:
                    printError("subscribe: \(frame.text)")
                case .event, .alert:
                    if frame.type == .event, let range = frame.text.range(of: "\"seq\":") {
                        lastSeq = UInt64(frame.text[range.upperBound...].prefix(while: { $0.isNumber })) ?? lastSeq
                    }
                    try out.write(frame.text + "\n")
                    printed += 1
                    if printed >= limit { client.close(); return 0 }
                case .error:
                    throw CLIError.failure("subscribe", "server: \(frame.text)")
                default:
                    break
                }
            } catch let e as CLIError { throw e } catch { throw .failure("subscribe", "\(error)") }
        }
    }
}
