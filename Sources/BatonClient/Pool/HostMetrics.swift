import Metrics

/// swift-metrics instruments for one server, dimensioned by `host` (member name and address) and
/// `pool` (`primary` or `replica`).
struct HostMetrics: Sendable {
    /// Statements run (`baton_client_queries_total`).
    let queries: Counter
    /// Statements and acquisitions that failed (`baton_client_errors_total`).
    let errors: Counter
    /// How long statements took, as the client saw them (`baton_client_statement_seconds`).
    let statement: Timer
    /// Time spent acquiring a connection (`baton_client_acquire_wait_seconds`).
    let acquireWait: Timer
    /// Connections handed out (`baton_client_connections_in_use`).
    let inUse: Gauge
    /// Connections idle in the pool (`baton_client_connections_idle`).
    let idle: Gauge
    /// Replica breaker state: 0 closed, 1 half-open, 2 open (`baton_client_breaker_state`).
    let breaker: Gauge

    init(server: String, pool: String) {
        let dimensions = [("host", server), ("pool", pool)]
        queries = Counter(label: "baton_client_queries_total", dimensions: dimensions)
        errors = Counter(label: "baton_client_errors_total", dimensions: dimensions)
        statement = Timer(
            label: "baton_client_statement_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        acquireWait = Timer(
            label: "baton_client_acquire_wait_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        inUse = Gauge(label: "baton_client_connections_in_use", dimensions: dimensions)
        idle = Gauge(label: "baton_client_connections_idle", dimensions: dimensions)
        breaker = Gauge(label: "baton_client_breaker_state", dimensions: dimensions)
    }
}
