// Metric counters keyed by (event type, release, track, gateway, reason). Every event bumps
// one, so this is on the rebuild's hot path: an open-addressing table with a multiplicative
// hash costs a few nanoseconds where `Dictionary` with `Hasher` cost about forty.

struct CounterTable: Equatable {
    private(set) var keys: [CounterKey]
    private(set) var values: [UInt64]
    private var used: [Bool]
    private var mask: Int
    private(set) var count = 0

    init() {
        mask = 255
        keys = Array(repeating: CounterKey(type: 0, release: 0, track: 0, gateway: 0, reason: 0), count: mask + 1)
        values = Array(repeating: 0, count: mask + 1)
        used = Array(repeating: false, count: mask + 1)
    }

    @inline(__always) private static func slot(_ k: CounterKey, _ mask: Int) -> Int {
        var h = UInt64(k.type) &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ UInt64(k.release)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ UInt64(k.track)) &* 0x94D0_49BB_1331_11EB
        h = (h ^ UInt64(k.gateway)) &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ UInt64(k.reason)) &* 0xBF58_476D_1CE4_E5B9
        return Int(truncatingIfNeeded: h >> 32) & mask
    }

    @inline(__always) mutating func add(_ k: CounterKey, _ n: UInt64) {
        var i = CounterTable.slot(k, mask)
        while used[i] {
            if keys[i] == k { values[i] &+= n; return }
            i = (i + 1) & mask
        }
        used[i] = true
        keys[i] = k
        values[i] = n
        count += 1
        if count * 2 > mask + 1 { grow() }
    }

    private mutating func grow() {
        let old = entries
        mask = mask * 2 + 1
        keys = Array(repeating: CounterKey(type: 0, release: 0, track: 0, gateway: 0, reason: 0), count: mask + 1)
        values = Array(repeating: 0, count: mask + 1)
        used = Array(repeating: false, count: mask + 1)
        count = 0
        for (k, v) in old { add(k, v) }
    }

    subscript(_ k: CounterKey) -> UInt64 {
        var i = CounterTable.slot(k, mask)
        while used[i] {
            if keys[i] == k { return values[i] }
            i = (i + 1) & mask
        }
        return 0
    }

    /// Every (key, count), in a stable order.
    var entries: [(CounterKey, UInt64)] {
        var out = [(CounterKey, UInt64)]()
        out.reserveCapacity(count)
        for i in 0...mask where used[i] { out.append((keys[i], values[i])) }
        return out.sorted { ($0.0.type, $0.0.release, $0.0.track, $0.0.gateway, $0.0.reason) < ($1.0.type, $1.0.release, $1.0.track, $1.0.gateway, $1.0.reason) }
    }

    static func == (a: CounterTable, b: CounterTable) -> Bool { a.entries.elementsEqual(b.entries, by: { $0.0 == $1.0 && $0.1 == $1.1 }) }
}
