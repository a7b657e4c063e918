/// The encoder's output streams as raw growable buffers: appending a varint is a few stores,
/// without the uniqueness and bounds checks of an array of arrays.
final class StreamBuffers {
    private let streamCount: Int
    private var bases: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>>
    private var counts: UnsafeMutablePointer<Int>
    private var capacities: UnsafeMutablePointer<Int>

    init(streams: Int, initialCapacity: Int) {
        streamCount = streams
        bases = .allocate(capacity: streams)
        counts = .allocate(capacity: streams)
        capacities = .allocate(capacity: streams)
        for i in 0..<streams {
            let capacity = max(64, initialCapacity)
            bases[i] = .allocate(capacity: capacity)
            counts[i] = 0
            capacities[i] = capacity
        }
    }

    deinit {
        for i in 0..<streamCount { bases[i].deallocate() }
        bases.deallocate(); counts.deallocate(); capacities.deallocate()
    }

    @inline(__always) private func reserve(_ s: Int, _ extra: Int) {
        if counts[s] + extra > capacities[s] { grow(s, extra) }
    }

    private func grow(_ s: Int, _ extra: Int) {
        let capacity = max(capacities[s] * 2, counts[s] + extra)
        let fresh = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        fresh.update(from: bases[s], count: counts[s])
        bases[s].deallocate()
        bases[s] = fresh
        capacities[s] = capacity
    }

    @inline(__always) func appendByte(_ s: Int, _ byte: UInt8) {
        reserve(s, 1)
        bases[s][counts[s]] = byte
        counts[s] += 1
    }

    @inline(__always) func appendVarint(_ s: Int, _ value: UInt64) {
        reserve(s, 10)
        var p = bases[s] + counts[s]
        var v = value
        while v >= 0x80 {
            p.pointee = UInt8(truncatingIfNeeded: v) | 0x80
            p += 1
            v >>= 7
        }
        p.pointee = UInt8(v)
        counts[s] = p - bases[s] + 1
    }

    func count(_ s: Int) -> Int { counts[s] }

    func append(stream s: Int, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: bases[s], count: counts[s]))
    }
}
