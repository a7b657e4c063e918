// Token ids and per-token records, sized for ten million tokens in well under 2 GiB.
//
// Swift `String` keys in a `Dictionary` cost about 140 bytes per 36-byte id (heap object, array
// slot, dictionary entry) and doubling arrays need twice the memory while they grow. Here ids
// live as raw UTF-8 in 1 MiB arena pages, records in fixed pages of 64k, and an open-addressing
// table of 32-bit slots maps ids to record numbers: about 140 bytes per token in all, with no
// copy on growth except the slot table's.
//
// Sub, client, release, track, token type, scope and revocation reason are numbers into the
// projection's `NameTable` (distinct strings stored once).
import Glibc
import LedgerCrypto
import LedgerModel

/// What the ledger knows about one token (PRODUCT.md "Token state rules"). Times are epoch ms.
/// Everything here is a fact about events applied; the status is derived from it with a clock.
///
/// Layout: 88 bytes a record (stride), the same with `scope` as before it. The two flag bits live
/// in the top byte of the creation seq's word (sequence numbers stay below 2^56: 72 quadrillion
/// events), so adding a 32-bit name did not push the stride from 88 to 96.
struct TokenRecord {
    static let none = UInt32.max
    /// Sequence numbers a record can hold (`createdSeq`, `revokedSeq`): below 2^56.
    static let seqMask: UInt64 = (1 << 56) - 1

    /// Low 56 bits: `createdSeq`; top 8 bits: `flags`.
    private var createdSeqAndFlags: UInt64 = 0
    /// Sequence number of the first `issued` event, or `refreshed` event naming it as the new
    /// token; 0 when nothing created it. Kept in 56 bits (higher bits are dropped).
    var createdSeq: UInt64 {
        @inline(__always) get { createdSeqAndFlags & TokenRecord.seqMask }
        @inline(__always) set { createdSeqAndFlags = (createdSeqAndFlags & ~TokenRecord.seqMask) | (newValue & TokenRecord.seqMask) }
    }
    /// `superseded`, `expiredEvent`.
    var flags: UInt8 {
        @inline(__always) get { UInt8(truncatingIfNeeded: createdSeqAndFlags >> 56) }
        @inline(__always) set { createdSeqAndFlags = (createdSeqAndFlags & TokenRecord.seqMask) | UInt64(newValue) << 56 }
    }
    var issuedAt: Int64 = 0
    /// Expiry from the creating event; `Int64.max` when it carried none.
    var exp: Int64 = .max
    /// Largest `ts` of the events naming it as `token`.
    var lastSeen: Int64 = .min
    /// Sequence number of the first `revoked` event naming it; 0 when never revoked.
    var revokedSeq: UInt64 = 0
    var revokedAt: Int64 = 0
    var useCount: UInt32 = 0
    var sub: UInt32 = none
    var client: UInt32 = none
    var release: UInt32 = none
    var track: UInt32 = none
    var tokenType: UInt32 = none
    /// `scope` of the creating event (the first one, like `exp`), as one interned name: the
    /// whole space-separated string, not its parts.
    var scope: UInt32 = none
    var revokeReason: UInt32 = none
    /// Record numbers of the token it replaced and the token that replaced it.
    var parent: UInt32 = none
    var child: UInt32 = none

    static let superseded: UInt8 = 1
    static let expiredEvent: UInt8 = 2

    var isCreated: Bool { createdSeq != 0 }
    var isRevoked: Bool { revokedSeq != 0 }
    var isSuperseded: Bool { flags & TokenRecord.superseded != 0 }

    /// The rules, first match wins: revoked, superseded, expired, active; else unknown.
    @inline(__always) func status(clock: Int64) -> TokenStatus {
        if revokedSeq != 0 { return .revoked }
        let f = flags
        if f & TokenRecord.superseded != 0 { return .superseded }
        if f & TokenRecord.expiredEvent != 0 || exp <= clock { return .expired }
        if createdSeq != 0 { return .active }
        return .unknown
    }
}

/// Fixed-size pages of records: growth allocates one page, never copies the others.
final class RecordPages {
    static let shift = 16
    static let pageCount = 1 << shift
    private(set) var pages: [UnsafeMutablePointer<TokenRecord>] = []
    private(set) var count = 0

