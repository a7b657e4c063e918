import Glibc
import LedgerStorage

/// Buffered writer to a file descriptor (stdout for data), flushed in large writes.
final class OutputStream {
    let fd: Int32
    var buffer: [UInt8] = []
    let flushBytes: Int
    private(set) var failed = false

    init(fd: Int32, flushBytes: Int = 1 << 20) {
        self.fd = fd
        self.flushBytes = flushBytes
        buffer.reserveCapacity(flushBytes + 65536)
    }

    @inline(__always) func flushIfNeeded() throws(CLIError) {
        if buffer.count >= flushBytes { try flush() }
    }

    func write(_ text: String) throws(CLIError) {
        buffer.append(contentsOf: text.utf8)
        try flushIfNeeded()
    }

    func flush() throws(CLIError) {
        var done = 0
        let result: Int32 = buffer.withUnsafeBytes { raw in
            while done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return 0
        }
        buffer.removeAll(keepingCapacity: true)
        if result != 0 {
            failed = true
            // A closed pipe (`| head`) is a normal way to stop reading output.
            if result == EPIPE { throw CLIError(message: "", exitCode: 0) }
            throw CLIError(message: "writing output: \(String(cString: strerror(result)))", exitCode: 1)
        }
    }
}

/// Progress lines on stderr, at most one per interval, so long work shows it is alive.
final class Progress {
    let label: String
    let intervalNs: UInt64
    var lastNs: UInt64
    let startNs: UInt64
    let enabled: Bool

    init(label: String, intervalMs: UInt64 = 1000, enabled: Bool = true) {
        self.label = label
        self.intervalNs = intervalMs * 1_000_000
        self.startNs = monotonicNanoseconds()
        self.lastNs = startNs
        self.enabled = enabled
    }

    var elapsedSeconds: Double { Double(monotonicNanoseconds() - startNs) / 1e9 }

    /// - Returns: true when a line was printed.
    @discardableResult
    func update(force: Bool = false, _ message: @autoclosure () -> String) -> Bool {
        guard enabled else { return false }
        let now = monotonicNanoseconds()
        guard force || now - lastNs >= intervalNs else { return false }
        lastNs = now
        printError("\(label): \(message())")
        return true
    }
}

func printError(_ text: String) {
    let line = text.hasSuffix("\n") ? text : text + "\n"
    var bytes = Array(line.utf8)
    bytes.withUnsafeMutableBytes { raw in
        var done = 0
        while done < raw.count {
            let n = Glibc.write(2, raw.baseAddress! + done, raw.count - done)
            if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
            done += n
        }
    }
}

func formatCount(_ value: Double) -> String {
    if value >= 1e9 { return String(format1: value / 1e9) + "G" }
    if value >= 1e6 { return String(format1: value / 1e6) + "M" }
    if value >= 1e3 { return String(format1: value / 1e3) + "k" }
    return String(Int(value))
}

extension String {
    /// One decimal place, without Foundation's locale-dependent formatting.
    init(format1 value: Double) {
        let scaled = (value * 10).rounded()
        let whole = Int(scaled) / 10
        let tenth = abs(Int(scaled) % 10)
        self = "\(whole).\(tenth)"
    }

    init(format2 value: Double) {
        let scaled = (value * 100).rounded()
        let whole = Int(scaled) / 100
        let frac = abs(Int(scaled) % 100)
        self = "\(whole)." + (frac < 10 ? "0" : "") + "\(frac)"
    }
}

/// A fixed-width table cell: "-" for nothing, cut with "…" when too long.
func tableCell(_ text: String?, _ width: Int) -> String {
    var t = text ?? "-"
    if t.count > width - 1 { t = String(t.prefix(width - 2)) + "…" }
    return t.padding(width)
}
