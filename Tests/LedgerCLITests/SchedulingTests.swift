import CThreads
import Foundation
import Glibc
import LedgerModel
import LedgerProjection
@testable import LedgerServer
import XCTest

/// What `serve` asks of the scheduler: named threads, and by default a committer at SCHED_FIFO,
/// or, where that is not permitted, a log line saying why and a server that works as usual
/// (`--commit-priority realtime`: no server; `normal`: not asked).
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

    func testThreadsAreNamedAndTheCommitterIsRealTimeByDefaultWherePermitted() throws {
        let dir = CLI.temporaryDirectory("realtime")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir)
        defer { server.killIfRunning() }
        XCTAssertTrue(try acknowledgedOneBatch(server))
        let names = threads(of: server.process.processIdentifier)
        for name in ["tl-accept", "tl-commit", "tl-project"] { XCTAssertNotNil(names[name], "\(name) in \(names.keys.sorted())") }
        if server.stderr.contains("real-time priority for the committer:") {
            XCTAssertTrue(server.stderr.contains("needs CAP_SYS_NICE"), server.stderr)
            XCTAssertEqual(names["tl-commit"], [0], "refused: the committer runs at normal priority")
        } else {
            XCTAssertEqual(names["tl-commit"], [1], "the committer runs in SCHED_FIFO")
            XCTAssertTrue(server.stderr.contains("committer at real-time priority"), server.stderr)
            // Caught up, the projector yields the cores (SCHED_IDLE is 5).
            XCTAssertEqual(names["tl-project"], [5], "the projector is in SCHED_IDLE while caught up")
            // Threads started after the committer (connection readers and writers among them) stay ordinary.
            XCTAssertEqual(Set(names.filter { $0.key != "tl-commit" && $0.key != "tl-project" }.values.flatMap { $0 }), [0], "only the committer is real-time: \(names)")
        }
        XCTAssertEqual(server.terminate(), 0)
    }

    func testCommitPriorityNormalNeverAsks() throws {
        let dir = CLI.temporaryDirectory("realtime-normal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir, arguments: ["--commit-priority", "normal"])
        defer { server.killIfRunning() }
        XCTAssertTrue(try acknowledgedOneBatch(server))
        XCTAssertEqual(threads(of: server.process.processIdentifier)["tl-commit"], [0])
        XCTAssertFalse(server.stderr.contains("real-time"), server.stderr)
        XCTAssertEqual(server.terminate(), 0)
    }

    /// The EEVDF slice (`se.slice` in /proc/PID/task/TID/sched, ns) of each thread named `name`.
    func slices(of pid: Int32, named name: String) -> [Int] {
        guard let tids = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return [] }
        return tids.compactMap { tid in
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8),
                  comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
                  let sched = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/sched", encoding: .utf8),
                  let line = sched.split(separator: "\n").first(where: { $0.hasPrefix("se.slice") }) else { return nil }
            return Int(line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
        }
    }

    /// A framed reader's slice follows its connection's frames: long while it parses bulk
    /// batches (turns longer than a parse), short while the frames are small (a revocation feed).
    func testAFramedReadersSliceFollowsTheSizeOfItsFrames() throws {
        let dir = CLI.temporaryDirectory("slices")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try ServerProcess(directory: dir)
        defer { server.killIfRunning() }
        let pid = server.process.processIdentifier
        guard FileManager.default.fileExists(atPath: "/proc/\(pid)/sched"),
              (try? String(contentsOfFile: "/proc/\(pid)/sched", encoding: .utf8))?.contains("se.slice") == true else {
            throw XCTSkip("this kernel shows no se.slice (EEVDF custom slices are Linux 6.12+)")
        }
        let c = try TestConnection(server.endpoint)
        defer { c.close() }
        try c.openFramed()
        let bulk = (0..<1000).map { "{\"type\":\"issued\",\"ts\":\(1_000 + $0),\"token\":\"bulk-token-\($0)\",\"exp\":99999,\"sub\":\"user-\($0)\"}\n" }.joined()
        XCTAssertGreaterThan(bulk.utf8.count, 64 << 10)
        try c.write(Frame(.batch, id: 1, text: bulk))
        XCTAssertEqual(try c.readFrame()?.type, .ack)
        XCTAssertEqual(slices(of: pid, named: "tl-conn-read"), [8_000_000], "bulk batches: 8 ms slices")
        try c.write(Frame(.batch, id: 2, text: "{\"type\":\"revoked\",\"ts\":5000,\"token\":\"bulk-token-1\"}\n"))
        XCTAssertEqual(try c.readFrame()?.type, .ack)
        XCTAssertEqual(slices(of: pid, named: "tl-conn-read"), [100_000], "small frames: 0.1 ms slices")
        XCTAssertEqual(ReaderSlice(payloadBytes: 64 << 10), .short)
        XCTAssertEqual(ReaderSlice(payloadBytes: (64 << 10) + 1), .bulk)
        XCTAssertEqual(server.terminate(), 0)
    }

    /// The projector's priority follows its backlog, with a gap between the two bounds.
    func testTheProjectorYieldsOnlyWhileCaughtUp() {
        let high = LiveProjection.idleBacklogMax, low = LiveProjection.idleResumeBelow
        XCTAssertLessThan(low, high)
        XCTAssertTrue(LiveProjection.staysIdle(idle: true, backlog: 0))
        XCTAssertTrue(LiveProjection.staysIdle(idle: true, backlog: high))
        XCTAssertFalse(LiveProjection.staysIdle(idle: true, backlog: high + 1), "behind: normal priority")
        XCTAssertFalse(LiveProjection.staysIdle(idle: false, backlog: low), "inside the gap it stays normal")
        XCTAssertFalse(LiveProjection.staysIdle(idle: false, backlog: high))
        XCTAssertTrue(LiveProjection.staysIdle(idle: false, backlog: low - 1), "caught up again: idle")
    }

    /// A reader waiting for the projector (an HTTP answer that must see an acknowledged write)
    /// takes it out of SCHED_IDLE until it has applied that far; then it yields again.
    func testAReaderWaitingForTheProjectorBringsItOutOfIdle() throws {
        let live = LiveProjection(Projection(), yieldsWhileCaughtUp: true)
        defer { live.stop() }
        func eventually(_ what: String, _ condition: () -> Bool) {
            let deadline = Date().addingTimeInterval(5)
            while !condition() && Date() < deadline { usleep(1000) }
            XCTAssertTrue(condition(), what)
        }
        // Without the privilege to come back it never goes (the server-process test checks the
        // policy as nobody); with it, it is idle, boosted while a reader waits, idle again.
        let permitted = tl_can_leave_idle() == 1
        if permitted { eventually("idle while caught up") { live.isIdle } } else { usleep(50_000); XCTAssertFalse(live.isIdle) }
        let answered = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var seen: UInt64 = 0
        Thread.detachNewThread {
            live.withProjection(upTo: 2) { seen = $0.lastSeq }
            answered.signal()
        }
        eventually("not idle while a reader waits") { !live.isIdle }
        func issued(_ token: String) -> Event { Event(type: .issued, ts: 1_000, token: token) }
        live.enqueue(firstSeq: 1, batches: [.events([issued("a"), issued("b")])])
        XCTAssertEqual(answered.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(seen, 2)
        // The next work it takes, caught up and with nobody waiting, it yields again.
        live.enqueue(firstSeq: 3, batches: [.events([issued("c")])])
        if permitted { eventually("idle again") { live.isIdle } } else { usleep(50_000); XCTAssertFalse(live.isIdle) }
    }

    func testAnUnknownCommitPriorityIsAUsageError() throws {
        let r = try CLI.run(["serve", "--data", CLI.temporaryDirectory("realtime-bad"), "--commit-priority", "high"])
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("--commit-priority must be auto, realtime or normal, got \"high\""), r.stderr)
    }

    /// A copy of the binary nobody can run wherever the checkout is (a home directory may be
    /// closed to it), and a data directory nobody can write.
    func asNobody(_ name: String) throws -> (dir: String, launcher: [String], cleanup: () -> Void) {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root (to drop to nobody) and setpriv")
        }
        let dir = CLI.temporaryDirectory(name)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o777)
        let binary = "/tmp/tokenledger-nobody-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: binary)
        try FileManager.default.copyItem(atPath: CLI.binary, toPath: binary)
        chmod(binary, 0o755)
        return (dir, ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", binary],
                { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: binary) })
    }

    /// Without the privilege (run as nobody, when the tests run as root), the default says why
    /// and the server works as usual.
    func testWithoutThePrivilegeTheServerSaysWhyAndRunsAsUsual() throws {
        let (dir, launcher, cleanup) = try asNobody("realtime-refused")
        defer { cleanup() }
        let server = try ServerProcess(directory: dir, launcher: launcher, binary: nil)
        defer { server.killIfRunning() }
        XCTAssertTrue(try acknowledgedOneBatch(server))
        XCTAssertTrue(server.stderr.contains("real-time priority for the committer: Operation not permitted (needs CAP_SYS_NICE, or LimitRTPRIO=1 under systemd); the committer runs at normal priority"),
                      server.stderr)
        XCTAssertFalse(server.stderr.contains("committer at real-time priority"), server.stderr)
        let names = threads(of: server.process.processIdentifier)
        XCTAssertEqual(names["tl-commit"], [0])
        // It could not come back from SCHED_IDLE, so it never goes there.
        XCTAssertEqual(names["tl-project"], [0])
        XCTAssertEqual(server.terminate(), 0)
    }

    /// Asked for explicitly, real-time is required: refused, the server does not start (and
    /// says why) rather than run without what the operator asked for.
    func testRealtimeAskedForAndRefusedDoesNotStart() throws {
        let (dir, launcher, cleanup) = try asNobody("realtime-required")
        defer { cleanup() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launcher[0])
        process.arguments = Array(launcher.dropFirst()) + ["serve", "--data", dir, "--listen", "127.0.0.1:0", "--commit-priority", "realtime"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 1, text)
        XCTAssertTrue(text.contains("serve: real-time priority for the committer: Operation not permitted"), text)
        XCTAssertTrue(text.contains("--commit-priority auto runs without it"), text)
    }
}
