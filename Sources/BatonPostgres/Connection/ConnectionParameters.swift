/// Where and as whom to connect. The password is kept in memory only and never printed.
public struct ConnectionParameters: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    /// A libpq passfile (`.pgpass` format) used when `password` is nil.
    public var passfile: String?
    public var database: String
    public var applicationName: String
    /// The whole connection attempt (all addresses, TLS, authentication) must finish in this time.
    public var connectTimeout: Duration
    /// Server-side `statement_timeout` for the session; queries also get a client-side PQcancel
    /// shortly after it, in case the server does not answer.
    public var statementTimeout: Duration
    /// More servers libpq tries, in order, after `host:port` (libpq multi-host); empty for one server.
    public var alternateHosts: [(host: String, port: Int)] = []
    /// libpq's `target_session_attrs` (`read-write`, `read-only`, `primary`, `standby`, `any`); with
    /// `alternateHosts`, libpq skips servers that do not match. nil leaves libpq's default (`any`).
    public var targetSessionAttrs: String?
    /// False for a server that refuses the `options` startup parameter (PgBouncer's admin
    /// console): no server-side statement_timeout then, the client-side cancel stays.
    public var sendsServerOptions = true

    public init(
        host: String, port: Int, user: String, password: String? = nil, passfile: String? = nil,
        database: String = "postgres", applicationName: String = "baton",
        connectTimeout: Duration = .seconds(3), statementTimeout: Duration = .seconds(10)
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.passfile = passfile
        self.database = database
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
    }

    /// `user@host:port/database` (`user@h1:p1,h2:p2/database` with alternates), without secrets.
    public var description: String {
        let servers = ([(host: host, port: port)] + alternateHosts).map { "\($0.host):\($0.port)" }
        return "\(user)@\(servers.joined(separator: ","))/\(database)"
    }

    /// libpq keyword/value pairs (password included: they go to libpq, never to a log).
    var keywordValues: [(String, String)] {
        var pairs: [(String, String)] = [
            ("host", ([host] + alternateHosts.map(\.host)).joined(separator: ",")),
            ("port", ([port] + alternateHosts.map(\.port)).map(String.init).joined(separator: ",")),
            ("user", user),
            ("dbname", database),
            ("application_name", applicationName),
            // libpq's own timeout is a backstop only: the poll loop enforces `connectTimeout`.
            ("connect_timeout", String(max(2, Int(connectTimeout.components.seconds) + 1))),
            ("keepalives", "1"),
            ("keepalives_idle", "5"),
            ("keepalives_interval", "2"),
            ("keepalives_count", "3"),
            ("sslmode", "prefer"),
        ]
        if sendsServerOptions {
            // PostgreSQL takes at most 2^31 - 1 ms; a longer timeout (a programmatic one) is that.
            pairs.append(
                ("options", "-c statement_timeout=\(min(max(1, statementTimeout.milliseconds), Int64(Int32.max)))"))
        }
        if let targetSessionAttrs { pairs.append(("target_session_attrs", targetSessionAttrs)) }
        if let password { pairs.append(("password", password)) }
        if let passfile { pairs.append(("passfile", passfile)) }
        return pairs
    }
}
