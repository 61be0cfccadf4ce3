/// The cluster-wide dynamic configuration held in the `config` key, in Patroni's layout.
///
/// The JSON document is kept whole, so that keys Baton does not interpret survive edits; typed
/// accessors read it with Patroni's defaults.
public struct DynamicConfig: Hashable, Sendable, Codable {
    public var document: [String: JSONValue]

    public init(_ document: [String: JSONValue] = [:]) { self.document = document }

    public init(from decoder: any Decoder) throws {
        self.document = try [String: JSONValue](from: decoder)
    }

    public func encode(to encoder: any Encoder) throws { try document.encode(to: encoder) }

    public static let defaultTTL = 30
    public static let defaultLoopWait = 10
    public static let defaultRetryTimeout = 10
    public static let defaultMaximumLagOnFailover: UInt64 = 1_048_576

    /// A duration setting; the default when it is missing or out of range (`validationErrors`
    /// names it: an invalid document is never put in force, but reading one must not trap).
    private func seconds(_ key: String, _ fallback: Int) -> Duration {
        guard let value = document[key]?.doubleValue, let duration = Duration(checkedSeconds: value) else {
            return .seconds(fallback)
        }
        return duration
    }

    public var ttl: Duration { seconds("ttl", Self.defaultTTL) }
    public var loopWait: Duration { seconds("loop_wait", Self.defaultLoopWait) }
    public var retryTimeout: Duration { seconds("retry_timeout", Self.defaultRetryTimeout) }
    public var primaryStartTimeout: Duration { seconds("primary_start_timeout", 300) }
    /// How long a leader handing over (a switchover) waits for the registered poolers
    /// (`baton pooler`) to `PAUSE` their read-write databases: in-flight transactions finish on it,
    /// new ones wait in PgBouncer for the new primary.
    public var poolerPauseTimeout: Duration { seconds("pooler_pause_timeout", 5) }
    /// When a pooler has not paused in time: true refuses the switchover, false (the default) goes
    /// on without it (its clients then see errors, as without a pooler).
    public var poolerPauseRequired: Bool { document["pooler_pause_required"]?.boolValue ?? false }
    /// How long a stop of postgres may take before it is cut short (an immediate shutdown): the
    /// agent's own `stop_timeout`, or for a primary in synchronous mode `primary_stop_timeout`
    /// when set (Patroni: availability over a clean shutdown checkpoint; the synchronous
    /// standbys have every commit).
    public func stopTimeout(primary: Bool, agentDefault: Duration) -> Duration {
        guard primary, synchronousMode, let limit = primaryStopTimeout else { return agentDefault }
        return limit
    }