    deinit { for p in pages { p.deallocate() } }

    @inline(__always) subscript(_ i: UInt32) -> TokenRecord {
        get { pages[Int(i) >> RecordPages.shift][Int(i) & (RecordPages.pageCount - 1)] }
        set { pages[Int(i) >> RecordPages.shift][Int(i) & (RecordPages.pageCount - 1)] = newValue }
    }

    @inline(__always) func pointer(_ i: UInt32) -> UnsafeMutablePointer<TokenRecord> {
        pages[Int(i) >> RecordPages.shift] + (Int(i) & (RecordPages.pageCount - 1))
    }

    func append(_ record: TokenRecord) -> UInt32 {
        if count == pages.count << RecordPages.shift {
            let page = UnsafeMutablePointer<TokenRecord>.allocate(capacity: RecordPages.pageCount)
            pages.append(page)
        }
        let i = count
        (pages[i >> RecordPages.shift] + (i & (RecordPages.pageCount - 1))).initialize(to: record)
        count += 1
        return UInt32(i)
    }

    func copy() -> RecordPages {
        let c = RecordPages()
        for (n, p) in pages.enumerated() {
            let page = UnsafeMutablePointer<TokenRecord>.allocate(capacity: RecordPages.pageCount)
            let used = min(RecordPages.pageCount, count - n * RecordPages.pageCount)
            page.initialize(from: p, count: used)
            c.pages.append(page)
        }
        c.count = count
        return c
    }
}

/// Token id → record number. Ids are stored once, as UTF-8, in arena pages.
final class TokenIDTable {
    /// Ids longer than this (never written by the ledger's own decoder, which fingerprints
    /// anything over 128 bytes) are fingerprinted here too, so a crafted block cannot make one
    /// id span arena pages.
    static let idBytesMax = 4095
    private static let arenaPageBytes = 1 << 20
    /// A per-process seed, so ids chosen to collide on one machine do not on another.
    private static let seed: UInt64 = UInt64.random(in: 0...UInt64.max)

    private var arena: [UnsafeMutablePointer<UInt8>] = []
    private var arenaUsed = TokenIDTable.arenaPageBytes
    /// Per record: arena page << 32 | offset << 12 | length.
    private var locations: [UInt64] = []
    /// Open addressing, linear probing. A slot is the id's 32-bit hash tag << 32 | record + 1
    /// (0 = empty): the tag spares a byte comparison on almost every probe that misses, and
    /// growing re-places slots from their tags without hashing any id again.
    private var slots: UnsafeMutablePointer<UInt64>
    private var slotMask: Int
    var count: Int { locations.count }

    init(capacity: Int = 0) {
        var size = 1024
        while size * 7 < capacity * 10 { size *= 2 }
        slotMask = size - 1
        slots = .allocate(capacity: size)
        slots.initialize(repeating: 0, count: size)
        locations.reserveCapacity(capacity)
    }

    deinit {
        slots.deallocate()
        for p in arena { p.deallocate() }
    }

    @inline(__always) private static func tag(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH64.hash(bytes, seed: seed) >> 32
    }

    @inline(__always) func bytes(of index: UInt32) -> UnsafeRawBufferPointer {
        let loc = locations[Int(index)]
        let page = Int(loc >> 32), offset = Int((loc >> 12) & 0xFFFFF), length = Int(loc & 0xFFF)
        return UnsafeRawBufferPointer(start: arena[page] + offset, count: length)
    }

    func id(_ index: UInt32) -> String {
        String(decoding: bytes(of: index), as: UTF8.self)
    }

    func find(_ id: String) -> UInt32? {
        var s = id
        return s.withUTF8 { find(UnsafeRawBufferPointer($0)) }
    }

    func find(_ bytes: UnsafeRawBufferPointer) -> UInt32? {
        if !indexed { buildIndex() }
        guard bytes.count <= TokenIDTable.idBytesMax else {
            return find(TokenFingerprint.normalize(String(decoding: bytes, as: UTF8.self)))
        }
        return probe(bytes, tag: TokenIDTable.tag(bytes)).found
    }

