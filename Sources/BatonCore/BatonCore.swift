/// BatonCore: the value model of a Baton cluster (members, roles, LSNs, timelines, the leader lock,
/// the cluster view, dynamic configuration, timing policy), the pure HA decision state machine, and
/// the ports (`ClusterStore`, `PostgresNode`, `MonotonicClock`) through which the I/O shell feeds it.
///
/// This module imports nothing but the standard library: every decision the agent can take is
/// testable in milliseconds with no clock, socket or process.
public enum BatonCore {
    /// The version of Baton, reported by `baton version`, the REST API and member keys.
    public static let version = "0.1.0"
}
