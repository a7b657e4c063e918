import Glibc

/// Numbers distinct strings in first-seen order. Open addressing with a cheap multiplicative
/// hash over the UTF-8 bytes: the block encoder looks up ~15 strings per event, and Swift's
/// seeded SipHash `Dictionary` was a fifth of the import's time.
struct StringInterner {
    private(set) var strings: [String] = []
    private var hashes: [UInt64] = []
    /// The raw representation of each stored string (see `BlockPayloadEncoder.intern`).
    private(set) var representations: [StringRepresentation] = []
    /// Every stored string's UTF-8 bytes back to back (string k is `arena[ends[k-1] ..< ends[k]]`),
    /// so values still in their input bytes are compared without touching a String.
    private var arena: [UInt8] = []
    private var ends: [Int] = []
    /// String number + 1 per slot; 0 is empty.
    private var slots: [UInt32]
    private var mask: Int

    init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = Array(repeating: 0, count: size)
        mask = size - 1
        strings.reserveCapacity(capacity)
        hashes.reserveCapacity(capacity)
        ends.reserveCapacity(capacity)
        arena.reserveCapacity(capacity * 16)
    }

    @inline(__always) private mutating func store(_ value: String, hash h: UInt64, slot i: Int) -> UInt32 {
        let id = UInt32(strings.count)
        strings.append(value)
        hashes.append(h)
        representations.append(StringRepresentation(value))
        arena.append(contentsOf: value.utf8)
        ends.append(arena.count)
        slots[i] = id + 1
        if strings.count * 2 > slots.count { grow() }
        return id
    }

    /// Whether string `id` has exactly these bytes.
    @inline(__always) func bytesEqual(_ id: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let start = id == 0 ? 0 : ends[id &- 1]
        let n = ends[id] &- start
        guard n == bytes.count else { return false }
        return arena.withUnsafeBytes { a in StringInterner.same(a.baseAddress! + start, bytes.baseAddress, n) }
    }

    /// Byte equality without a call for the short values most fields hold.
    @inline(__always) static func same(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer?, _ n: Int) -> Bool {
        guard n > 0, let b else { return true }
        var i = 0
        while i &+ 8 <= n {
            if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i &+= 8
        }
        while i < n {
            if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
            i &+= 1
        }
        return true
    }

    var count: Int { strings.count }

    @inline(__always) static func hash(_ value: String) -> UInt64 {
        if let h = value.utf8.withContiguousStorageIfAvailable({ hashBytes(UnsafeRawBufferPointer($0)) }) { return h }
        var copy = value
        return copy.withUTF8 { hashBytes(UnsafeRawBufferPointer($0)) }
    }

    @inline(__always) static func hashBytes(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(bytes.count)
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            h = (h ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
            h ^= h >> 32
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < n {
            tail |= UInt64(bytes[i]) << shift
            shift += 8
            i += 1
        }
        h = (h ^ tail) &* 0xC4CE_B9FE_1A85_EC53
        return h ^ (h >> 29)
    }

    /// - Returns: the string's number and whether it was new.
    @inline(__always) mutating func intern(_ value: String) -> (UInt32, Bool) {
        let h = StringInterner.hash(value)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { break }
            let id = Int(slot - 1)
            if hashes[id] == h && strings[id] == value { return (UInt32(id), false) }
            i = (i + 1) & mask
        }
        return (store(value, hash: h, slot: i), true)
    }

    /// `intern` for a value still in its input bytes (valid UTF-8): a String is made only the
    /// first time the block sees the value.
    @inline(__always) mutating func intern(bytes: UnsafeRawBufferPointer) -> (UInt32, Bool) {
        let h = StringInterner.hashBytes(bytes)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { break }
            let id = Int(slot - 1)
            if hashes[id] == h && bytesEqual(id, bytes) { return (UInt32(id), false) }
            i = (i + 1) & mask
        }
        let value = String(decoding: bytes, as: UTF8.self)
        return (store(value, hash: h, slot: i), true)
    }

    @inline(__always) static func equal(_ s: String, _ bytes: UnsafeRawBufferPointer) -> Bool {
        if let r = s.utf8.withContiguousStorageIfAvailable({ u -> Bool in
            u.count == bytes.count && (u.count == 0 || memcmp(u.baseAddress!, bytes.baseAddress!, u.count) == 0)
        }) { return r }
        return s.utf8.elementsEqual(bytes)
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = Array(repeating: 0, count: size)
        mask = size - 1
        for (id, h) in hashes.enumerated() {
            var i = Int(truncatingIfNeeded: h) & mask
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = UInt32(id + 1)
        }
    }
}

/// The two machine words of a String. Equal words mean equal strings when the words are a small
/// (inline) string, or when they are the words of a string object that is known to be alive.
struct StringRepresentation: Equatable {
    var a: UInt64
    var b: UInt64

    static let none = StringRepresentation(a: 0, b: 0)

    @inline(__always) init(a: UInt64, b: UInt64) { self.a = a; self.b = b }

    @inline(__always) init(_ value: String) {
        let words = unsafeBitCast(value, to: (UInt64, UInt64).self)
        a = words.0
        b = words.1
    }
}
