/// `baton pooler`: PgBouncer kept pointed at the cluster. A read-write database follows the
/// primary; a read-only one follows the running replicas within a lag limit. What PgBouncer
/// must be told is decided here, from the cluster view alone; the pooler only writes the
/// include file and talks to PgBouncer's admin console.

/// One PgBouncer database the pooler manages: the name clients use, the database on the servers,
/// and whom it follows.
public struct PoolerDatabase: Hashable, Sendable {
    public enum Role: String, Hashable, Sendable, CaseIterable {
        /// The primary: reads and writes.
        case primary
        /// Running replicas within the lag limit (the primary when none is): reads only.
        case replica
    }

    public var name: String
    public var dbname: String
    public var role: Role

    public init(name: String, dbname: String, role: Role) {
        self.name = name
        self.dbname = dbname
        self.role = role
    }

    /// `NAME=ROLE[:DBNAME]` (`app=primary:app`, `app_ro=replica`): the database on the servers is
    /// NAME when DBNAME is left out. Names are PostgreSQL identifiers PgBouncer takes unquoted.
    public static func parse(_ text: String) -> Result<PoolerDatabase, PoolerSettingError> {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2 else {
            return .failure(
                PoolerSettingError("'\(text)': expected NAME=ROLE[:DBNAME], e.g. app=primary or app_ro=replica:app"))
        }
        let name = parts[0]
        let roleAndDatabase = parts[1].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(
            String.init)
        guard let role = Role(rawValue: roleAndDatabase[0]) else {
            return .failure(
                PoolerSettingError("'\(text)': the role must be primary or replica, got '\(roleAndDatabase[0])'"))
        }
        let dbname = roleAndDatabase.count == 2 ? roleAndDatabase[1] : name
        for (what, value) in [("database name", name), ("server database", dbname)] where !isName(value) {
            return .failure(
                PoolerSettingError(
                    "'\(text)': the \(what) '\(value)' must be 1-63 letters, digits or _ (starting with a letter or _)")
            )
        }
        return .success(PoolerDatabase(name: name, dbname: dbname, role: role))
    }

    static func isName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, text.utf8.count <= 63 else { return false }
        let letters = ("a"..."z").contains(first) || ("A"..."Z").contains(first) || first == "_"
        return letters
            && text.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
            }
    }
}

public struct PoolerSettingError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A server a database points at.
public struct PoolerServer: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }

    public static func < (a: PoolerServer, b: PoolerServer) -> Bool { (a.host, a.port) < (b.host, b.port) }
}

/// What the pooler tells PgBouncer.
public enum PoolerPlan {
    /// The servers each database should point at now; a database missing from the answer keeps
    /// what it has (unknown is not "nowhere"): a primary database while no member leads (or the
    /// leader's address cannot be read), a replica database while neither a usable replica nor
    /// the primary is known.
    public static func targets(
        _ view: ClusterView, databases: [PoolerDatabase], maxLagBytes: UInt64
    ) -> [String: [PoolerServer]] {
        let leader = view.leaderMember.flatMap { member -> PoolerServer? in
            // Only a leader running as primary takes writes through the pooler.
            guard member.role == .primary, member.state == .running else { return nil }
            return server(member)
        }
        let reference = view.status?.optime ?? view.leaderMember?.xlogLocation
        let allReplicas = view.members.filter { member in
            guard member.name != view.leader?.member, member.role == .replica, member.state == .running,
                !member.tags.noLoadBalance
            else { return false }
            // Lag unknown is not "no lag": without both positions the replica is left out.
            guard let reference, let position = member.xlogLocation else { return false }
            return reference.bytesAhead(of: position) <= maxLagBytes
        }.compactMap(server).sorted()
        // PgBouncer takes one port for a database's host list: the replicas on the port most of
        // them use (the lowest such port on a tie), the others left out.
        let byPort = Dictionary(grouping: allReplicas, by: \.port)
        let port = byPort.max { a, b in (a.value.count, b.key) < (b.value.count, a.key) }?.key
        let replicas = allReplicas.filter { $0.port == port }
        var result: [String: [PoolerServer]] = [:]
        for database in databases {
            switch database.role {
            case .primary:
                if let leader { result[database.name] = [leader] }
            case .replica:
                if !replicas.isEmpty {
                    result[database.name] = replicas
                } else if let leader {
                    result[database.name] = [leader]
                }
            }
        }
        return result
    }

