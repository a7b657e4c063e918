import Glibc

/// A growable buffer of plain values in raw memory: an append is a compare and a store, with no
/// uniqueness check, bounds check or retain. It is a value without ownership: whoever holds it
/// calls `deallocate()` exactly once (see `BlockPayloadEncoder`'s storage).
struct RawVec<T: BitwiseCopyable> {
    private(set) var base: UnsafeMutablePointer<T>
    var count = 0
    private(set) var capacity: Int

    init(capacity: Int) {
        self.capacity = max(16, capacity)
        base = .allocate(capacity: self.capacity)
    }

    func deallocate() { base.deallocate() }

    @inline(__always) subscript(_ i: Int) -> T {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }

    /// Makes room for `extra` more values. - Returns: where the next value goes.
    @inline(__always) mutating func reserve(_ extra: Int) -> UnsafeMutablePointer<T> {
        if capacity &- count < extra { grow(count &+ extra) }
        return base + count
    }

    @inline(never) private mutating func grow(_ needed: Int) {
        let fresh = UnsafeMutablePointer<T>.allocate(capacity: max(capacity * 2, needed))
        fresh.update(from: base, count: count)
        base.deallocate()
        base = fresh
        capacity = max(capacity * 2, needed)
    }

    @inline(__always) mutating func append(_ value: T) {
        if count == capacity { grow(count &+ 1) }
        base[count] = value
        count &+= 1
    }

    var array: [T] { Array(UnsafeBufferPointer(start: base, count: count)) }
}

extension RawVec where T == UInt8 {
    @inline(__always) mutating func append(bytes: UnsafeRawPointer, count n: Int) {
        guard n > 0 else { return }
        let to = reserve(n)
        UnsafeMutableRawPointer(to).copyMemory(from: bytes, byteCount: n)
        count &+= n
    }

    @inline(__always) mutating func appendVarint(_ value: UInt64) {
        var p = reserve(10)
        writeVarint(value, &p)
        count = p - base
    }
}

/// Numbers distinct strings in first-seen order. Open addressing over the UTF-8 bytes with a
/// cheap multiplicative hash: the block encoder looks up ~15 strings per event, and Swift's
/// seeded SipHash `Dictionary` was a fifth of the import's time. Strings are kept only as bytes,
/// back to back in one arena; a `String` is made only when the block's table is asked for.
/// Like `RawVec`, it owns raw memory that its holder frees with `deallocate()`.
struct StringInterner {
    /// Every stored string's UTF-8 bytes back to back: string k is `arena[ends[k-1] ..< ends[k]]`.
    private var arena: RawVec<UInt8>
    private var ends: RawVec<Int>
    /// Per slot: the hash's high 32 bits << 32 | (string number + 1); 0 is empty. The slot index
    /// is taken from the same high bits, so growing never needs the strings again.
    private var slots: UnsafeMutablePointer<UInt64>
    private var mask: Int

