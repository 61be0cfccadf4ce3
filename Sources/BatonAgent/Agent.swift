import BatonCore
import BatonEtcd
import BatonHA
import BatonPostgres
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// One Baton agent, wired: the etcd store, the local PostgreSQL node, the fence guard process and
/// the HA loop, built from a validated `AgentConfiguration`. The executable adds the REST API and
/// runs everything in one `ServiceGroup`.
public final class Agent: Sendable {
    public let configuration: AgentConfiguration
    public let etcd: EtcdClient
    public let store: EtcdClusterStore
    /// The REST API's view of the store, on an etcd client (a worker pool) of its own: a flood of
    /// API requests queues behind itself, never in front of the HA loop's requests and the lease
    /// keepalives.
    public let apiStore: EtcdClusterStore
    let apiEtcd: EtcdClient
    public let node: LocalPostgresNode
    public let loop: HALoop
    let fenceGuard: ProcessFenceGuard?
    let logger: Logger

    /// Builds the agent. `executable` is the `baton` binary (baton-fence-guard is installed beside it);
    /// `configurationFile` is re-read by `POST /reload`.
    public init(
        configuration: AgentConfiguration, peers: any PeerProbe, executable: String?, configurationFile: String? = nil,
        logger: Logger
    ) throws {
        self.configuration = configuration
        self.logger = logger
        let dynamic = configuration.dynamicConfig
        let etcd = configuration.etcd
        var tls: EtcdTLSConfiguration?
        if etcd.cacert != nil || etcd.cert != nil || etcd.protocolScheme == "https" {
            tls = EtcdTLSConfiguration(caFile: etcd.cacert, certFile: etcd.cert, keyFile: etcd.key)
        }
        let etcdCredentials = etcd.username.flatMap { user in
            etcd.password.map { EtcdConfiguration.Credentials(user: user, password: $0) }
        }
        self.etcd = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: etcd.endpoints, retryTimeout: dynamic.retryTimeout, credentials: etcdCredentials, tls: tls),
            logger: logger)
        let apiEtcd = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: etcd.endpoints, retryTimeout: dynamic.retryTimeout, credentials: etcdCredentials, tls: tls,
                maxConcurrentRequests: 4, maxQueuedRequests: 64),
            logger: logger)
        self.apiEtcd = apiEtcd
        self.store = EtcdClusterStore(
            client: self.etcd, namespace: configuration.namespace, scope: configuration.scope, logger: logger,
            followers: [apiEtcd])
        self.apiStore = EtcdClusterStore(
            client: self.apiEtcd, namespace: configuration.namespace, scope: configuration.scope, logger: logger)

        let pg = configuration.postgresql
        func pgCredentials(_ c: AgentConfiguration.Credentials) -> BatonPostgres.Credentials {
            BatonPostgres.Credentials(username: c.username, password: c.password)
        }
        let connectHost = AgentConfiguration.hostPort(pg.connectAddress)?.0 ?? "127.0.0.1"
        var pgConfiguration = LocalPostgresConfiguration(
            memberName: configuration.name, dataDirectory: pg.dataDirectory, binDirectory: pg.binDirectory,
            listenAddress: pg.listenHost, connectAddress: connectHost, localAddress: pg.localAddress, port: pg.port,
            osUser: pg.osUser, superuser: pgCredentials(pg.superuser), replication: pgCredentials(pg.replication),
            rewind: pg.rewind.map(pgCredentials), parameters: pg.parameters,
            replicationNetworks: pg.replicationNetworks, clientNetworks: pg.clientNetworks,
            usePgRewind: pg.usePgRewind, removeDataDirectoryOnRewindFailure: pg.removeDataDirectoryOnRewindFailure,
            useReplicationSlots: pg.useReplicationSlots ?? configuration.dynamicConfig.useSlots ?? true,
            dataChecksums: pg.dataChecksums, passfile: pg.pgpass)
        pgConfiguration.initdbOptions = pg.initdbOptions
        pgConfiguration.scope = configuration.scope
        pgConfiguration.recoveryConf = pg.recoveryConf
        pgConfiguration.postBootstrap = pg.postBootstrap
        pgConfiguration.bootstrapMethod = pg.bootstrapMethod.map {
            BootstrapMethod(name: $0.name, argv: $0.argv, noParams: $0.noParams, recoveryConf: $0.recoveryConf)
        }
        let method = { (method: AgentConfiguration.ReplicaMethodSetting) -> ReplicaMethod in
            method.name == "basebackup"
                ? .basebackup(options: method.options)
                : .command(
                    name: method.name, argv: method.argv, parameters: method.options, keepData: method.keepData,
                    noParams: method.noParams, noLeader: method.noLeader)
        }
        pgConfiguration.replicaMethods = pg.replicaMethods.map(method)
        pgConfiguration.definedReplicaMethods = pg.definedReplicaMethods.map(method)
        pgConfiguration.streams = !configuration.tags.noStream
        let node = try LocalPostgresNode(configuration: pgConfiguration, logger: logger)
        self.node = node
        if let warning = Self.ignoredLocalParameters(pg.parameters) { logger.warning("\(warning)") }

        if configuration.fenceGuard {
            guard let executable else {
                throw FenceGuardUnavailable(
                    description: "fence_guard is on but the path of the baton binary is unknown (no /proc/self/exe): "
                        + "cannot find baton-fence-guard beside it")
            }
            let guardProcess = ProcessFenceGuard(
                executable: ProcessFenceGuard.executable(besides: executable), dataDirectory: pg.dataDirectory,
                postmasterPID: { node.postmasterPID },
                logger: logger)
            try guardProcess.start()
            self.fenceGuard = guardProcess
        } else {
            self.fenceGuard = nil
            logger.warning(
                """
                fence_guard is off: a frozen or killed agent leaves its primary running until an operator \
                stops it (only a watchdog, if configured, fences it); set fence_guard: true unless deliberate
                """)
        }

        var haConfiguration = HAConfiguration(
            name: configuration.name, connURL: "postgres://\(pg.connectAddress)/postgres",
            apiURL: "\(configuration.restapi.scheme)://\(configuration.restapi.connectAddress)/patroni",
            tags: configuration.tags,
            initialDynamicConfig: dynamic,
            stopTimeout: Duration(checkedSeconds: configuration.stopTimeout) ?? .seconds(30),
            watchdogRequired: configuration.watchdog.mode == .required)
        haConfiguration.hookTimeout = Duration(checkedSeconds: configuration.hookTimeout) ?? .seconds(60)
        haConfiguration.localUseSlots = pg.useReplicationSlots
        haConfiguration.proxyURL = pg.proxyAddress.map { "postgres://\($0)/postgres" }
        var watchdog: DeviceWatchdog?
        let margin = Duration(checkedSeconds: configuration.watchdog.safetyMargin) ?? .seconds(5)
        switch configuration.watchdog.mode {
        case .off:
            watchdog = nil
        case .automatic:
            watchdog =
                FileManager.default.isWritableFile(atPath: configuration.watchdog.device)
                ? DeviceWatchdog(path: configuration.watchdog.device, safetyMargin: margin, logger: logger) : nil
            if watchdog == nil {
                logger.warning(
                    "watchdog mode automatic but \(configuration.watchdog.device) is not writable: running without")
            }
        case .required:
            guard FileManager.default.isWritableFile(atPath: configuration.watchdog.device) else {
                throw ConfigurationError(
                    path: "watchdog.device", line: nil,
                    message: "watchdog mode is required but \(configuration.watchdog.device) is not writable "
                        + "(load softdog, fix permissions, or set watchdog.mode: automatic)")
            }
            watchdog = DeviceWatchdog(path: configuration.watchdog.device, safetyMargin: margin, logger: logger)
        }
        self.loop = HALoop(
            configuration: haConfiguration, store: store, node: node, peers: peers,
            hooks: Self.hooks(configuration, node: node, file: configurationFile, logger: logger), watchdog: watchdog,
            fenceGuard: fenceGuard,
            wallClock: { Date().timeIntervalSince1970 }, logger: logger)
    }

    /// The HA loop as a service; on shutdown it also stops the fence guard and the etcd client.
    public var haService: some Service { AgentHAService(agent: self) }

    func finish() {
        fenceGuard?.stop()
        etcd.shutdown()
        apiEtcd.shutdown()
    }

    /// Callbacks and the pre-promote hook run as shell commands with (event, role, scope) arguments,
    /// like Patroni's.
    static func hooks(
        _ configuration: AgentConfiguration, node: LocalPostgresNode, file: String?, logger: Logger
    ) -> HAHooks {
        let callbacks = configuration.callbacks
        let scope = configuration.scope
        var hooks = HAHooks()
        let localAccessRules = LocalAccessRules(configuration.postgresql.accessRules)
        hooks.localAccessRules = { localAccessRules.rules.withLock { $0 } }
        if let file {
            hooks.reloadConfiguration = {
                try Self.reloadConfiguration(
                    from: file, running: configuration, node: node, accessRules: localAccessRules, logger: logger)
            }
        }
        let timeout = Duration(checkedSeconds: configuration.hookTimeout) ?? .seconds(60)
        if !callbacks.isEmpty {
            hooks.callback = { event, role in
                guard let command = callbacks[event] else { return }
                HookRunner.start(command, arguments: [event, role.rawValue, scope], timeout: timeout, logger: logger)
            }
        }
        if let prePromote = configuration.prePromote {
            hooks.prePromote = {
                let status = await HookRunner.run(
                    prePromote, arguments: ["pre_promote", "primary", scope], timeout: timeout, logger: logger)
                return status == 0
            }
        }
        if let beforeStop = configuration.beforeStop {
            hooks.beforeStop = {
                let status = await HookRunner.run(
                    beforeStop, arguments: ["before_stop", "primary", scope], timeout: timeout, logger: logger)
                if status != 0 { logger.warning("before_stop did not succeed; stopping postgres anyway") }
            }
        }
        return hooks
    }

    /// The local `postgresql.parameters` that are not used because every member must share them
    /// (as Patroni ignores them), said once with how to set them instead; nil when there are none.
    static func ignoredLocalParameters(_ parameters: [String: String]) -> String? {
        let ignored = PostgresParameters.effective(defaults: [:], cluster: [:], local: parameters).ignoredLocal
        guard !ignored.isEmpty else { return nil }
        return "postgresql.parameters: \(ignored.joined(separator: ", ")) ignored in the agent's file: every member "
            + "must share them; set them cluster-wide with 'baton edit-config -p NAME=VALUE' (or bootstrap.dcs)"
    }

    /// `POST /reload`: reads `file` again and applies `postgresql.parameters` (written before
    /// postgres reloads); names the other changed sections, which need an agent restart.
    static func reloadConfiguration(
        from file: String, running: AgentConfiguration, node: LocalPostgresNode,
        accessRules: LocalAccessRules? = nil, logger: Logger
    ) throws -> String {
        let fresh = try AgentConfiguration.load(path: file)
        guard fresh.name == running.name, fresh.scope == running.scope else {
            throw ConfigurationError(
                path: "name", message: "name and scope cannot change while the agent runs; restart the agent",
                file: file)
        }
        var notes: [String] = []
        if fresh.postgresql.parameters != node.parameters {
            let changed = Set(fresh.postgresql.parameters.keys).union(node.parameters.keys).filter {
                fresh.postgresql.parameters[$0] != node.parameters[$0]
            }
            node.setParameters(fresh.postgresql.parameters)
            notes.append("postgresql.parameters changed (\(changed.sorted().joined(separator: ", ")))")
            if let warning = ignoredLocalParameters(fresh.postgresql.parameters) { notes.append(warning) }
        }
        if let accessRules, accessRules.rules.withLock({ $0 }) != fresh.postgresql.accessRules {
            accessRules.rules.withLock { $0 = fresh.postgresql.accessRules }
            notes.append("postgresql.pg_hba/pg_ident changed (put in force by the next cycle)")
        }
        var needRestart: [String] = []
        func headerLines(_ rest: AgentConfiguration.RestAPI) -> [String] {
            (rest.httpExtraHeaders + rest.httpsExtraHeaders).map { "\($0.name): \($0.value)" }
        }
        if fresh.restapi.listenHost != running.restapi.listenHost
            || fresh.restapi.listenPort != running.restapi.listenPort
            || fresh.restapi.allowlist != running.restapi.allowlist
            || fresh.restapi.username != running.restapi.username
            || fresh.restapi.password != running.restapi.password
            || headerLines(fresh.restapi) != headerLines(running.restapi)
            || fresh.restapi.allowlistIncludeMembers != running.restapi.allowlistIncludeMembers
            || fresh.restapi.ciphers != running.restapi.ciphers
            || fresh.restapi.keyfilePassword != running.restapi.keyfilePassword
            || fresh.restapi.requestQueueSize != running.restapi.requestQueueSize
            || fresh.restapi.certfile != running.restapi.certfile || fresh.restapi.keyfile != running.restapi.keyfile
        {
            needRestart.append("restapi")
        }
        if fresh.etcd.hosts != running.etcd.hosts || fresh.etcd.username != running.etcd.username
            || fresh.etcd.password != running.etcd.password
        {
            needRestart.append("etcd3")
        }
        if fresh.tags != running.tags { needRestart.append("tags") }
        if fresh.postgresql.port != running.postgresql.port
            || fresh.postgresql.dataDirectory != running.postgresql.dataDirectory
            || fresh.postgresql.proxyAddress != running.postgresql.proxyAddress
        {
            needRestart.append("postgresql (port, data_dir, proxy_address)")
        }
        if !needRestart.isEmpty {
            notes.append("changed but applied only after an agent restart: \(needRestart.joined(separator: ", "))")
        }
        let summary = notes.isEmpty ? "configuration file re-read, nothing changed" : notes.joined(separator: "; ")
        logger.info("reload: \(summary)")
        return summary
    }
}

struct AgentHAService: Service {
    let agent: Agent

    func run() async throws {
        try await HAService(loop: agent.loop).run()
        agent.finish()
    }
}

/// The agent file's `postgresql.pg_hba`/`pg_ident` as last read, shared by the reload hook that
/// replaces them and the loop that puts them in force.
final class LocalAccessRules: Sendable {
    let rules: Mutex<AccessRules>
    init(_ rules: AccessRules) { self.rules = Mutex(rules) }
}
