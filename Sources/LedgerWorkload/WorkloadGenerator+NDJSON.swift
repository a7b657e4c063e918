import Glibc
import LedgerModel

/// What `writeNDJSON` produced.
public struct WorkloadSummary: Sendable, Equatable {
    public var events: Int
    public var bytes: Int
    public var countsByType: [EventType: Int]
    public var scenario: WorkloadScenario
}

/// A `write(2)` on the output failed.
public struct WorkloadWriteError: Error, CustomStringConvertible, Sendable {
    public var errno: Int32
    /// Bytes successfully written before the failure.
    public var bytesWritten: Int

    public var description: String {
        "cannot write workload: \(String(cString: strerror(errno))) (errno \(errno)) after \(bytesWritten) bytes"
    }
}

extension WorkloadGenerator {
    /// Output is written in chunks of about this size: large enough that syscalls cost nothing
    /// next to encoding, small enough to stay in cache while being filled.
    static let flushBytes = 1 << 20
    /// `progress` is called each time this many more events have been written, and at the end.
    public static let progressEvents = 1 << 16

    /// Generates the workload of `config` and streams it to `fd` as NDJSON: the lines of
    /// `NDJSONEncoder.append` (no `seq`) for the events `next()` would return, byte for byte.
    /// The descriptor is not closed.
    /// - Parameter progress: receives the number of events written so far.
    /// - Throws: `WorkloadWriteError` when a write fails (EINTR is retried, EAGAIN waits for the
    ///   descriptor to become writable).
    @discardableResult
    public static func writeNDJSON(_ config: WorkloadConfiguration, to fd: Int32,
                                   progress: ((Int) -> Void)? = nil) throws -> WorkloadSummary {
        var generator = WorkloadGenerator(config)
        let encoder = DraftEncoder(subjects: generator.subjects)
        var capacity = flushBytes + encoder.fixedBytesMax + 64 * 1024
        var buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var used = 0
        var written = 0
        var nextProgress = progressEvents
        while let draft = generator.nextDraft() {
            let needed = encoder.bytesMax(draft)
            if used + needed > capacity {
                try writeAll(buffer, used, to: fd, written: &written)
                used = 0
                if needed > capacity {
                    buffer.deallocate()
                    capacity = needed
                    buffer = .allocate(capacity: capacity)
                }
            }
            used += encoder.encode(draft, to: buffer + used)
            if used >= flushBytes {
                try writeAll(buffer, used, to: fd, written: &written)
                used = 0
                if generator.emitted >= nextProgress {
                    progress?(generator.emitted)
                    nextProgress = (generator.emitted / progressEvents + 1) * progressEvents
                }
            }
        }
        try writeAll(buffer, used, to: fd, written: &written)
        progress?(generator.emitted)
        return WorkloadSummary(events: generator.emitted, bytes: written, countsByType: generator.countsByType,
                               scenario: generator.scenario)
    }

    private static func writeAll(_ bytes: UnsafeMutablePointer<UInt8>, _ count: Int, to fd: Int32, written: inout Int) throws {
        var offset = 0
        while offset < count {
            let n = Glibc.write(fd, bytes + offset, count - offset)
            if n > 0 {
                offset += n
                written += n
                continue
            }
            let error = n < 0 ? Glibc.errno : EIO
            if error == EINTR { continue }
            if error == EAGAIN || error == EWOULDBLOCK {
                var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&descriptor, 1, -1)
                continue
            }
            throw WorkloadWriteError(errno: error, bytesWritten: written)
        }
    }
}
