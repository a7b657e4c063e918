import Foundation
import Glibc
import LedgerModel
import LedgerServer
import XCTest

/// What `serve` asks of the scheduler: named threads, and with `--realtime-commit` a committer
/// at SCHED_FIFO, or, where that is not permitted, a log line saying why and a server that
/// works as usual.
final class SchedulingTests: XCTestCase {
    /// Thread name → scheduling policy (field 41 of /proc/PID/task/TID/stat; 1 is SCHED_FIFO).
    func threads(of pid: Int32) -> [String: [Int]] {
        var out = [String: [Int]]()
        guard let tids = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return out }
        for tid in tids {
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after the name: state is field 3, so policy (41) is index 38 here.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 38, let policy = Int(fields[38]) else { continue }
            out[comm.trimmingCharacters(in: .whitespacesAndNewlines), default: []].append(policy)
        }
        return out
    }

    func acknowledgedOneBatch(_ server: ServerProcess) throws -> Bool {
        let c = try TestConnection(server.endpoint)
        defer { c.close() }
        try c.openFramed()
        try c.write(Frame(.batch, id: 7, text: "{\"type\":\"issued\",\"ts\":1,\"token\":\"t\",\"exp\":9}\n"))
        return try c.readFrame()?.type == .ack
    }

    func testThreadsAreNamedAndTheCommitterIsRealTimeWhenAskedAndPermitted() throws {
        let dir = CLI.temporaryDirectory("realtime")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir, arguments: ["--realtime-commit"])
        defer { server.killIfRunning() }
        XCTAssertTrue(try acknowledgedOneBatch(server))
        let names = threads(of: server.process.processIdentifier)
        for name in ["tl-accept", "tl-commit", "tl-project"] { XCTAssertNotNil(names[name], "\(name) in \(names.keys.sorted())") }
        if server.stderr.contains("--realtime-commit:") {
            XCTAssertTrue(server.stderr.contains("needs CAP_SYS_NICE"), server.stderr)
            XCTAssertEqual(names["tl-commit"], [0], "refused: the committer runs at normal priority")
        } else {
            XCTAssertEqual(names["tl-commit"], [1], "the committer runs in SCHED_FIFO")
            XCTAssertEqual(Set(names.filter { $0.key != "tl-commit" }.values.flatMap { $0 }), [0], "only the committer is real-time")
        }
        XCTAssertEqual(server.terminate(), 0)
    }

    /// Without the privilege (run as nobody, when the tests run as root), the server says why
    /// and works as usual.
    func testWithoutThePrivilegeTheServerSaysWhyAndRunsAsUsual() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root (to drop to nobody) and setpriv")
        }
        let dir = CLI.temporaryDirectory("realtime-refused")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o777)
        // A copy nobody can run wherever the checkout is (a home directory may be closed to it).
        let binary = "/tmp/tokenledger-nobody-\(getpid())"
        try? FileManager.default.removeItem(atPath: binary)
        try FileManager.default.copyItem(atPath: CLI.binary, toPath: binary)
        defer { try? FileManager.default.removeItem(atPath: binary) }
        chmod(binary, 0o755)
        let server = try ServerProcess(directory: dir, arguments: ["--realtime-commit"],
                                       launcher: ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", binary], binary: nil)
        defer { server.killIfRunning() }
        XCTAssertTrue(try acknowledgedOneBatch(server))
        XCTAssertTrue(server.stderr.contains("--realtime-commit: Operation not permitted (needs CAP_SYS_NICE, or LimitRTPRIO=1 under systemd); the committer runs at normal priority"),
                      server.stderr)
        XCTAssertEqual(threads(of: server.process.processIdentifier)["tl-commit"], [0])
        XCTAssertEqual(server.terminate(), 0)
    }
}