    /// Patroni's `primary_stop_timeout`: in synchronous mode, how long a primary's stop may take
    /// before it is cut short (an immediate shutdown); nil when unset or 0 (the agent's own
    /// `stop_timeout` applies).
    public var primaryStopTimeout: Duration? {
        guard let value = document["primary_stop_timeout"]?.doubleValue, value > 0,
            let duration = Duration(checkedSeconds: value)
        else { return nil }
        return duration
    }
    public var maximumLagOnFailover: UInt64 {
        document["maximum_lag_on_failover"]?.intValue.map { UInt64(max(0, $0)) } ?? Self.defaultMaximumLagOnFailover
    }
    /// Patroni's `maximum_lag_on_syncnode`: bytes a synchronous standby may fall behind before a
    /// healthy asynchronous one takes its place; nil when unset or not positive (off).
    public var maximumLagOnSyncNode: UInt64? {
        guard let value = document["maximum_lag_on_syncnode"]?.intValue, value > 0 else { return nil }
        return UInt64(value)
    }
    public var checkTimeline: Bool { document["check_timeline"]?.boolValue ?? false }
    /// `synchronous_mode`: true, or `quorum` (Patroni 4's quorum commit, which is synchronous
    /// mode too).
    public var synchronousMode: Bool { quorumCommit || (document["synchronous_mode"]?.boolValue ?? false) }
    /// `synchronous_mode: quorum`: commits wait for any `synchronous_node_count` of the listed
    /// standbys (`ANY n`), and a new leader needs the votes the `sync` key's `quorum` asks for.
    public var quorumCommit: Bool {
        guard case .string(let text) = document["synchronous_mode"] else { return false }
        return text.trimmingWhitespace().lowercased() == "quorum"
    }
    public var synchronousModeStrict: Bool { document["synchronous_mode_strict"]?.boolValue ?? false }
    public var synchronousNodeCount: Int { max(1, document["synchronous_node_count"]?.intValue ?? 1) }
    public var failsafeMode: Bool { document["failsafe_mode"]?.boolValue ?? false }
    public var pause: Bool { document["pause"]?.boolValue ?? false }
    public var postgresql: [String: JSONValue] { document["postgresql"]?.objectValue ?? [:] }
    public var parameters: [String: JSONValue] { postgresql["parameters"]?.objectValue ?? [:] }
    public var usePgRewind: Bool { postgresql["use_pg_rewind"]?.boolValue ?? true }
    /// `postgresql.use_slots`: one physical replication slot per member on the leader (Patroni's
    /// default true); nil when the key does not say (the agent's file may).
    public var useSlots: Bool? { postgresql["use_slots"]?.boolValue }
    /// Patroni 4's `member_slots_ttl`: how long the leader keeps the slot of a member whose key
    /// is gone (seconds, or `30min`, `1h`, `90s`); default 30 minutes, 0 drops it at once.
    public var memberSlotsTTL: Duration {
        guard let raw = document["member_slots_ttl"] else { return .seconds(1800) }
        // Unreadable (validationErrors names it): slots are kept rather than dropped early.
        return Self.duration(raw) ?? .seconds(Duration.maximumSettingSeconds)
    }

    /// A duration as Patroni takes it: a number of seconds, or a number with a unit (`ms`, `s`,
    /// `min`, `h`, `d`); nil when it is neither or out of range.
    static func duration(_ value: JSONValue) -> Duration? {
        if let seconds = value.doubleValue {
            guard seconds.isFinite, seconds >= 0 else { return nil }
            // Longer than Baton's longest setting (a year): that longest, not a fallback.
            return Duration(checkedSeconds: min(seconds, Duration.maximumSettingSeconds))
        }
        guard case .string(let text) = value else { return nil }
        let trimmed = text.trimmingWhitespace()
        let digits = trimmed.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        guard let number = Double(digits), number.isFinite, number >= 0 else { return nil }
        let factor: Double
        switch String(trimmed.dropFirst(digits.count)).trimmingWhitespace().lowercased() {
        case "ms": factor = 0.001
        case "", "s": factor = 1
        case "min": factor = 60
        case "h": factor = 3600
        case "d": factor = 86400
        default: return nil
        }
        return Duration(checkedSeconds: min(number * factor, Duration.maximumSettingSeconds))
    }
    /// How many entries the `history` key keeps (the newest); 0 keeps them all (Patroni's
    /// `max_timelines_history`).
    public var maxTimelinesHistory: Int {
        guard let value = document["max_timelines_history"]?.intValue, value > 0 else { return 0 }
        return value
    }

    /// `history` with `entry` appended, trimmed to `maxTimelinesHistory`.
    public func history(_ history: [HistoryEntry], appending entry: HistoryEntry) -> [HistoryEntry] {
        let all = history + [entry]
        let keep = maxTimelinesHistory
        return keep > 0 && all.count > keep ? Array(all.suffix(keep)) : all
    }

    /// Applies an RFC 7386 merge patch.
    public func merging(patch: JSONValue) -> DynamicConfig {
        DynamicConfig(JSONValue.object(document).merging(patch: patch).objectValue ?? [:])
    }

