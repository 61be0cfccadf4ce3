import BatonCore

/// What the HA loop needs to know about its own member; built by `BatonAgent` from agent.yml.
public struct HAConfiguration: Sendable {
    /// This member's name (the key under `members/`).
    public var name: String
    /// `postgres://host:port/postgres`: how peers and clients reach this member's postgres.
    public var connURL: String
    /// `postgres://<postgresql.proxy_address>/postgres`, published as the member's `proxy_url`.
    public var proxyURL: String?
    /// `http://host:port/patroni`: this member's REST API.
    public var apiURL: String
    public var tags: Tags
    /// The dynamic configuration written to the `config` key when this member creates the cluster,
    /// and used while the key is absent.
    public var initialDynamicConfig: DynamicConfig
    /// Local overrides that win over the `config` key (Patroni's local configuration).
    public var localOverrides: [String: JSONValue]
    /// How long a stop may take before it escalates to an immediate shutdown.
    public var stopTimeout: Duration
    /// How long a promotion may take before it counts as failed.
    public var promoteTimeout: Duration
    /// Whether a graceful shutdown of the agent stops postgres (Patroni's behaviour) or leaves it running.
    public var stopPostgresOnShutdown: Bool
    /// `watchdog.mode: required`: no promotion unless the watchdog is armed first.
    public var watchdogRequired: Bool
    /// How much longer than ttl one step of the HA cycle may take before the lease keeper stops
    /// renewing the leader's lease (a stuck cycle must lose the lease): the status query's
    /// deadline, slot maintenance within its 10 s statement timeout, so that a slow but bounded step
    /// never costs the lease.
    public var stepAllowance: Duration = .seconds(15)
    /// How long a hook may run before it is killed (`hook_timeout`).
    public var hookTimeout: Duration = .seconds(60)
    /// How long postgres may take to accept connections after a start (crash recovery included).
    public var startTimeout: Duration = .seconds(60)
    /// `postgresql.use_slots` in the agent's file (it wins over the `config` key's); nil: not set.
    public var localUseSlots: Bool?

    public init(
        name: String, connURL: String, apiURL: String, tags: Tags = Tags(),
        initialDynamicConfig: DynamicConfig = DynamicConfig(), localOverrides: [String: JSONValue] = [:],
        stopTimeout: Duration = .seconds(30), promoteTimeout: Duration = .seconds(30),
        stopPostgresOnShutdown: Bool = true, watchdogRequired: Bool = false
    ) {
        self.watchdogRequired = watchdogRequired
        self.name = name
        self.connURL = connURL
        self.apiURL = apiURL
        self.tags = tags
        self.initialDynamicConfig = initialDynamicConfig
        self.localOverrides = localOverrides
        self.stopTimeout = stopTimeout
        self.promoteTimeout = promoteTimeout
        self.stopPostgresOnShutdown = stopPostgresOnShutdown
    }
}

/// Hooks an operator can attach (Patroni's callbacks and pre_promote).
public struct HAHooks: Sendable {
    /// Runs before a promotion, bounded by the hook timeout; returning false (or timing out) vetoes
    /// it (the leader key is then released). The loop keeps renewing the lease meanwhile.
    public var prePromote: (@Sendable () async -> Bool)?
    /// Starts Patroni's callback for an event (`on_start`, `on_stop`, `on_restart`, `on_reload`,
    /// `on_role_change`) with the role; returns at once (it runs beside the loop, bounded by the
    /// hook timeout), so a hung VIP script never delays lease renewal.
    public var callback: (@Sendable (_ event: String, _ role: Member.Role) async -> Void)?
    /// Runs before a graceful stop of postgres (Patroni's `before_stop`), bounded by the hook
    /// timeout; its outcome does not change the stop. Never run for a fence.
    public var beforeStop: (@Sendable () async -> Void)?
    /// `POST /reload`: re-reads the agent's configuration file and applies what can change
    /// without an agent restart; returns a sentence saying what changed, or throws why the file
    /// could not be used (postgres is then not reloaded).
    public var reloadConfiguration: (@Sendable () async throws -> String)?
    /// `postgresql.pg_hba`/`pg_ident` of the agent's file as last read (they win over the
    /// `config` key's); nil: none given.
    public var localAccessRules: (@Sendable () -> AccessRules)?

    public init(
        prePromote: (@Sendable () async -> Bool)? = nil,
        callback: (@Sendable (_ event: String, _ role: Member.Role) async -> Void)? = nil,
        beforeStop: (@Sendable () async -> Void)? = nil,
        reloadConfiguration: (@Sendable () async throws -> String)? = nil
    ) {
        self.beforeStop = beforeStop
        self.prePromote = prePromote
        self.callback = callback
        self.reloadConfiguration = reloadConfiguration
    }
}

/// The port through which the loop asks peers for their status (their REST `GET /patroni`) and
/// for failsafe confirmations. `BatonAgent` implements it over HTTP; tests fake it.
public protocol PeerProbe: Sendable {
    /// The status of each member, within a short deadline; unreachable peers are reported as such.
    func status(of members: [Member]) async -> [PeerStatus]
    /// Asks every member in `members` (name → API URL) to confirm `leader` as primary while the
    /// store is unreachable (`POST /failsafe` with the leader's `name`, `conn_url` and `api_url`:
    /// Patroni's standbys fail the request without all three); true only if every one confirms.
    func confirmFailsafe(leader: String, connURL: String, apiURL: String, members: [String: String]) async -> Bool
}

/// A watchdog device kept alive only while this node holds the lease (`/dev/watchdog` in
/// production; a stand-in file in tests).
public protocol Watchdog: Sendable {
    /// Arms (if needed) and pets the watchdog, with `timeout` until it fires.
    func keepAlive(timeout: Duration) async throws
    /// Disarms it cleanly (magic close), when this node stops being primary.
    func disarm() async throws
}

/// A fencing backstop that outlives the agent: armed with the lease deadline while this node is
/// primary, it stops postgres when the deadline passes without a re-arm, even if the agent is
/// frozen (SIGSTOP) or dead (SIGKILL). `BatonAgent` runs it as a separate guard process; the
/// simulated cluster runs it beside the simulated node.
public protocol FenceGuard: Sendable {
    /// Stops postgres once `remaining` has passed unless re-armed or disarmed before.
    func arm(remaining: Duration) async
    func disarm() async
    /// Whether the guard runs (after restarting one that died): the HA loop does not lead, nor
    /// race, without it.
    var isRunning: Bool { get }
}