    /// A member's server from its `conn_url`; nil when unreadable or not safe to write into
    /// PgBouncer's file.
    static func server(_ member: Member) -> PoolerServer? {
        guard let (host, port) = ConnURL.hostAndPort(member.connURL) else { return nil }
        let server = PoolerServer(host: host, port: port)
        return isSafe(server) ? server : nil
    }

    /// The include file: PgBouncer's `[databases]` section for `targets`, in the databases'
    /// order; each line names the server database and the hosts and ports (several: round robin).
    public static func includeText(databases: [PoolerDatabase], targets: [String: [PoolerServer]]) -> String {
        var lines = [
            "; Managed by baton pooler: rewritten when the cluster's topology changes.",
            "[databases]",
        ]
        for database in databases {
            guard let servers = targets[database.name], !servers.isEmpty else { continue }
            // One port for the list (targets gives servers of one port).
            let hosts = servers.map(\.host).joined(separator: ",")
            lines.append("\(database.name) = host=\(hosts) port=\(servers[0].port) dbname=\(database.dbname)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The targets an include file written by `includeText` holds, for the databases given (a
    /// pooler that restarts keeps what PgBouncer was told); lines it does not recognise are
    /// left out.
    public static func parseInclude(_ text: String, databases: [PoolerDatabase]) -> [String: [PoolerServer]] {
        var targets: [String: [PoolerServer]] = [:]
        let names = Set(databases.map(\.name))
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { part in
                String(part.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
            }
            guard parts.count == 2, names.contains(parts[0]) else { continue }
            var settings: [String: String] = [:]
            for pair in parts[1].split(separator: " ") {
                let keyValue = pair.split(separator: "=", maxSplits: 1).map(String.init)
                if keyValue.count == 2 { settings[keyValue[0]] = keyValue[1] }
            }
            guard let hosts = settings["host"], let port = settings["port"].flatMap({ Int($0) }) else { continue }
            let servers = hosts.split(separator: ",").map { PoolerServer(host: String($0), port: port) }
            if !servers.isEmpty, servers.allSatisfy(isSafe) { targets[parts[0]] = servers }
        }
        return targets
    }

    /// Whether the host lists hold only characters PgBouncer's config parser takes in a value
    /// (a hostile member key could otherwise add a setting to the line).
    public static func isSafe(_ server: PoolerServer) -> Bool {
        !server.host.isEmpty && server.host.utf8.count <= 255 && (1...65535).contains(server.port)
            && server.host.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "."
                    || $0 == "-" || $0 == ":" || $0 == "_"
            }
    }
}

/// A pooler's own key, `poolers/<name>` on its session: who it is and what it does now, for
/// `baton list`, `GET /cluster` and the leader.
public struct PoolerRecord: Codable, Hashable, Sendable {
    public var name: String
    /// `following`, `store_unreachable` (keeping its last configuration), `pgbouncer_unreachable`.
    public var state: String
    /// The primary the read-write databases point at (`host:port`), when known.
    public var primary: String?
    /// Replicas the read-only databases point at.
    public var replicas: [String]?
    /// The databases it manages (`app=primary`, `app_ro=replica`).
    public var databases: [String]
    public var version: String?
    /// When the record was written (ISO 8601).
    public var updated: String?
    /// The switchover (the failover key's revision) for which its read-write databases are
    /// paused: in-flight transactions finished, new ones wait in PgBouncer.
    public var pausedFor: Int64?
    /// The switchover for which pausing failed (PgBouncer did not finish in time); it resumed.
    public var pauseFailedFor: Int64?
    /// `false` when the pooler does not pause for a switchover (`--no-pause-on-switchover`): it
    /// re-points and cuts the old primary's connections like on a failover. Absent: it pauses.
    public var pauses: Bool?

    enum CodingKeys: String, CodingKey {
        case name, state, primary, replicas, databases, version, updated, pauses
        case pausedFor = "paused_for"
        case pauseFailedFor = "pause_failed_for"
    }

    /// Whether it manages a read-write database (so a switchover waits for it to pause).
    public var followsPrimary: Bool { databases.contains { $0.hasSuffix("=primary") } }

    /// Whether a planned switchover waits for it: it manages a read-write database, follows the
    /// cluster and pauses for switchovers.
    public var pausesForSwitchover: Bool { followsPrimary && state == "following" && pauses != false }

    /// A pooler's name: letters, digits, `.`, `_`, `-` (it is a key and a table cell).
    public static func isName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 128
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "."
                    || $0 == "_" || $0 == "-"
            }
    }

