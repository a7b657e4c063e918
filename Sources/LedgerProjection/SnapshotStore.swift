// The snapshots directory of a ledger: `snapshots/state-<20-digit seq>.snap`, written atomically
// (temporary file, fsync, rename, directory fsync), so a crash leaves either the old set or the
// new file whole, never a half-written one under a real name.
import Glibc
import LedgerCrypto
import LedgerModel
import LedgerStorage

public struct SnapshotInfo: Sendable {
    public let name: String
    public let fileBytes: UInt64
    /// Nil when the header does not decode; `problem` says why.
    public let header: SnapshotHeader?
    public let problem: String?
}

public final class SnapshotStore: @unchecked Sendable {
    public static let directoryName = "snapshots"
    public let directory: String
    let fs: any FileSystem

    public init(dataDirectory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = joinPath(dataDirectory, SnapshotStore.directoryName)
        self.fs = fileSystem
    }

    public static func fileName(seq: UInt64) -> String {
        let digits = String(seq)
        return "state-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".snap"
    }

    static func seq(fromFileName name: String) -> UInt64? {
        guard name.hasPrefix("state-"), name.hasSuffix(".snap"), name.utf8.count == 6 + 20 + 5 else { return nil }
        return UInt64(name.dropFirst(6).dropLast(5))
    }

    /// Every snapshot file, by sequence number, with its header or the reason it has none.
    public func list() -> [SnapshotInfo] {
        guard fs.fileExists(directory), let names = try? fs.listDirectory(directory) else { return [] }
        var out = [SnapshotInfo]()
        for name in names.sorted() {
            guard let nameSeq = SnapshotStore.seq(fromFileName: name) else { continue }
            do {
                let h = try fs.open(joinPath(directory, name), create: false, writable: false)
                defer { h.close() }
                let size = try h.size()
                let bytes = try h.read(at: 0, count: SnapshotHeader.fixedSize + SnapshotHeader.markerBytesMax)
                switch SnapshotHeader.decode(bytes) {
                case let .success(header):
                    if header.seq != nameSeq {
                        out.append(SnapshotInfo(name: name, fileBytes: size, header: nil, problem: "header says seq \(header.seq), name says \(nameSeq)"))
                    } else if UInt64(header.size) + header.storedBytes != size {
                        out.append(SnapshotInfo(name: name, fileBytes: size, header: header,
                                                problem: "file is \(size) bytes, header says \(UInt64(header.size) + header.storedBytes)"))
                    } else {
                        out.append(SnapshotInfo(name: name, fileBytes: size, header: header, problem: nil))
                    }
                case let .failure(e):
                    out.append(SnapshotInfo(name: name, fileBytes: size, header: nil, problem: "\(e)"))
                }
            } catch {
                out.append(SnapshotInfo(name: name, fileBytes: 0, header: nil, problem: "\(error)"))
            }
        }
        return out
    }

    /// Reads, checks and decodes a snapshot.
    /// - Throws: what is wrong with it, naming the byte offset.
    public func load(_ info: SnapshotInfo, options: ProjectionOptions) throws(SnapshotError) -> Projection {
        guard let header = info.header, info.problem == nil else { throw SnapshotError(offset: 0, reason: info.problem ?? "no header") }
        guard header.formatVersion == SnapshotHeader.formatVersion else {
            throw SnapshotError(offset: 4, reason: "projection format version \(header.formatVersion), this build reads \(SnapshotHeader.formatVersion)")
        }
        guard header.optionsHash == options.hash else { throw SnapshotError(offset: 64, reason: "built with other projection options") }
        let stored: [UInt8]
        do {
            let h = try fs.open(joinPath(directory, info.name), create: false, writable: false)
            defer { h.close() }
            stored = try h.read(at: UInt64(header.size), count: Int(header.storedBytes))
        } catch {
            throw SnapshotError(offset: UInt64(header.size), reason: "\(error)")
        }
        guard stored.count == Int(header.storedBytes) else { throw SnapshotError(offset: UInt64(header.size), reason: "body truncated") }
        guard XXH64.hash(stored) == header.bodyChecksum else {
            throw SnapshotError(offset: UInt64(header.size), reason: "body checksum mismatch")
        }
        let raw = try SnapshotBody.decompress(stored, rawBytes: header.rawBytes)
        let result = raw.withUnsafeBytes { b in Result { () throws(SnapshotError) in try SnapshotBody.decode(b, options: options) } }
        let p = try result.get()
        guard p.lastSeq == header.seq, p.maxTs ?? .min == header.maxTs else {
            throw SnapshotError(offset: UInt64(header.size), reason: "body is at seq \(p.lastSeq), header says \(header.seq)")
        }
        return p
    }

    /// Writes `p` as the snapshot at its `lastSeq`, stamped with the block holding that seq.
    @discardableResult
    public func write(_ p: Projection, blockLastSeq: UInt64, chainHash: Digest32, marker: String?) throws(StorageError) -> SnapshotInfo {
        if !fs.fileExists(directory) { try fs.createDirectory(directory) }
        let raw = SnapshotBody.encode(p)
        let stored = try SnapshotBody.compress(raw)
        var header = SnapshotHeader(seq: p.lastSeq, blockLastSeq: blockLastSeq, chainHash: chainHash, maxTs: p.maxTs ?? .min,
                                    optionsHash: p.options.hash, marker: marker.flatMap { $0.utf8.count <= SnapshotHeader.markerBytesMax ? $0 : nil })
        header.rawBytes = UInt64(raw.count)
        header.storedBytes = UInt64(stored.count)
        header.bodyChecksum = XXH64.hash(stored)
        let name = SnapshotStore.fileName(seq: p.lastSeq)
        // Per process: two commands replaying the same ledger at once may write the same seq.
        let temporary = joinPath(directory, "." + name + ".\(getpid()).tmp")
        let handle = try fs.open(temporary, create: true, writable: true)
        do {
            try handle.truncate(to: 0)
            try handle.write(at: 0, header.encode())
            try handle.write(at: UInt64(header.size), stored)
            try handle.sync()
            handle.close()
            try fs.rename(temporary, to: joinPath(directory, name))
            try fs.syncDirectory(directory)
        } catch {
            handle.close()
            try? fs.remove(temporary)
            throw error
        }
        return SnapshotInfo(name: name, fileBytes: UInt64(header.size) + header.storedBytes, header: header, problem: nil)
    }

    /// Keeps every marker snapshot and the newest `keepInterval` others; removes the rest.
    /// - Returns: the names removed.
    @discardableResult
    public func prune(keepInterval: Int) -> [String] {
        let interval = list().filter { $0.header?.marker == nil && $0.problem == nil }
        guard interval.count > keepInterval else { return [] }
        var removed = [String]()
        for info in interval.dropLast(max(0, keepInterval)) {
            if (try? fs.remove(joinPath(directory, info.name))) != nil { removed.append(info.name) }
        }
        return removed
    }
}
