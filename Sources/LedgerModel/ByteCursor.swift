/// Varint writing and bounds-checked reading for the binary codecs. A reader never traps on
/// untrusted bytes: a short or malformed buffer yields nil, and callers turn that into an error
/// that names where decoding stopped.

@inline(__always) public func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
    var v = value
    while v >= 0x80 {
        out.append(UInt8(truncatingIfNeeded: v) | 0x80)
        v >>= 7
    }
    out.append(UInt8(v))
}

/// The same varint, written through a raw pointer that has room for 10 bytes, which it advances
/// (the block encoder's buffers, without `Array`'s checks).
@inline(__always) func writeVarint(_ value: UInt64, _ o: inout UnsafeMutablePointer<UInt8>) {
    var v = value
    while v >= 0x80 {
        o.pointee = UInt8(truncatingIfNeeded: v) | 0x80
        o += 1
        v >>= 7
    }
    o.pointee = UInt8(truncatingIfNeeded: v)
    o += 1
}

@inline(__always) public func zigzag(_ value: Int64) -> UInt64 {
    UInt64(bitPattern: (value << 1) ^ (value >> 63))
}

@inline(__always) public func unzigzag(_ value: UInt64) -> Int64 {
    Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1)
}

/// A forward reader over borrowed bytes.
public struct ByteCursor {
    public let base: UnsafeRawBufferPointer
    public var offset: Int
    public let end: Int

    public init(_ base: UnsafeRawBufferPointer, offset: Int = 0, end: Int? = nil) {
        self.base = base
        self.offset = offset
        self.end = end ?? base.count
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset >= end }

    /// - Returns: nil when the varint runs past the end or is longer than 10 bytes.
    @inlinable @inline(__always) public mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while offset < end {
            let byte = base[offset]
            offset += 1
            if shift == 63 && byte > 1 { return nil }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    @inlinable @inline(__always) public mutating func byte() -> UInt8? {
        guard offset < end else { return nil }
        defer { offset += 1 }
        return base[offset]
    }

    /// - Returns: nil when fewer than `count` bytes remain.
    @inlinable @inline(__always) public mutating func bytes(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, count <= end - offset else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: base[offset..<(offset + count)])
    }
}

/// Attribute keys are ordered by their UTF-8 bytes: part of the canonical payload, so it must not
/// depend on Unicode normalisation (which `String`'s `<` applies) or on its version.
@inline(__always) public func utf8Ascending(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}
