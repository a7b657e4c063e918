// Seeded randomness for the workload. Every draw is integer arithmetic or an exact conversion, and
// no libm function (log, exp, pow) is used anywhere in the generator: their last bits differ
// between C libraries, and "same seed, same bytes on any machine" is the promise.

/// Expands one 64-bit seed into well-mixed words; used to seed `Xoshiro256StarStar` and to derive
/// independent streams (the scenario plan must not depend on how many draws the traffic made).
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    @inline(__always) mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// xoshiro256** (Blackman and Vigna): fast, 256 bits of state, good enough statistics for traffic.
struct Xoshiro256StarStar {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    init(seed: UInt64) {
        var mixer = SplitMix64(seed: seed)
        s0 = mixer.next(); s1 = mixer.next(); s2 = mixer.next(); s3 = mixer.next()
        // The all-zero state is a fixed point; SplitMix64 cannot produce four zeros in a row, but be explicit.
        if s0 | s1 | s2 | s3 == 0 { s0 = 1 }
    }

    @inline(__always) mutating func next() -> UInt64 {
        let result = rotateLeft(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotateLeft(s3, 45)
        return result
    }

    /// Uniform in `0..<bound` (Lemire's multiply-shift; the tiny bias of skipping the rejection
    /// step is irrelevant for traffic shaping and keeps the draw count fixed per call).
    @inline(__always) mutating func below(_ bound: Int) -> Int {
        Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// True with probability `numerator / 1_000_000`.
    @inline(__always) mutating func chance(perMillion numerator: Int) -> Bool {
        below(1_000_000) < numerator
    }

    /// Number of successes before the first failure when each trial continues with probability
    /// `continuePerMillion / 1e6`: geometric with mean p / (1 - p). Loop, not logarithm (see file comment).
    @inline(__always) mutating func geometric(continuePerMillion: Int, cap: Int = 1_000) -> Int {
        var count = 0
        while count < cap && chance(perMillion: continuePerMillion) { count += 1 }
        return count
    }

    @inline(__always) private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }
}

/// A weighted choice over a fixed table, drawn with one integer draw.
struct WeightedTable: Sendable {
    private let cumulative: [Int]
    let total: Int

    init(_ weights: [Int]) {
        precondition(!weights.isEmpty && weights.allSatisfy { $0 >= 0 })
        var running = 0
        cumulative = weights.map { running += $0; return running }
        total = running
        precondition(total > 0)
    }

    @inline(__always) func pick(_ rng: inout Xoshiro256StarStar) -> Int {
        let x = rng.below(total)
        var i = 0
        while cumulative[i] <= x { i += 1 }
        return i
    }
}
