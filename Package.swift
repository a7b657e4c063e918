// swift-tools-version:6.0
import PackageDescription

// Layering (bottom to top): C system libraries -> crypto/checksums -> event model and codecs
// -> segment log -> projections (state, snapshots, rollback) and workload generator -> CLI. Each layer only imports the ones below it.
let package = Package(
    name: "tokenledger",
    products: [
        .executable(name: "tokenledger", targets: ["tokenledger"]),
    ],
    targets: [
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // The HTTP read side (serve --http): a well-kept HTTP/1.1 server library rather than a
        // hand-written parser (ARCHITECTURE.md "C libraries").
        .systemLibrary(name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),

        // Scheduler hints and thread names (sched_setattr has no glibc wrapper).
        .target(name: "CThreads"),

        .target(name: "LedgerCrypto", dependencies: ["COpenSSL"]),
        .target(name: "LedgerModel", dependencies: ["LedgerCrypto"]),
        .target(name: "LedgerStorage", dependencies: ["LedgerModel", "LedgerCrypto", "CLZ4", "CThreads"]),
        // The rebuild loop mutates class-held tables per event; the runtime exclusivity checks
        // on those accesses were ~5% of a rebuild (perf), and the loop has no overlapping access.
        .target(name: "LedgerProjection", dependencies: ["LedgerModel", "LedgerStorage", "LedgerCrypto"],
                swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        .target(name: "LedgerServer", dependencies: ["LedgerModel", "LedgerStorage", "LedgerProjection", "LedgerCrypto", "CMicroHTTPD", "CThreads"]),
        .target(name: "LedgerWorkload", dependencies: ["LedgerModel"]),
        .target(name: "LedgerCLI", dependencies: ["LedgerModel", "LedgerStorage", "LedgerProjection", "LedgerServer", "LedgerWorkload", "LedgerCrypto", "CThreads"]),
        .executableTarget(name: "tokenledger", dependencies: ["LedgerCLI"]),

        .testTarget(name: "LedgerCryptoTests", dependencies: ["LedgerCrypto"]),
        .testTarget(name: "LedgerModelTests", dependencies: ["LedgerModel"]),
        .testTarget(name: "LedgerWorkloadTests", dependencies: ["LedgerWorkload", "LedgerModel"]),
        .testTarget(name: "LedgerStorageTests", dependencies: ["LedgerStorage", "LedgerModel", "LedgerWorkload"]),
        .testTarget(name: "LedgerProjectionTests", dependencies: ["LedgerProjection", "LedgerStorage", "LedgerModel", "LedgerWorkload"]),
        .testTarget(name: "LedgerCLITests", dependencies: ["LedgerCLI", "LedgerServer", "LedgerStorage", "LedgerModel", "LedgerWorkload", "LedgerProjection", "CThreads"]),
    ]
)
