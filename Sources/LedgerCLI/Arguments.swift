import LedgerModel
/// A small, strict command-line parser: `--name value`, `--name=value`, `--flag`, positionals.
/// Unknown options are errors, so a typo never silently changes what a command does.
struct Arguments {
    struct Spec {
        var options: Set<String> = []   // take a value
        var flags: Set<String> = []     // take none
        var positionalsMax = 0
    }

    private(set) var values: [String: [String]] = [:]
    private(set) var flags: Set<String> = []
    private(set) var positionals: [String] = []

    init(_ arguments: [String], spec: Spec, command: String) throws(CLIError) {
        var i = 0
        var onlyPositionals = false
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            if onlyPositionals || !a.hasPrefix("--") || a == "-" {
                if a.hasPrefix("-") && a != "-" && !onlyPositionals { throw .usage(command, "unknown option \(a)") }
                positionals.append(a)
                continue
            }
            if a == "--" { onlyPositionals = true; continue }
            var name = String(a.dropFirst(2))
            var inlineValue: String?
            if let eq = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if spec.flags.contains(name) {
                guard inlineValue == nil else { throw .usage(command, "--\(name) takes no value") }
                flags.insert(name)
            } else if spec.options.contains(name) {
                let value: String
                if let inlineValue { value = inlineValue } else {
                    guard i < arguments.count else { throw .usage(command, "--\(name) needs a value") }
                    value = arguments[i]
                    i += 1
                }
                values[name, default: []].append(value)
            } else {
                throw .usage(command, "unknown option --\(name)")
            }
        }
        if positionals.count > spec.positionalsMax {
            throw .usage(command, "unexpected argument \(positionals[spec.positionalsMax])")
        }
        self.command = command
    }

    let command: String

    func has(_ flag: String) -> Bool { flags.contains(flag) }
    func string(_ name: String) -> String? { values[name]?.last }
    func strings(_ name: String) -> [String] { values[name] ?? [] }

    func required(_ name: String) throws(CLIError) -> String {
        guard let v = string(name) else { throw .usage(command, "--\(name) is required") }
        return v
    }

    func int(_ name: String, range: ClosedRange<Int64> = Int64.min...Int64.max) throws(CLIError) -> Int64? {
        guard let text = string(name) else { return nil }
        let cleaned = text.replacingUnderscores()
        guard let v = Int64(cleaned) ?? Int64(exactlyScaled: cleaned) else { throw .usage(command, "--\(name) expects an integer, got \"\(text)\"") }
        guard range.contains(v) else { throw .usage(command, "--\(name) must be within \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    func double(_ name: String, range: ClosedRange<Double>) throws(CLIError) -> Double? {
        guard let text = string(name) else { return nil }
        guard let v = Double(text), v.isFinite else { throw .usage(command, "--\(name) expects a number, got \"\(text)\"") }
        guard range.contains(v) else { throw .usage(command, "--\(name) must be within \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    /// A point in time: epoch milliseconds or an RFC 3339 string.
    func time(_ name: String) throws(CLIError) -> Int64? {
        guard let text = string(name) else { return nil }
        if let ms = Int64(text) { return ms }
        do { return try Timestamp.parse(text) } catch {
            throw .usage(command, "--\(name) expects epoch milliseconds or an RFC 3339 time: \(error)")
        }
    }

    func uint(_ name: String) throws(CLIError) -> UInt64? {
        guard let v = try int(name, range: 0...Int64.max) else { return nil }
        return UInt64(v)
    }
}

extension String {
    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

extension Int64 {
    /// Accepts `10M`, `500k`, `2G` for counts (decimal multiples).
    init?(exactlyScaled text: String) {
        guard let last = text.last, let base = Int64(text.dropLast()) else { return nil }
        let factor: Int64
        switch last {
        case "k", "K": factor = 1_000
        case "m", "M": factor = 1_000_000
        case "g", "G": factor = 1_000_000_000
        default: return nil
        }
        let (v, overflow) = base.multipliedReportingOverflow(by: factor)
        if overflow { return nil }
        self = v
    }
}

struct CLIError: Error, CustomStringConvertible {
    let message: String
    let exitCode: Int32

    var description: String { message }

    static func usage(_ command: String, _ message: String) -> CLIError {
        CLIError(message: "tokenledger \(command): \(message)\nrun 'tokenledger \(command) --help' for usage", exitCode: 2)
    }

    static func failure(_ command: String, _ message: String, exitCode: Int32 = 1) -> CLIError {
        CLIError(message: "tokenledger \(command): \(message)", exitCode: exitCode)
    }
}
