import BatonCore

/// A request from an operator (the REST API's `POST /restart`, `/reload`, `/reinitialize`,
/// `DELETE /restart`) that the HA loop carries out itself, between two decisions of a cycle, so
/// that it never races one: a restart is not mistaken for a crash, a re-clone never overlaps a
/// start, and a leader renews its lease right before it begins.
public enum OperatorRequest: Hashable, Sendable, CustomStringConvertible {
    /// Restart postgres now, or schedule it (`scheduledAt`).
    case restart(RestartRequest)
    /// Forget a scheduled restart.
    case cancelScheduledRestart
    /// Re-read the agent's configuration file (when the agent supplies a hook) and reload postgres.
    case reload
    /// Erase the local data directory and clone it again from the leader (never on the leader).
    case reinitialize(force: Bool)

    public var description: String {
        switch self {
        case .restart(let request): return request.scheduledAt == nil ? "restart" : "schedule restart"
        case .cancelScheduledRestart: return "cancel scheduled restart"
        case .reload: return "reload"
        case .reinitialize: return "reinitialize"
        }
    }
}

/// `POST /restart`'s conditions, as Patroni takes them.
public struct RestartRequest: Hashable, Sendable {
    /// Restart only if this member runs in this role (`primary` or `replica`).
    public var role: Member.Role?
    /// Restart only if postgres runs an older version (`server_version_num`, e.g. 150004).
    public var postgresVersionBelow: Int?
    /// Restart only if postgres reports a parameter change that needs a restart.
    public var onlyIfPending: Bool
    /// How long postgres may take to come back; on the leader, past it the leader key is released
    /// so that a replica takes over (default: `primary_start_timeout`).
    public var timeout: Duration?
    /// When to restart (wall-clock seconds since 1970), or nil for now.
    public var scheduledAt: Double?
    /// `scheduledAt` as the operator wrote it, for `GET /patroni`.
    public var scheduledAtText: String?

    public init(
        role: Member.Role? = nil, postgresVersionBelow: Int? = nil, onlyIfPending: Bool = false,
        timeout: Duration? = nil, scheduledAt: Double? = nil, scheduledAtText: String? = nil
    ) {
        self.role = role
        self.postgresVersionBelow = postgresVersionBelow
        self.onlyIfPending = onlyIfPending
        self.timeout = timeout
        self.scheduledAt = scheduledAt
        self.scheduledAtText = scheduledAtText
    }

    /// Why the conditions do not hold for `status`, or nil when they do.
    public func unmetCondition(_ status: HAStatus) -> String? {
        if let role {
            let current = status.role
            let matches =
                role == .primary ? current == .primary : role == .replica ? current == .replica : current == role
            if !matches { return "role is \(current), not \(role)" }
        }
        if let below = postgresVersionBelow {
            guard let running = status.postgres.serverVersion else { return "the postgres version is not known" }
            if running >= below { return "postgres version \(running) is not older than \(below)" }
        }
        if onlyIfPending, !status.postgres.pendingRestart { return "no restart is pending" }
        return nil
    }
}

/// The loop's answer, with an HTTP status code and a sentence for a person.
public struct OperatorReply: Hashable, Sendable {
    public var status: Int
    public var message: String

    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }
}