    public init(
        name: String, state: String, primary: String?, replicas: [String]?, databases: [String],
        version: String? = nil, updated: String? = nil
    ) {
        self.name = name
        self.state = state
        self.primary = primary
        self.replicas = replicas
        self.databases = databases
        self.version = version
        self.updated = updated
    }
}

/// What `baton pooler` reports on its status endpoint (`GET /health`, `GET /metrics`): whether
/// it follows the cluster, and what it did.
public struct PoolerHealth: Codable, Hashable, Sendable {
    public var name: String
    /// `starting` (no topology read yet), `following`, `store_unreachable` (etcd cannot be read:
    /// PgBouncer keeps the last configuration), `pgbouncer_unreachable`, `name_taken` (another
    /// pooler is registered under this name: this one is not, and no leader waits for it).
    public var state: String
    public var primary: String?
    public var replicas: [String]?
    public var storeReachable: Bool
    public var pgbouncerReachable: Bool
    /// Seconds since the topology was last read from etcd (nil before the first read).
    public var topologyAgeSeconds: Double?
    /// The read-write databases are paused for a switchover now.
    public var paused: Bool
    public var pausesForSwitchover: Bool
    /// Include-file rewrites put in force, changes of primary followed, switchovers paused for,
    /// pauses that failed, and how long the last pause took to take hold.
    public var repoints: Int = 0
    public var primaryChanges: Int = 0
    public var switchoverPauses: Int = 0
    public var pauseFailures: Int = 0
    public var lastPauseSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case name, state, primary, replicas, paused, repoints
        case storeReachable = "store_reachable"
        case pgbouncerReachable = "pgbouncer_reachable"
        case topologyAgeSeconds = "topology_age_seconds"
        case pausesForSwitchover = "pauses_for_switchover"
        case primaryChanges = "primary_changes"
        case switchoverPauses = "switchover_pauses"
        case pauseFailures = "pause_failures"
        case lastPauseSeconds = "last_pause_seconds"
    }

    public init(name: String, pausesForSwitchover: Bool) {
        self.name = name
        self.state = "starting"
        self.storeReachable = false
        self.pgbouncerReachable = false
        self.paused = false
        self.pausesForSwitchover = pausesForSwitchover
    }

    /// `GET /health` answers 200 only while the pooler follows the cluster and has read it within
    /// `maxTopologyAge` (it reads it at least every 2 s: an older topology means its passes are
    /// stuck): one that cannot read etcd (its PgBouncer may point at an old primary) or reach
    /// PgBouncer answers 503.
    public var healthy: Bool {
        state == "following" && (topologyAgeSeconds.map { $0 < Self.maxTopologyAge } ?? false)
    }

    public static let maxTopologyAge = 15.0

    /// The figures in Prometheus' text format.
    public var prometheusText: String {
        let label = "pooler=\"\(name)\""
        func flag(_ value: Bool) -> String { value ? "1" : "0" }
        var lines: [String] = []
        func gauge(_ metric: String, _ help: String, _ value: String, type: String = "gauge") {
            lines += ["# HELP \(metric) \(help)", "# TYPE \(metric) \(type)", "\(metric){\(label)} \(value)"]
        }
        gauge("baton_pooler_following", "1 while the pooler follows the cluster (state following).", flag(healthy))
        gauge("baton_pooler_store_reachable", "1 while etcd answers the pooler.", flag(storeReachable))
        gauge(
            "baton_pooler_pgbouncer_reachable", "1 while PgBouncer's admin console answers.", flag(pgbouncerReachable))
        gauge(
            "baton_pooler_topology_age_seconds", "Seconds since the topology was last read from etcd (-1: never).",
            topologyAgeSeconds.map { "\(($0 * 1000).rounded() / 1000)" } ?? "-1")
        gauge("baton_pooler_paused", "1 while the read-write databases are paused for a switchover.", flag(paused))
        gauge(
            "baton_pooler_repoints_total", "Include-file rewrites put in force (RELOAD).", "\(repoints)",
            type: "counter")
        gauge(
            "baton_pooler_primary_changes_total", "Changes of primary the read-write databases followed.",
            "\(primaryChanges)", type: "counter")
        gauge(
            "baton_pooler_switchover_pauses_total", "Planned switchovers the read-write databases were paused for.",
            "\(switchoverPauses)", type: "counter")
        gauge(
            "baton_pooler_pause_failures_total", "Pauses that did not take hold within pooler_pause_timeout.",
            "\(pauseFailures)", type: "counter")
        return lines.joined(separator: "\n") + "\n"
    }
}
