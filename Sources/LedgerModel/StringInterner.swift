/// Numbers distinct strings in first-seen order. Open addressing with a cheap multiplicative
/// hash over the UTF-8 bytes: the block encoder looks up ~15 strings per event, and Swift's
/// seeded SipHash `Dictionary` was a fifth of the import's time.
struct StringInterner {
    private(set) var strings: [String] = []
    private var hashes: [UInt64] = []
    /// The raw representation of each stored string (see `BlockPayloadEncoder.intern`).
    private(set) var representations: [StringRepresentation] = []
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
        let id = UInt32(strings.count)
        strings.append(value)
        hashes.append(h)
        representations.append(StringRepresentation(value))
        slots[i] = id + 1
        if strings.count * 2 > slots.count { grow() }
        return (id, true)
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