    /// Problems that make this configuration unsafe or meaningless; empty when it may be used.
    public func validationErrors() -> [String] {
        var errors: [String] = standbyClusterProblems()
        let durations: Set = [
            "ttl", "loop_wait", "retry_timeout", "primary_start_timeout", "primary_stop_timeout",
            "pooler_pause_timeout",
        ]
        let numeric = [
            "ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "primary_start_timeout",
            "primary_stop_timeout", "pooler_pause_timeout",
        ]
        for key in numeric {
            guard let raw = document[key] else { continue }
            guard let value = raw.doubleValue else {
                errors.append("\(key): expected a number, got \(raw)")
                continue
            }
            if !value.isFinite {
                errors.append("\(key): expected a finite number, got \(raw)")
            } else if value < 0 {
                errors.append("\(key): must not be negative, got \(value)")
            } else if durations.contains(key), value > Duration.maximumSettingSeconds {
                errors.append(
                    "\(key): must be at most \(Int(Duration.maximumSettingSeconds)) seconds (one year), got \(value)")
            } else if key == "maximum_lag_on_failover", raw.intValue == nil {
                errors.append("\(key): expected a whole number of bytes below 9e15, got \(value)")
            }
        }
        if let raw = document["maximum_lag_on_syncnode"], raw.intValue == nil {
            errors.append("maximum_lag_on_syncnode: expected a whole number of bytes (-1 or 0: off), got \(raw)")
        }
        if let raw = document["max_timelines_history"], !(raw.intValue.map { $0 >= 0 } ?? false) {
            errors.append("max_timelines_history: expected a whole number, 0 or more (0 keeps all), got \(raw)")
        }
        if let raw = document["synchronous_node_count"] {
            if !(raw.intValue.map { (1...1000).contains($0) } ?? false) {
                errors.append("synchronous_node_count: expected a whole number from 1 to 1000, got \(raw)")
            }
        }
        if let value = document["synchronous_mode"], value.boolValue == nil, !quorumCommit {
            errors.append("synchronous_mode: expected true, false or quorum, got \(value)")
        }
        let booleans = ["check_timeline", "synchronous_mode_strict", "failsafe_mode", "pause", "pooler_pause_required"]
        // A leader waits this long with its sync-standby upkeep held: a pause, not an outage.
        if let value = document["pooler_pause_timeout"]?.doubleValue, value.isFinite, !(0.1...30).contains(value) {
            errors.append("pooler_pause_timeout: expected 0.1 to 30 seconds, got \(value)")
        }
        for key in booleans {
            if let value = document[key], value.boolValue == nil {
                errors.append("\(key): expected true or false, got \(value)")
            }
        }
        do {
            _ = try TimingPolicy(ttl: ttl, loopWait: loopWait, retryTimeout: retryTimeout)
        } catch {
            errors.append(error.description)
        }
        errors += AccessRules.fromCluster(postgresql).problems
        if let raw = postgresql["use_slots"], raw.boolValue == nil {
            errors.append("postgresql.use_slots: expected true or false, got \(raw)")
        }
        if let raw = document["member_slots_ttl"], Self.duration(raw) == nil {
            errors.append("member_slots_ttl: expected seconds or a duration like 30min, got \(raw)")
        }
        return errors
    }
}

/// The timing of the HA loop, validated so that a leader can always renew, or fence itself, before
/// its lease could expire.
public struct TimingPolicy: Hashable, Sendable {
    public let ttl: Duration
    public let loopWait: Duration
    public let retryTimeout: Duration

    /// The lowest ttl Baton accepts (etcd grants leases of at least 2 s; fencing needs headroom).
    public static let minimumTTL: Duration = .seconds(4)

    public struct Invalid: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(ttl: Duration, loopWait: Duration, retryTimeout: Duration) throws(Invalid) {
        guard ttl >= Self.minimumTTL else {
            throw Invalid(description: "ttl must be at least \(Self.minimumTTL), got \(ttl)")
        }
        guard loopWait > .zero, retryTimeout > .zero else {
            throw Invalid(
                description: "loop_wait and retry_timeout must be positive, got \(loopWait) and \(retryTimeout)")
        }
        guard loopWait + retryTimeout * 2 <= ttl else {
            throw Invalid(
                description:
                    "loop_wait + 2 × retry_timeout must not exceed ttl (\(loopWait) + 2 × \(retryTimeout) > \(ttl)); "
                    + "lower loop_wait or retry_timeout, or raise ttl")
        }
        self.ttl = ttl
        self.loopWait = loopWait
        self.retryTimeout = retryTimeout
    }

    /// How long before the lease could expire a primary must have demoted itself: room for one
    /// stop of postgres and clock granularity.
    public var fencingMargin: Duration { min(retryTimeout, ttl / 4) }
}
