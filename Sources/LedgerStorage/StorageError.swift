/// Errors of the storage layer. Each names the file and, where it applies, the byte offset and
/// the sequence range involved.
public enum StorageError: Error, CustomStringConvertible, Sendable, Equatable {
    /// An operating-system call failed (errno kept so callers can tell ENOSPC from EIO).
    case io(operation: String, path: String, errno: Int32)
    case corrupt(path: String, offset: UInt64, reason: String)
    case invalidArgument(String)
    /// The ledger opened read-only because of damage; appends are refused.
    case readOnly(String)
    /// A previous write or fsync failed; nothing more is acknowledged until the ledger is reopened.
    case failed(String)
    case locked(path: String)

    public var description: String {
        switch self {
        case let .io(operation, path, code): "\(operation) \(path): \(errnoName(code))"
        case let .corrupt(path, offset, reason): "\(path) at byte \(offset): \(reason)"
        case let .invalidArgument(message): message
        case let .readOnly(message): "ledger is read-only: \(message)"
        case let .failed(message): "ledger stopped accepting appends: \(message)"
        case let .locked(path): "\(path) is locked by another process (another append or serve on the same data directory?)"
        }
    }

    public var isNoSpace: Bool {
        if case let .io(_, _, code) = self { return code == ENOSPC }
        return false
    }
}

import Glibc

func errnoName(_ code: Int32) -> String {
    let name = String(cString: strerror(code))
    return "\(name) (errno \(code))"
}
