/// Names and fixed client addresses of every subject: the machine subjects of `Catalog`, then
/// the end users. A user's name and address are pure functions of (seed, index), computed on
/// demand, so the population can be large at no cost; a user keeps one address for the whole
/// workload, as behind a home router.
struct SubjectTable {
    let userBase = Catalog.machineSubjects.count
    let users: Int
    private let seed: UInt64
    /// Direct-mapped caches for the `Event` path, where a string per field is needed; recent
    /// subjects recur, so most lookups hit.
    private var cachedKeys: [Int32]
    private var cachedNames: [String]
    private var cachedIPs: [String]
    private static let cacheSize = 1 << 14

    /// First octets of ordinary consumer ISP space, so addresses look public but plausible.
    private static let firstOctets: [UInt64] = [24, 31, 37, 46, 62, 68, 73, 77, 81, 84, 86, 89, 91, 95, 98, 109,
                                                 142, 151, 176, 178, 188, 193, 212, 217]

    init(seed: UInt64, users: Int) {
        self.seed = seed
        self.users = users
        cachedKeys = Array(repeating: -1, count: SubjectTable.cacheSize)
        cachedNames = Array(repeating: "", count: SubjectTable.cacheSize)
        cachedIPs = Array(repeating: "", count: SubjectTable.cacheSize)
    }

    var count: Int { userBase + users }

    mutating func name(_ subject: Int) -> String {
        if subject < userBase { return Catalog.machineSubjects[subject].name }
        fill(subject)
        return cachedNames[subject & (SubjectTable.cacheSize - 1)]
    }

    mutating func ip(_ subject: Int) -> String {
        if subject < userBase { return Catalog.machineSubjects[subject].ip }
        fill(subject)
        return cachedIPs[subject & (SubjectTable.cacheSize - 1)]
    }

    private mutating func fill(_ subject: Int) {
        let slot = subject & (SubjectTable.cacheSize - 1)
        guard cachedKeys[slot] != Int32(subject) else { return }
        cachedKeys[slot] = Int32(subject)
        cachedNames[slot] = SubjectTable.userName(subject - userBase)
        let (a, b, c, d) = userOctets(subject)
        cachedIPs[slot] = "\(a).\(b).\(c).\(d)"
    }

    func userOctets(_ subject: Int) -> (UInt64, UInt64, UInt64, UInt64) {
        var mixer = SplitMix64(seed: seed ^ (UInt64(subject - userBase) &* 0x9E37_79B9_7F4A_7C15) ^ 0x1D0C_0000)
        let x = mixer.next()
        let firstOctets = SubjectTable.firstOctets
        return (firstOctets[Int(x % UInt64(firstOctets.count))], (x >> 8) & 0xFF, (x >> 16) & 0xFF, 1 + (x >> 24) % 254)
    }

    /// `user-00042`: at least five digits, so names sort and look uniform.
    static func userName(_ user: Int) -> String {
        let digits = String(user)
        return "user-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
    }

    /// Longest user name and address, for sizing output buffers.
    var userNameBytesMax: Int { 5 + max(5, String(max(users - 1, 0)).utf8.count) }
    static let userIPBytesMax = 15
}
