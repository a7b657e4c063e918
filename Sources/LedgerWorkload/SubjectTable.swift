/// Names and fixed client addresses of every subject: the machine subjects of `Catalog`, then
/// the end users. An address is a pure function of (seed, subject), so a user keeps one address
/// for the whole workload, as behind a home router.
struct SubjectTable {
    let names: [String]
    let ips: [String]
    let userBase: Int

    /// First octets of ordinary consumer ISP space, so addresses look public but plausible.
    private static let firstOctets: [UInt64] = [24, 31, 37, 46, 62, 68, 73, 77, 81, 84, 86, 89, 91, 95, 98, 109,
                                                 142, 151, 176, 178, 188, 193, 212, 217]

    init(seed: UInt64, users: Int) {
        userBase = Catalog.machineSubjects.count
        var names = Catalog.machineSubjects.map(\.name)
        var ips = Catalog.machineSubjects.map(\.ip)
        names.reserveCapacity(userBase + users)
        ips.reserveCapacity(userBase + users)
        for user in 0..<users {
            names.append(SubjectTable.userName(user))
            var mixer = SplitMix64(seed: seed ^ (UInt64(user) &* 0x9E37_79B9_7F4A_7C15) ^ 0x1D0C_0000)
            let x = mixer.next()
            let a = SubjectTable.firstOctets[Int(x % UInt64(SubjectTable.firstOctets.count))]
            let b = x >> 8 & 0xFF, c = x >> 16 & 0xFF, d = 1 + (x >> 24) % 254
            ips.append("\(a).\(b).\(c).\(d)")
        }
        self.names = names
        self.ips = ips
    }

    /// `user-00042`: at least five digits, so names sort and look uniform.
    static func userName(_ user: Int) -> String {
        let digits = String(user)
        return "user-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
    }
}