    /// Linear probing from the tag's slot: the id's record, or the empty slot where it would go.
    @inline(__always) private func probe(_ bytes: UnsafeRawBufferPointer, tag: UInt64) -> (found: UInt32?, slot: Int) {
        var i = Int(tag) & slotMask
        while true {
            let s = slots[i]
            if s == 0 { return (nil, i) }
            if s >> 32 == tag, equal(UInt32(truncatingIfNeeded: s) - 1, bytes) { return (UInt32(truncatingIfNeeded: s) - 1, i) }
            i = (i + 1) & slotMask
        }
    }

    @inline(__always) private func equal(_ index: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let stored = self.bytes(of: index)
        return stored.count == bytes.count && (bytes.count == 0 || memcmp(stored.baseAddress!, bytes.baseAddress!, bytes.count) == 0)
    }

    /// - Returns: the id's record number and whether it was new (the caller appends its record).
    func findOrInsert(_ id: String) -> (UInt32, Bool) {
        var s = id
        return s.withUTF8 { findOrInsert(UnsafeRawBufferPointer($0)) }
    }

    func findOrInsert(_ bytes: UnsafeRawBufferPointer) -> (UInt32, Bool) {
        if !indexed { buildIndex() }
        guard bytes.count <= TokenIDTable.idBytesMax else {
            return findOrInsert(TokenFingerprint.normalize(String(decoding: bytes, as: UTF8.self)))
        }
        let tag = TokenIDTable.tag(bytes)
        let (found, slot) = probe(bytes, tag: tag)
        if let found { return (found, false) }
        let index = UInt32(locations.count)
        store(bytes)
        slots[slot] = tag << 32 | UInt64(index + 1)
        if locations.count * 10 > (slotMask + 1) * 7 { grow() }
        return (index, true)
    }

    private func store(_ bytes: UnsafeRawBufferPointer) {
        if arena.isEmpty || arenaUsed + bytes.count > TokenIDTable.arenaPageBytes {
            arena.append(.allocate(capacity: TokenIDTable.arenaPageBytes))
            arenaUsed = 0
        }
        let page = arena.count - 1
        if bytes.count > 0 { memcpy(arena[page] + arenaUsed, bytes.baseAddress!, bytes.count) }
        locations.append(UInt64(page) << 32 | UInt64(arenaUsed) << 12 | UInt64(bytes.count))
        arenaUsed += bytes.count
    }

    /// Loading a snapshot appends ids without indexing them: a summary or a plan never looks an
    /// id up, and hashing a million ids into a cold table was a quarter of the load time.
    private(set) var indexed = true

    /// Appends an id known to be new (a snapshot's ids were unique when written). Only valid
    /// before the first lookup.
    func appendUnindexed(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count <= TokenIDTable.idBytesMax)
        indexed = false
        store(bytes)
    }

    private func buildIndex() {
        indexed = true
        var size = slotMask + 1
        while size * 7 < locations.count * 10 { size *= 2 }
        slots.deallocate()
        slotMask = size - 1
        slots = .allocate(capacity: size)
        slots.initialize(repeating: 0, count: size)
        for index in 0..<UInt32(locations.count) {
            let tag = TokenIDTable.tag(bytes(of: index))
            var i = Int(tag) & slotMask
            while slots[i] != 0 { i = (i + 1) & slotMask }
            slots[i] = tag << 32 | UInt64(index + 1)
        }
    }

    private func grow() {
        let newMask = (slotMask + 1) * 2 - 1
        let newSlots = UnsafeMutablePointer<UInt64>.allocate(capacity: newMask + 1)
        newSlots.initialize(repeating: 0, count: newMask + 1)
        for j in 0...slotMask where slots[j] != 0 {
            var i = Int(slots[j] >> 32) & newMask
            while newSlots[i] != 0 { i = (i + 1) & newMask }
            newSlots[i] = slots[j]
        }
        slots.deallocate()
        slots = newSlots
        slotMask = newMask
    }

    func copy() -> TokenIDTable {
        let c = TokenIDTable(capacity: locations.count)
        for index in 0..<UInt32(locations.count) { _ = c.findOrInsert(bytes(of: index)) }
        return c
    }

    /// Bytes held, for the memory figures in BENCHMARKS.md.
    var residentBytes: Int { arena.count * TokenIDTable.arenaPageBytes + locations.capacity * 8 + (slotMask + 1) * 8 }
}
