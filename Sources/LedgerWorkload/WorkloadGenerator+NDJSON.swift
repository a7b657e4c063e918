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
    /// Output is flushed in chunks of this size: large enough that syscalls cost nothing next to
    /// encoding, small enough to stay in L2/L3 while being filled.
    static let flushBytes = 1 << 20
    /// `progress` is called each time this many more events have been written, and at the end.
    public static let progressEvents = 1 << 16

    /// Generates the workload of `config` and streams it to `fd` as NDJSON (one `NDJSONEncoder`
    /// line per event, no `seq`). The descriptor is not closed.
    /// - Parameter progress: receives the number of events written so far.
    /// - Throws: `WorkloadWriteError` when a write fails (EINTR is retried, EAGAIN waits for the
    ///   descriptor to become writable).
    @discardableResult
    public static func writeNDJSON(_ config: WorkloadConfiguration, to fd: Int32,
                                   progress: ((Int) -> Void)? = nil) throws -> WorkloadSummary {
        var generator = WorkloadGenerator(config)
        var buffer = [UInt8]()
        buffer.reserveCapacity(flushBytes + 64 * 1024)
        var written = 0
        var nextProgress = progressEvents
        while let event = generator.next() {
            NDJSONEncoder.append(event, to: &buffer)
            if buffer.count >= flushBytes {
                try writeAll(buffer, to: fd, alreadyWritten: &written)
                buffer.removeAll(keepingCapacity: true)
                if generator.emitted >= nextProgress {
                    progress?(generator.emitted)
                    nextProgress = (generator.emitted / progressEvents + 1) * progressEvents
                }
            }
        }
        try writeAll(buffer, to: fd, alreadyWritten: &written)
        progress?(generator.emitted)
        return WorkloadSummary(events: generator.emitted, bytes: written, countsByType: generator.countsByType,
                               scenario: generator.scenario)
    }

    private static func writeAll(_ bytes: [UInt8], to fd: Int32, alreadyWritten: inout Int) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n > 0 {
                    offset += n
                    alreadyWritten += n
                    continue
                }
                let error = n < 0 ? Glibc.errno : EIO
                if error == EINTR { continue }
                if error == EAGAIN || error == EWOULDBLOCK {
                    var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&descriptor, 1, -1)
                    continue
                }
                throw WorkloadWriteError(errno: error, bytesWritten: alreadyWritten)
            }
        }
    }
}
