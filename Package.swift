// swift-tools-version:6.2
import PackageDescription

/// Our own targets treat every warning as an error; dependencies are left alone.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "Baton",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "baton", targets: ["baton"]),
        .executable(name: "baton-fence-guard", targets: ["baton-fence-guard"]),
        .library(name: "BatonClient", targets: ["BatonClient"]),
        .library(name: "BatonCore", targets: ["BatonCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // Already in the graph through Hummingbird: the REST server's channel handlers, BatonHTTP.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // TLS for the REST API (server and clients); already in the graph through Hummingbird.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        // HTTP types on the channel (the REST API's health-check fast path); already in the graph
        // through Hummingbird.
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.24.0"),
        // Baton's one HTTP client for members' REST APIs (BatonHTTP): peers, the CLI, BatonClient.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // BatonClient's connections: the Swift server ecosystem's PostgreSQL driver (the agent keeps
        // libpq).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // Spans of BatonClient's acquisitions and statements (already in the graph through
        // postgres-nio).
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.1.0"),
        // Property-based tests (random and adversarial input), tests only; no dependencies of its own.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // C libraries, through system-library targets with small header-only shims.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // The pure core: value model, decision state machine, ports. Imports nothing.
        .target(name: "BatonCore", swiftSettings: strict),

        .target(
            name: "BatonEtcd",
            dependencies: [
                "BatonCore", "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BatonPostgres",
            dependencies: [
                "BatonCore", "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BatonHA",
            dependencies: [
                "BatonCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The HTTP client for calls to members' REST APIs (AsyncHTTPClient with Baton's deadlines).
        .target(
            name: "BatonHTTP",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BatonAPI",
            dependencies: [
                "BatonCore", "BatonHA", "BatonHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BatonClient",
            dependencies: [
                "BatonCore", "BatonEtcd", "BatonHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "BatonAgent",
            dependencies: [
                "BatonCore", "BatonEtcd", "BatonPostgres", "BatonHA", "BatonAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "baton",
            dependencies: [
                "BatonAgent", "BatonAPI", "BatonCore", "BatonEtcd", "BatonPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The fence backstop the agent starts beside postgres: only the C library, linked statically
        // on Linux so that it stays a few MB resident (`scripts/bench footprint`).
        .systemLibrary(name: "CTimerFD"),
        .executableTarget(
            name: "baton-fence-guard",
            dependencies: [.target(name: "CTimerFD", condition: .when(platforms: [.linux]))],
            swiftSettings: strict,
            linkerSettings: [.unsafeFlags(["-static-executable"], .when(platforms: [.linux]))]
        ),
        // Writes and reads through BatonClient and prints where each went (`scripts/demo client`).
        .executableTarget(
            name: "baton-client-example",
            dependencies: [
                "BatonClient", .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        // `scripts/bench client`: pooled vs raw libpq throughput, routing overhead, failover latency.
        .executableTarget(
            name: "baton-bench-client",
            dependencies: [
                "BatonClient", "BatonCore", "BatonEtcd", "BatonPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        // `scripts/bench failover`: the BatonClient write prober (one JSON line per attempt).
        .executableTarget(
            name: "baton-bench-probe",
            dependencies: [
                "BatonClient", .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        // `scripts/bench etcd`: latency and throughput of one EtcdClient.
        .executableTarget(
            name: "baton-bench-etcd",
            dependencies: ["BatonEtcd", "BatonCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // Test doubles and shared fixtures; not a product.
        .target(
            name: "BatonTesting",
            dependencies: [
                "BatonCore", "BatonHA",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // The real-cluster fixture (etcd + PostgreSQL + `baton agent` processes) shared by the
        // integration test targets; not a product.
        .target(
            name: "BatonTestCluster",
            dependencies: [
                "BatonCore", "BatonEtcd", "BatonPostgres", "BatonTesting",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Unit tests: milliseconds, no sockets or processes.
        .testTarget(
            name: "BatonCoreTests",
            dependencies: [
                "BatonCore", "BatonTesting", .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict),
        .testTarget(name: "BatonTestingTests", dependencies: ["BatonCore", "BatonTesting"], swiftSettings: strict),
        .testTarget(
            name: "BatonAgentTests", dependencies: ["BatonAgent", "BatonCore"], swiftSettings: strict),
        .testTarget(
            name: "BatonHATests", dependencies: ["BatonCore", "BatonHA", "BatonTesting"], swiftSettings: strict),
        .testTarget(name: "BatonEtcdTests", dependencies: ["BatonEtcd", "BatonCore"], swiftSettings: strict),
        .testTarget(name: "BatonPostgresTests", dependencies: ["BatonPostgres", "BatonCore"], swiftSettings: strict),
        .testTarget(
            name: "BatonClientTests",
            dependencies: [
                "BatonClient", "BatonCore", "BatonTesting", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "BatonAPITests",
            dependencies: [
                "BatonAPI", "BatonCore", "BatonHA", "BatonTesting",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),

        // Integration tests: real etcd and real PostgreSQL processes, kept in their own targets.
        .testTarget(
            name: "BatonEtcdIntegrationTests",
            dependencies: ["BatonEtcd", "BatonCore", "BatonTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "BatonPostgresIntegrationTests",
            dependencies: ["BatonPostgres", "BatonCore", "BatonTesting"],
            swiftSettings: strict
        ),
        // Real `baton agent` processes over real etcd and PostgreSQL: failover, fencing, switchover.
        .testTarget(
            name: "BatonAgentIntegrationTests",
            dependencies: [
                "BatonAgent", "BatonCore", "BatonEtcd", "BatonPostgres", "BatonTesting", "BatonTestCluster",
            ],
            swiftSettings: strict
        ),
        // BatonClient against a real cluster: routing, breakers, read-your-writes, failover.
        .testTarget(
            name: "BatonClientIntegrationTests",
            dependencies: [
                "BatonClient", "BatonCore", "BatonPostgres", "BatonTestCluster",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
    ]
)
