import Glibc

/// Entry point of the `tokenledger` executable. Exit codes: 0 success, 1 the work failed
/// (invalid input, damaged ledger, failed verification), 2 usage error.
public enum CommandLineTool {
    struct Command: Sendable {
        let name: String
        let summary: String
        let usage: String
        let run: @Sendable ([String]) throws(CLIError) -> Int32
    }

    static let commands: [Command] = [
        Command(name: "gen", summary: "write a seeded, realistic workload as NDJSON", usage: GenCommand.usage, run: GenCommand.run),
        Command(name: "append", summary: "import NDJSON events into a ledger (offline)", usage: AppendCommand.usage, run: AppendCommand.run),
        Command(name: "serve", summary: "take events over TCP (line and framed modes), group commit", usage: ServeCommand.usage, run: ServeCommand.run),
        Command(name: "send", summary: "stream NDJSON to a server in framed mode, acknowledged", usage: SendCommand.usage, run: SendCommand.run),
        Command(name: "subscribe", summary: "follow new events and anomaly alerts live from a server", usage: SubscribeCommand.usage, run: SubscribeCommand.run),
        Command(name: "replay", summary: "stream events from a ledger, filtered", usage: ReplayCommand.usage, run: ReplayCommand.run),
        Command(name: "state", summary: "token state at the head or any point in history", usage: StateCommand.usage, run: StateCommand.run),
        Command(name: "token", summary: "one token's timeline, refresh chain and anomalies", usage: TokenCommand.usage, run: TokenCommand.run),
        Command(name: "markers", summary: "the deployment timeline with chain hashes", usage: MarkersCommand.usage, run: MarkersCommand.run),
        Command(name: "metrics", summary: "metrics in the Prometheus text format", usage: MetricsCommand.usage, run: MetricsCommand.run),
        Command(name: "rollback", summary: "plan or apply a rollback to a deployment marker", usage: RollbackCommand.usage, run: RollbackCommand.run),
        Command(name: "verify", summary: "re-check every block and the hash chain", usage: VerifyCommand.usage, run: VerifyCommand.run),
        Command(name: "digest", summary: "print a signed chain head", usage: DigestCommand.usage, run: DigestCommand.run),
        Command(name: "info", summary: "show a ledger's head, segments and size", usage: InfoCommand.usage, run: InfoCommand.run),
        Command(name: "bench", summary: "measure ingest, storage, replay and verify against LZ4/SHA-256", usage: BenchCommand.usage, run: BenchCommand.run),
    ]

    static var overview: String {
        var text = """
        tokenledger — a tamper-evident ledger of API-gateway token lifecycles

        usage: tokenledger <command> [options]

        commands:

        """
        for c in commands { text += "  " + c.name.padding(8) + c.summary + "\n" }
        text += "\nrun 'tokenledger <command> --help' for a command's options.\n"
        return text
    }

    public static func main(_ arguments: [String]) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        guard let name = arguments.first else {
            printError(overview)
            return 2
        }
        if name == "--help" || name == "-h" || name == "help" {
            print(overview, terminator: "")
            return 0
        }
        guard let command = commands.first(where: { $0.name == name }) else {
            printError("tokenledger: unknown command '\(name)'\n\n" + overview)
            return 2
        }
        let rest = Array(arguments.dropFirst())
        if rest.contains("--help") || rest.contains("-h") {
            print(command.name == "bench" && rest.first == "projections" ? ProjectionBench.usage
                  : command.name == "bench" && rest.first == "server" ? ServerBench.usage
                  : command.name == "bench" && rest.first == "index" ? IndexBench.usage : command.usage)
            return 0
        }
        do {
            return try command.run(rest)
        } catch {
            if !error.message.isEmpty { printError(error.message) }
            return error.exitCode
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