    init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = .allocate(capacity: size)
        slots.initialize(repeating: 0, count: size)
        mask = size - 1
        ends = RawVec(capacity: capacity)
        arena = RawVec(capacity: capacity * 16)
    }

    func deallocate() {
        arena.deallocate()
        ends.deallocate()
        slots.deallocate()
    }

    var count: Int { ends.count }

    /// The bytes of string `id` (valid until the next intern).
    @inline(__always) func bytes(_ id: Int) -> UnsafeRawBufferPointer {
        let start = id == 0 ? 0 : ends[id &- 1]
        return UnsafeRawBufferPointer(start: arena.base + start, count: ends[id] &- start)
    }

    /// Every string as a `String`, in number order.
    var strings: [String] {
        (0..<count).map { String(decoding: bytes($0), as: UTF8.self) }
    }

    /// Whether string `id` has exactly these `n` bytes.
    @inline(__always) func bytesEqual(_ id: Int, _ p: UnsafeRawPointer, _ n: Int) -> Bool {
        let start = id == 0 ? 0 : ends[id &- 1]
        guard ends[id] &- start == n else { return false }
        return StringInterner.same(UnsafeRawPointer(arena.base + start), p, n)
    }

    /// Byte equality without a call for the short values most fields hold.
    @inline(__always) static func same(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
        if n >= 8 {
            var i = 0
            while i &+ 8 < n {
                if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
                i &+= 8
            }
            // The last eight bytes, overlapping what was compared.
            return a.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)
        }
        if n >= 4 {
            return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
                && a.loadUnaligned(fromByteOffset: n &- 4, as: UInt32.self) == b.loadUnaligned(fromByteOffset: n &- 4, as: UInt32.self)
        }
        var i = 0
        while i < n {
            if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
            i &+= 1
        }
        return true
    }

    /// A 64-bit hash of `n` bytes at `p`, reading only those bytes (the tail by overlapping loads).
    @inline(__always) static func hashBytes(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
        if n >= 8 {
            var i = 0
            while i &+ 8 < n {
                h = (h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
                h ^= h >> 32
                i &+= 8
            }
            h = (h ^ p.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)) &* 0xC4CE_B9FE_1A85_EC53
        } else if n >= 4 {
            let lo = UInt64(p.loadUnaligned(as: UInt32.self))
            let hi = UInt64(p.loadUnaligned(fromByteOffset: n &- 4, as: UInt32.self))
            h = (h ^ (lo | hi << 32)) &* 0xC4CE_B9FE_1A85_EC53
        } else if n > 0 {
            let a = UInt64(p.load(as: UInt8.self))
            let b = UInt64(p.load(fromByteOffset: n >> 1, as: UInt8.self))
            let c = UInt64(p.load(fromByteOffset: n &- 1, as: UInt8.self))
            h = (h ^ (a | b << 8 | c << 16)) &* 0xC4CE_B9FE_1A85_EC53
        }
        h ^= h >> 29
        return h &* 0xFF51_AFD7_ED55_8CCD
    }

    @inline(__always) static func hashBytes(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        guard let p = bytes.baseAddress else { return hashBytes(UnsafeRawPointer(bitPattern: 1)!, 0) }
        return hashBytes(p, bytes.count)
    }

    /// - Returns: the number of the string with these `n` bytes (valid UTF-8) at `p`, and
    ///   whether it was new.
    @inline(__always) mutating func intern(_ p: UnsafeRawPointer, _ n: Int) -> (UInt32, Bool) {
        let tag = StringInterner.hashBytes(p, n) >> 32
        var i = Int(truncatingIfNeeded: tag) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { break }
            if slot >> 32 == tag {
                let id = Int(truncatingIfNeeded: slot & 0xFFFF_FFFF) &- 1
                if bytesEqual(id, p, n) { return (UInt32(truncatingIfNeeded: id), false) }
            }
            i = (i &+ 1) & mask
        }
        return (insert(p, n, tag: tag, slot: i), true)
    }

    /// Stores a new string in empty slot `i` (out of line: most lookups find their string).
    @inline(never)
    private mutating func insert(_ p: UnsafeRawPointer, _ n: Int, tag: UInt64, slot i: Int) -> UInt32 {
        let id = ends.count
        arena.append(bytes: p, count: n)
        ends.append(arena.count)
        slots[i] = tag << 32 | UInt64(id &+ 1)
        if ends.count &* 2 > mask { grow() }
        return UInt32(truncatingIfNeeded: id)
    }

    @inline(__always) mutating func intern(bytes: UnsafeRawBufferPointer) -> (UInt32, Bool) {
        guard let p = bytes.baseAddress else { return intern(UnsafeRawPointer(bitPattern: 1)!, 0) }
        return intern(p, bytes.count)
    }

    @inline(__always) static func equal(_ s: String, _ bytes: UnsafeRawBufferPointer) -> Bool {
        if let r = s.utf8.withContiguousStorageIfAvailable({ u -> Bool in
            u.count == bytes.count && (u.count == 0 || memcmp(u.baseAddress!, bytes.baseAddress!, u.count) == 0)
        }) { return r }
        return s.utf8.elementsEqual(bytes)
    }

    @inline(never) private mutating func grow() {
        let size = (mask &+ 1) * 2
        let fresh = UnsafeMutablePointer<UInt64>.allocate(capacity: size)
        fresh.initialize(repeating: 0, count: size)
        let freshMask = size &- 1
        for k in 0...mask {
            let slot = slots[k]
            if slot == 0 { continue }
            var i = Int(truncatingIfNeeded: slot >> 32) & freshMask
            while fresh[i] != 0 { i = (i &+ 1) & freshMask }
            fresh[i] = slot
        }
        slots.deallocate()
        slots = fresh
        mask = freshMask
    }
}
