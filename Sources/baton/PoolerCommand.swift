import ArgumentParser
import BatonAPI
import BatonAgent
import BatonCore
import BatonPostgres
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// `baton pooler`: runs beside a PgBouncer and keeps its databases pointed at the cluster.
struct PoolerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pooler",
        abstract: "Keep a PgBouncer's databases pointed at the cluster's primary and replicas.",
        discussion: """
            Writes PgBouncer's [databases] section into --include-file (PgBouncer's configuration \
            has '%include FILE' in place of its own section) and RELOADs through the admin console \
            when the topology in etcd changes; on a change of primary it KILLs and RESUMEs the \
            read-write databases, so that no pooled connection keeps writing to the old primary. \
            It registers under poolers/NAME in etcd ('baton list' shows it). The admin password, \
            when PgBouncer asks for one, comes from BATON_POOLER_ADMIN_PASSWORD. Example: \
            baton pooler --dcs-url etcd3://10.0.0.1:2379 --scope demo --include-file \
            /etc/pgbouncer/baton.ini --database app=primary --database app_ro=replica:app
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "This pooler's name in etcd (default: the host name).") var name: String?
    @Option(help: "The file PgBouncer includes for its [databases] section.") var includeFile: String
    @Option(help: "PgBouncer's admin console host.") var adminHost = "127.0.0.1"
    @Option(help: "PgBouncer's port.") var adminPort = 6432
    @Option(help: "A PgBouncer admin user (admin_users).") var adminUser = "pgbouncer"
    @Option(
        help: ArgumentHelp(
            "A database to manage, NAME=ROLE[:DBNAME]: ROLE primary (reads and writes) or replica (running replicas within --max-lag, else the primary). Repeat for several.",
            valueName: "NAME=ROLE[:DBNAME]"))
    var database: [String] = []
    @Option(help: "Replicas further behind the primary than this many bytes are left out of replica databases.")
    var maxLag: UInt64 = 1_048_576
    @Option(help: "Seconds the registration outlives the pooler (its etcd session's ttl).") var ttl = 10
    @Option(
        help: ArgumentHelp(
            "Where the status endpoint listens (GET /health, GET /metrics), HOST:PORT; 'none' for no endpoint.",
            valueName: "HOST:PORT"))
    var listen = "127.0.0.1:8010"
    @Flag(
        inversion: .prefixedNo,
        help:
            "Pause the read-write databases around a planned switchover (off: re-point and cut connections, as on a failover)."
    )
    var pauseOnSwitchover = true

    func validate() throws {
        guard !database.isEmpty else {
            throw ValidationError("give at least one --database NAME=ROLE[:DBNAME], e.g. --database app=primary")
        }
        var names: Set<String> = []
        for text in database {
            switch PoolerDatabase.parse(text) {
            case .success(let parsed):
                guard names.insert(parsed.name).inserted else {
                    throw ValidationError("--database: '\(parsed.name)' is given twice")
                }
            case .failure(let error): throw ValidationError("--database \(error)")
            }
        }
        if let name, !PoolerRecord.isName(name) {
            throw ValidationError("--name: '\(name)' must be letters, digits, '.', '_' or '-' (at most 128)")
        }
        guard includeFile.hasPrefix("/"), !includeFile.hasSuffix("/") else {
            throw ValidationError("--include-file: expected an absolute file path, got '\(includeFile)'")
        }
        guard (1...65535).contains(adminPort) else { throw ValidationError("--admin-port: 1-65535, got \(adminPort)") }
        guard (2...3600).contains(ttl) else { throw ValidationError("--ttl: 2-3600 seconds, got \(ttl)") }
        if listen != "none" {
            guard let address = HostPort(parsing: Substring(listen)), address.port != nil else {
                throw ValidationError("--listen: expected HOST:PORT (e.g. 127.0.0.1:8010) or none, got '\(listen)'")
            }
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        var admin = ConnectionParameters(
            host: adminHost, port: adminPort, user: adminUser,
            password: ProcessInfo.processInfo.environment["BATON_POOLER_ADMIN_PASSWORD"], database: "pgbouncer",
            applicationName: "baton-pooler", connectTimeout: .seconds(3), statementTimeout: .seconds(10))
        admin.sendsServerOptions = false
        let databases = database.compactMap { try? PoolerDatabase.parse($0).get() }
        var poolerOptions = PoolerOptions(
            name: name ?? PoolerCommand.hostName, includeFile: includeFile, admin: admin, databases: databases,
            maxLagBytes: maxLag)
        poolerOptions.ttl = .seconds(ttl)
        poolerOptions.pausesOnSwitchover = pauseOnSwitchover
        let settings = op.configuration.log
        let sink = AgentLogHandler.makeSink(settings)
        LoggingSystem.bootstrap { label in AgentLogHandler(label: label, settings: settings, sink: sink) }
        defer { sink.flush() }
        var logger = Logger(label: "baton")
        logger[metadataKey: "pooler.scope"] = "\(op.configuration.scope)"
        let runner = PoolerRunner(options: poolerOptions, store: op.store, logger: logger)
        let serviceLogger = logger
        let task = Task { await runner.run() }
        // The status endpoint; a pooler that cannot listen where it was told stops (exit 1).
        let listenFailed = ManagedFlag()
        let endpoint = HostPort(parsing: Substring(listen)).flatMap { address -> Task<Void, Never>? in
            guard listen != "none", let port = address.port else { return nil }
            let service = PoolerStatusServer.makeService(host: address.host, port: port, logger: serviceLogger) {
                runner.health()
            }
            return Task {
                do {
                    try await ServiceGroup(services: [service], gracefulShutdownSignals: [], logger: serviceLogger)
                        .run()
                } catch {
                    serviceLogger.critical("cannot serve the status endpoint on \(listen): \(error); stopping")
                    listenFailed.set()
                    task.cancel()
                }
            }
        }
        // SIGTERM/SIGINT end the pooler and remove its registration.
        let signals = [SIGTERM, SIGINT].map { signal -> any DispatchSourceSignal in
            Foundation.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal)
            source.setEventHandler { task.cancel() }
            source.resume()
            return source
        }
        await task.value
        endpoint?.cancel()
        await endpoint?.value
        for source in signals { source.cancel() }
        if listenFailed.isSet { throw ExitCode(1) }
    }

    static var hostName: String {
        let name = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "pooler"
        return PoolerRecord.isName(name) ? name : "pooler"
    }
}

/// Set once, read after: whether the status endpoint failed.
final class ManagedFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
