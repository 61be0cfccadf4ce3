import BatonAgent
import BatonCore
import Foundation
import Testing

@Suite struct AgentConfigurationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let secrets = ["BATON_SUPERUSER_PASSWORD": "s", "BATON_REPLICATION_PASSWORD": "r"]

    static let minimal = """
        scope: demo
        name: node1
        etcd3:
          hosts: ["127.0.0.1:2379"]
        postgresql:
          data_dir: /var/lib/baton/data
        """

    /// Audit finding: a parameter of 1e19 trapped (`Int64(number)`) at startup and in
    /// `baton check-config`; it is written as a number now, and a non-finite one is refused.
    @Test func hugeAndNonFiniteParameterNumbers() throws {
        let huge = try AgentConfiguration.parse(
            Self.minimal + "\n  parameters: {work_mem: 1e19, max_connections: 100}", environment: Self.secrets)
        #expect(huge.postgresql.parameters["work_mem"] == "1e+19")
        #expect(huge.postgresql.parameters["max_connections"] == "100")
        #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.parse(Self.minimal + "\n  parameters: {work_mem: .inf}", environment: Self.secrets)
        }
    }

    @Test func theAnnotatedExampleLoads() throws {
        let configuration = try AgentConfiguration.load(
            path: Self.root.appendingPathComponent("agent.yml").path, environment: Self.secrets)
        #expect(configuration.scope == "demo")
        #expect(configuration.etcd.endpoints.count == 3)
        #expect(configuration.dynamicConfig.ttl == .seconds(30))
        #expect(configuration.postgresql.parameters["shared_buffers"] == "128MB")
        #expect(configuration.postgresql.superuser.password == "s")
    }

    /// Every key of agent.yml appears in docs/configuration.md.
    @Test func everyKeyIsDocumented() throws {
        let example = try String(contentsOf: Self.root.appendingPathComponent("agent.yml"), encoding: .utf8)
        let reference = try String(
            contentsOf: Self.root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        var keys: Set<String> = []
        for line in example.split(separator: "\n") {
            var text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("#") { text = String(text.dropFirst()).trimmingCharacters(in: .whitespaces) }
            guard let colon = text.firstIndex(of: ":") else { continue }
            let key = String(text[..<colon])
            if key.range(of: "^[a-z_0-9]+$", options: .regularExpression) != nil { keys.insert(key) }
        }
        #expect(keys.count > 40)
        for key in keys.sorted() where !["max_connections", "shared_buffers", "max_wal_senders"].contains(key) {
            let forms = ["`\(key)`", ".\(key)`", "`\(key),", ".\(key),", " \(key)`"]
            #expect(forms.contains { reference.contains($0) }, "docs/configuration.md does not document `\(key)`")
        }
    }

    /// Patroni's `postgresql.pg_hba`/`pg_ident` (before: refused as unknown keys) and
    /// `bootstrap.dcs.postgresql.pg_hba` as Patroni's example configuration writes them.
    @Test func accessRulesLoad() throws {
        let yaml =
            Self.minimal + """

                  pg_hba:
                    - host replication replicator 127.0.0.1/32 md5
                    - host all all 0.0.0.0/0 md5
                  pg_ident:
                    - omicron bryanh guest1
                bootstrap:
                  dcs:
                    postgresql:
                      pg_hba:
                        - host all all 10.0.0.0/8 scram-sha-256
                """
        let configuration = try AgentConfiguration.parse(yaml, environment: Self.secrets)
        #expect(configuration.postgresql.accessRules.hba?.count == 2)
        #expect(configuration.postgresql.accessRules.ident == ["omicron bryanh guest1"])
        let fromKey = AccessRules.fromCluster(configuration.dynamicConfig.postgresql)
        #expect(fromKey.rules.hba == ["host all all 10.0.0.0/8 scram-sha-256"] && fromKey.problems.isEmpty)
    }

    /// `bootstrap.initdb` and `postgresql.pgpass` as Patroni's example writes them (before:
    /// refused as unknown keys).
    @Test func initdbOptionsAndPgpassLoad() throws {
        let yaml =
            Self.minimal + """

                  pgpass: /tmp/pgpass0
                  listen: 10.0.0.5:5432
                bootstrap:
                  initdb:
                  - encoding: UTF8
                  - data-checksums
                  - locale: en_US.UTF-8
                """
        let configuration = try AgentConfiguration.parse(yaml, environment: Self.secrets)
        #expect(
            configuration.postgresql.initdbOptions == ["--encoding=UTF8", "--data-checksums", "--locale=en_US.UTF-8"])
        #expect(configuration.postgresql.pgpass == "/tmp/pgpass0")
        // The agent's own session goes to the one address postgres listens on (before: always
        // 127.0.0.1, where such a postgres does not listen).
        #expect(configuration.postgresql.localAddress == "10.0.0.5")
        let mapping = try AgentConfiguration.parse(
            Self.minimal + "\nbootstrap:\n  initdb: {encoding: UTF8, data-checksums: true}", environment: Self.secrets)
        #expect(mapping.postgresql.initdbOptions.sorted() == ["--data-checksums=true", "--encoding=UTF8"])
        let all = try AgentConfiguration.parse(
            Self.minimal.replacingOccurrences(of: "data_dir:", with: "listen: 0.0.0.0:5432\n  data_dir:"),
            environment: Self.secrets)
        #expect(all.postgresql.localAddress == "127.0.0.1")
    }

    /// Sections of a patroni.yml that mean nothing to the agent are accepted, not refused:
    /// patronictl's `ctl`, Python's thread tunings.
    /// Patroni keys whose value is what Baton does anyway are accepted with that value.
    @Test func patronisNoOpValuesAreAccepted() throws {
        let yaml =
            Self.minimal
            + "\n  use_unix_socket: false\n  use_unix_socket_repl: false\n  pg_ctl_timeout: 60"
            + "\n  remove_data_directory_on_diverged_timelines: false\nbootstrap:\n  method: initdb"
        _ = try AgentConfiguration.parse(yaml, environment: Self.secrets)
    }

    @Test func extraHeadersLoad() throws {
        let yaml =
            Self.minimal
            + "\nrestapi:\n  http_extra_headers:\n    X-Frame-Options: SAMEORIGIN\n    X-Count: 3\n"
            + "  https_extra_headers:\n    Strict-Transport-Security: max-age=31536000"
        let configuration = try AgentConfiguration.parse(yaml, environment: Self.secrets)
        #expect(
            configuration.restapi.httpExtraHeaders.map { "\($0.name)=\($0.value)" } == [
                "X-Count=3", "X-Frame-Options=SAMEORIGIN",
            ])
        #expect(configuration.restapi.httpsExtraHeaders.map(\.name) == ["Strict-Transport-Security"])
    }

    @Test func patronictlsSectionAndThreadTuningsAreAccepted() throws {
        let yaml =
            Self.minimal
            + "\nctl:\n  insecure: false\n  cacert: /etc/ssl/ca.pem\nthread_pool_size: 5\nthread_stack_size: 512kB"
        _ = try AgentConfiguration.parse(yaml, environment: Self.secrets)
    }

    @Test func defaultsAndSecretsFromTheEnvironment() throws {
        let configuration = try AgentConfiguration.parse(Self.minimal, environment: Self.secrets)
        #expect(configuration.namespace == "/service")
        #expect(configuration.restapi.listenPort == 8008)
        #expect(configuration.postgresql.port == 5432)
        #expect(configuration.postgresql.replication.username == "replicator")
        #expect(configuration.dynamicConfig.loopWait == .seconds(10))
        #expect(configuration.fenceGuard)
    }

    /// Every hook Patroni has is accepted. Before, `on_restart` and `on_reload` were refused by the
    /// loader (so `on_restart` could never fire) and `before_stop` did not exist.
    @Test func everyPatroniHookIsAccepted() throws {
        let yaml =
            Self.minimal + "\n  pre_promote: /bin/true\n  before_stop: /bin/true\n  hook_timeout: 5\n  callbacks:\n"
            + ["on_reload", "on_restart", "on_role_change", "on_start", "on_stop"].map { "    \($0): /bin/true\n" }
            .joined()
        let configuration = try AgentConfiguration.parse(yaml, environment: Self.secrets)
        #expect(configuration.callbacks.keys.sorted() == AgentConfiguration.callbackEvents)
        #expect(configuration.beforeStop == "/bin/true")
        #expect(configuration.hookTimeout == 5)
    }

    @Test func secretsAreNeverPrinted() throws {
        let configuration = try AgentConfiguration.parse(
            Self.minimal, environment: ["BATON_SUPERUSER_PASSWORD": "hunter2", "BATON_REPLICATION_PASSWORD": "r"])
        #expect(!"\(configuration.postgresql.superuser)".contains("hunter2"))
        #expect(!String(reflecting: configuration.postgresql.superuser).contains("hunter2"))
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        let yaml: String
        let message: String
        let line: Int?
        var testDescription: String { message }
    }

    static let bad: [Bad] = [
        Bad(yaml: minimal + "\nscopee: x", message: "unknown key 'scopee' (did you mean 'scope'?)", line: 7),
        Bad(yaml: minimal + "\nrestapi:\n  listen: nowhere", message: "restapi.listen: expected host:port", line: 8),
        Bad(
            yaml: minimal.replacingOccurrences(of: "/var/lib/baton/data", with: "relative/dir"),
            message: "must be an absolute path", line: 6),
        Bad(
            yaml: minimal + "\nbootstrap:\n  dcs:\n    ttl: 10\n    loop_wait: 10",
            message: "loop_wait + 2 × retry_timeout must not exceed ttl", line: nil),
        Bad(yaml: minimal + "\nbootstrap:\n  dcs:\n    ttl: thirty", message: "ttl: expected a number", line: nil),
        Bad(yaml: minimal + "\nlog:\n  level: loud", message: "log.level: must be one of", line: 8),
        Bad(
            yaml: minimal + "\nwatchdog:\n  mode: sometimes",
            message: "watchdog.mode: must be off, automatic or required", line: 8),
        Bad(yaml: "scope: [unclosed", message: "not valid YAML", line: nil),
        Bad(
            yaml: "name: n\netcd3: {hosts: [a:1]}\npostgresql: {data_dir: /d}", message: "scope: is required", line: nil
        ),
        Bad(
            yaml: minimal.replacingOccurrences(of: "name: node1", with: "name: node 1"), message: "may contain only",
            line: 2),
        Bad(yaml: minimal + "\npostgresql:\n  data_dir: /x", message: "duplicate key 'postgresql'", line: 5),
        Bad(
            yaml: minimal + "\nrestapi:\n  certfile: /etc/hosts",
            message: "give both restapi.certfile and restapi.keyfile",
            line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  verify_client: sometimes", message: "expected none, optional or required",
            line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  verify_client: required", message: "verifying client certificates needs TLS",
            line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  threads: 0", message: "expected 1 to 64 event-loop threads, got 0", line: nil
        ),
        Bad(yaml: minimal + "\nrestapi:\n  threads: many", message: "expected a whole number, got 'many'", line: nil),
        Bad(
            yaml: minimal.replacingOccurrences(of: "[\"127.0.0.1:2379\"]", with: "[\"127.0.0.1:99999\"]"),
            message: "hosts: '127.0.0.1:99999' is not host:port", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  max_connections: 0",
            message: "restapi.max_connections: expected 1 to 100000 connections at once, got 0", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  request_timeout: 0.5",
            message: "restapi.request_timeout: expected at least 1 second, got 0.5", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  idle_timeout: 1e300",
            message: "restapi.idle_timeout: expected seconds from 0",
            line: nil),
        Bad(
            yaml: minimal + "\n  hook_timeout: 0",
            message: "postgresql.hook_timeout: expected seconds between 0 and 3600",
            line: nil),
        Bad(
            yaml: minimal + "\n  callbacks:\n    on_demote: /bin/true", message: "unknown key 'on_demote'", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  certfile: /nonexistent/server.crt\n  keyfile: /nonexistent/server.key",
            message: "cannot read '/nonexistent/server.crt'", line: nil),
        // Audit findings: checked only when the server started (not by check-config or a reload).
        Bad(
            yaml: minimal + "\nrestapi:\n  allowlist: [10.0.0.0/33]",
            message: "restapi.allowlist: '10.0.0.0/33' is not an address or a network", line: nil),
        // pg_hba/pg_ident lines are checked by shape at load, named by item and line.
        Bad(
            yaml: minimal + "\n  pg_hba:\n    - local all all peer\n    - hots all all 10.0.0.0/8 md5",
            message: "postgresql.pg_hba[1]: 'hots' is not a connection type", line: 9),
        Bad(
            yaml: minimal + "\n  pg_hba: local all all peer", message: "postgresql.pg_hba: expected a list of lines",
            line: nil),
        Bad(
            yaml: minimal + "\n  pg_ident:\n    - just two", message: "expected 'MAPNAME SYSTEM-USERNAME PG-USERNAME'",
            line: nil),
        Bad(
            yaml: minimal + "\nbootstrap:\n  dcs:\n    postgresql:\n      pg_hba: [host all all md5]",
            message: "postgresql.pg_hba[0]: expected 'host DATABASE USER ADDRESS METHOD", line: nil),
        Bad(
            yaml: minimal + "\nbootstrap:\n  initdb:\n  - pgdata: /elsewhere",
            message: "bootstrap.initdb: 'pgdata' is set by Baton", line: 9),
        Bad(
            yaml: minimal + "\nbootstrap:\n  initdb:\n  - 'encoding; rm -rf /'",
            message: "is not an initdb option name", line: nil),
        Bad(
            yaml: minimal + "\n  pgpass: /var/lib/baton/data/pgpass",
            message: "postgresql.pgpass: '/var/lib/baton/data/pgpass' is inside the data directory", line: nil),
        Bad(yaml: minimal + "\n  pgpass: pgpass0", message: "expected the absolute path of a file", line: nil),
        Bad(
            yaml: minimal + "\n  pgpass: /var/lib/x/../baton/data/pgpass", message: "expected the absolute path",
            line: nil),
        // getopt takes unique prefixes: 'user' would be --username and lock the agent out.
        Bad(
            yaml: minimal + "\nbootstrap:\n  initdb:\n  - user: admin", message: "'user' is not an initdb option",
            line: nil),
        Bad(yaml: minimal + "\nbootstrap:\n  initdb:\n  - no-sync", message: "'no-sync' is set by Baton", line: nil),
        Bad(yaml: minimal + "\n  use_unix_socket: true", message: "use_unix_socket: refused", line: nil),
        Bad(
            yaml: minimal + "\nbootstrap:\n  method: wal_e",
            message: "bootstrap.method: names 'wal_e' but bootstrap.wal_e is missing", line: nil),
        Bad(
            yaml: minimal + "\n  pg_hba:\n    - '# no rule at all'", message: "postgresql.pg_hba: has no rule",
            line: nil),
        // Patroni keys Baton does not take are refused by name with the reason, not as typos.
        Bad(
            yaml: minimal.replacingOccurrences(of: "etcd3:", with: "etcd:"),
            message: "etcd: refused: Patroni's etcd: section speaks etcd's v2 API", line: 3),
        Bad(
            yaml: minimal + "\nkubernetes:\n  namespace: x",
            message: "kubernetes: refused: Baton keeps the cluster's state in etcd", line: nil),
        Bad(
            yaml: minimal + "\n  create_replica_methods: [wal_g]",
            message: "postgresql.wal_g: is missing: create_replica_methods names 'wal_g'", line: nil),
        Bad(
            yaml: minimal.replacingOccurrences(of: "hosts: [", with: "srv: x\n  hosts: ["),
            message: "etcd3.srv: refused: DNS SRV discovery is not supported", line: nil),
        Bad(yaml: minimal + "\nctl:\n  insecur: true", message: "unknown key 'insecur'", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  http_extra_headers: {Content-Length: '5'}",
            message: "restapi.http_extra_headers: 'Content-Length' is set by the server itself", line: nil),
        Bad(
            yaml: minimal + "\nrestapi:\n  https_extra_headers: {X-A: [1, 2]}",
            message: "restapi.https_extra_headers: X-A: expected a text value", line: nil),
        // A rewind password with no rewind user was silently ignored (no rewind role used).
        Bad(
            yaml: minimal + "\n  authentication:\n    rewind: {password: secret}",
            message: "rewind.username: is missing while a password is set", line: nil),
    ]

    @Test(arguments: bad)
    func badConfigurationIsRefusedWithWhereAndWhy(_ case_: Bad) {
        do {
            _ = try AgentConfiguration.parse(case_.yaml, file: "agent.yml", environment: Self.secrets)
            Issue.record("accepted a bad configuration; expected: \(case_.message)")
        } catch let error as ConfigurationError {
            #expect(error.description.contains(case_.message), "\(error)")
            #expect(error.description.hasPrefix("agent.yml"), "\(error)")
            if let line = case_.line { #expect(error.line == line, "\(error)") }
        } catch {
            Issue.record("unexpected error type: \(error)")
        }
    }

    @Test func tlsKeysMakeTheAPIHTTPS() throws {
        let configuration = try AgentConfiguration.parse(
            Self.minimal + "\nrestapi:\n  certfile: /etc/hostname\n  keyfile: /etc/hostname\n  cafile: /etc/hostname\n"
                + "  verify_client: required", environment: Self.secrets)
        #expect(configuration.restapi.scheme == "https")
        #expect(configuration.restapi.verifyClient == "required")
        #expect(configuration.restapi.cafile == "/etc/hostname")
    }

    /// The same through the environment: BATON_REWIND_PASSWORD without a rewind user.
    @Test func aRewindPasswordWithoutAUserIsAnError() {
        #expect {
            _ = try AgentConfiguration.parse(
                Self.minimal, environment: Self.secrets.merging(["BATON_REWIND_PASSWORD": "x"]) { $1 })
        } throws: { error in
            "\(error)".contains("BATON_REWIND_USERNAME")
        }
    }

    @Test func missingPasswordSaysWhereToSetIt() {
        #expect {
            _ = try AgentConfiguration.parse(Self.minimal, environment: [:])
        } throws: { error in
            "\(error)".contains("BATON_SUPERUSER_PASSWORD")
        }
        #expect(throws: Never.self) {
            _ = try AgentConfiguration.parse(Self.minimal, environment: [:], requireSecrets: false)
        }
    }
}

/// A Patroni deployment configured through PATRONI_* environment variables (containers, Helm
/// charts) keeps them when it moves to Baton; BATON_* wins where both are set.
@Suite struct PatroniEnvironmentTests {
    static let file = """
        scope: from-file
        name: node-file
        etcd3:
          hosts: ["10.9.9.9:2379"]
        postgresql:
          data_dir: /var/lib/file/data
        """

    @Test func patroniVariablesOverrideTheFile() throws {
        let configuration = try AgentConfiguration.parse(
            Self.file,
            environment: [
                "PATRONI_SCOPE": "batman", "PATRONI_NAME": "pg-1", "PATRONI_NAMESPACE": "/db",
                "PATRONI_ETCD3_HOSTS": "'10.0.0.1:2379','10.0.0.2:2379', '10.0.0.3:2379'",
                "PATRONI_RESTAPI_LISTEN": "0.0.0.0:8009", "PATRONI_RESTAPI_CONNECT_ADDRESS": "10.0.0.7:8009",
                "PATRONI_RESTAPI_USERNAME": "admin", "PATRONI_RESTAPI_PASSWORD": "api-secret",
                "PATRONI_POSTGRESQL_LISTEN": "0.0.0.0:5433", "PATRONI_POSTGRESQL_CONNECT_ADDRESS": "10.0.0.7:5433",
                "PATRONI_POSTGRESQL_DATA_DIR": "/pgdata/data",
                "PATRONI_POSTGRESQL_BIN_DIR": "/usr/lib/postgresql/16/bin",
                "PATRONI_SUPERUSER_USERNAME": "root", "PATRONI_SUPERUSER_PASSWORD": "su-secret",
                "PATRONI_REPLICATION_USERNAME": "standby", "PATRONI_REPLICATION_PASSWORD": "repl-secret",
                "PATRONI_LOG_LEVEL": "WARNING",
            ])
        #expect(configuration.scope == "batman" && configuration.name == "pg-1" && configuration.namespace == "/db")
        #expect(configuration.etcd.hosts == ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"])
        #expect(configuration.restapi.listenPort == 8009 && configuration.restapi.connectAddress == "10.0.0.7:8009")
        #expect(configuration.restapi.username == "admin" && configuration.restapi.password == "api-secret")
        #expect(configuration.postgresql.port == 5433 && configuration.postgresql.connectAddress == "10.0.0.7:5433")
        #expect(configuration.postgresql.dataDirectory == "/pgdata/data")
        #expect(configuration.postgresql.binDirectory == "/usr/lib/postgresql/16/bin")
        #expect(configuration.postgresql.superuser.username == "root")
        #expect(configuration.postgresql.superuser.password == "su-secret")
        #expect(configuration.postgresql.replication.username == "standby")
        #expect(configuration.postgresql.replication.password == "repl-secret")
        #expect(configuration.logLevel == "warning")
    }

    @Test func batonVariablesWinOverPatronis() throws {
        let configuration = try AgentConfiguration.parse(
            Self.file,
            environment: [
                "PATRONI_SCOPE": "patroni-scope", "BATON_SCOPE": "baton-scope",
                "PATRONI_SUPERUSER_PASSWORD": "p", "BATON_SUPERUSER_PASSWORD": "b",
                "PATRONI_REPLICATION_PASSWORD": "r", "PATRONI_ETCD3_HOSTS": "10.0.0.1:2379",
                "BATON_ETCD_HOSTS": "10.0.0.2:2379",
            ])
        #expect(configuration.scope == "baton-scope")
        #expect(configuration.postgresql.superuser.password == "b")
        #expect(configuration.etcd.hosts == ["10.0.0.2:2379"])
        // A bad value from the environment is refused like one in the file.
        #expect(throws: ConfigurationError.self) {
            try AgentConfiguration.parse(
                Self.file,
                environment: [
                    "PATRONI_RESTAPI_LISTEN": "nowhere", "BATON_SUPERUSER_PASSWORD": "s",
                    "BATON_REPLICATION_PASSWORD": "r",
                ])
        }
    }

    static let secrets = ["PATRONI_SUPERUSER_PASSWORD": "s", "PATRONI_REPLICATION_PASSWORD": "r"]

    /// Every variable Patroni 4.1.5 reads (before: a fixed list of 35; the rest were ignored
    /// silently — a PATRONI_RESTAPI_ALLOWLIST moved over was lost, the API open to all).
    @Test func everyPatroniVariableIsReadAsPatroniReadsIt() throws {
        let configuration = try AgentConfiguration.parse(
            Self.file,
            environment: Self.secrets.merging([
                "PATRONI_RESTAPI_ALLOWLIST": "10.0.0.0/8, 192.168.1.5",
                "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS": "true",
                "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS": "X-Frame-Options: DENY",
                "PATRONI_POSTGRESQL_PGPASS": "/pgdata/pgpass",
                "PATRONI_LOG_DIR": "/var/log/patroni", "PATRONI_LOG_FILE_NUM": "7",
                "PATRONI_LOG_STATIC_FIELDS": "{app: patroni}",
                "PATRONI_LOGLEVEL": "ERROR",
                "PATRONI_CTL_INSECURE": "true",
                "PATRONI_REWIND_USERNAME": "rewinder", "PATRONI_REWIND_PASSWORD": "rw",
            ]) { $1 })
        #expect(configuration.restapi.allowlist == ["10.0.0.0/8", "192.168.1.5"])
        #expect(configuration.restapi.allowlistIncludeMembers)
        #expect(configuration.restapi.httpExtraHeaders.contains { $0.0 == "X-Frame-Options" && $0.1 == "DENY" })
        #expect(configuration.postgresql.pgpass == "/pgdata/pgpass")
        #expect(configuration.log.fileNum == 7)
        #expect(configuration.logLevel == "error")
        #expect(configuration.postgresql.rewind?.username == "rewinder")
    }

    /// Review findings: a Kubernetes service link (PATRONI_SERVICE_HOST, PATRONI_ETCD_PORT=tcp://…)
    /// stopped the agent; a list that did not parse was dropped (the API open to all); a Citus
    /// group from the environment was ignored while citus: in a file is refused.
    @Test func whatPatroniIgnoresIsIgnoredAndWhatItCannotReadIsRefused() throws {
        let ignored = try AgentConfiguration.parse(
            Self.file,
            environment: Self.secrets.merging([
                "PATRONI_SERVICE_HOST": "10.96.0.7", "PATRONI_SERVICE_PORT": "8008",
                "PATRONI_ETCD_PORT": "tcp://10.96.0.9:2379", "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS": "1",
                "PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "many",
            ]) { $1 })
        #expect(ignored.restapi.allowlistIncludeMembers)
        #expect(ignored.restapi.requestQueueSize == 256)
        do {
            _ = try AgentConfiguration.parse(
                Self.file, environment: Self.secrets.merging(["PATRONI_RESTAPI_ALLOWLIST": "[10.0.0.0/8"]) { $1 })
            Issue.record("an unreadable allowlist was accepted")
        } catch let error as ConfigurationError {
            #expect(error.message.hasPrefix("PATRONI_RESTAPI_ALLOWLIST:"), "\(error)")
        }
        do {
            _ = try AgentConfiguration.parse(
                Self.file, environment: Self.secrets.merging(["PATRONI_CITUS_GROUP": "1"]) { $1 })
            Issue.record("a Citus group was accepted")
        } catch let error as ConfigurationError {
            #expect(error.path == "citus" && error.message.hasPrefix("refused:"), "\(error)")
        }
    }

    /// A variable for a key Baton refuses is refused by name, as the key in a file is.
    @Test(arguments: [
        ("PATRONI_ETCD3_SRV", "db.example.com", "etcd3.srv"),
        ("PATRONI_ETCD_HOSTS", "10.0.0.1:2379", "etcd"),
        ("PATRONI_KUBERNETES_NAMESPACE", "db", "kubernetes"),
        ("PATRONI_POSTGRESQL_CONFIG_DIR", "/etc/postgresql/15/main", "postgresql.config_dir"),
        ("PATRONI_SUPERUSER_SSLMODE", "verify-full", "postgresql.authentication.superuser.sslmode"),
    ])
    func aVariableForARefusedKeyIsRefusedByName(_ variable: String, _ value: String, _ key: String) {
        do {
            _ = try AgentConfiguration.parse(Self.file, environment: Self.secrets.merging([variable: value]) { $1 })
            Issue.record("\(variable) was accepted")
        } catch let error as ConfigurationError {
            #expect(error.path == key, "\(error)")
            #expect(error.message.hasPrefix("refused:"), "\(error)")
        } catch {
            Issue.record("\(error)")
        }
    }
}

/// Patroni keys that were refused and are taken now: etcd3.url/proxy, postgresql.proxy_address,
/// restapi.keyfile_password/ciphers/request_queue_size/server_tokens.
@Suite struct PatroniKeysTakenTests {
    static let secrets = ["BATON_SUPERUSER_PASSWORD": "s", "BATON_REPLICATION_PASSWORD": "r"]

    static func parse(etcd: String, postgresql: String = "", restapi: String = "") throws -> AgentConfiguration {
        try AgentConfiguration.parse(
            """
            scope: demo
            name: node1
            etcd3:
            \(etcd)
            restapi:
              listen: 127.0.0.1:8008
            \(restapi)
            postgresql:
              data_dir: /var/lib/baton/data
            \(postgresql)
            """, environment: secrets)
    }

    @Test func etcdURLAndProxyAreOneEndpoint() throws {
        let url = try Self.parse(etcd: "  url: https://etcd.example:2379")
        #expect(url.etcd.hosts == ["etcd.example:2379"] && url.etcd.protocolScheme == "https")
        // proxy first, as Patroni takes them; either before hosts.
        let both = try Self.parse(
            etcd: "  url: http://a:2379\n  proxy: http://gateway:23790\n  hosts: [\"b:2379\"]")
        #expect(both.etcd.hosts == ["gateway:23790"] && both.etcd.protocolScheme == "http")
        for bad in ["http://a:2379/v2", "ftp://a:2379", "a:2379"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try Self.parse(etcd: "  url: \(bad)") }
        }
    }

    @Test func proxyAddressIsPublishedAsProxyURL() throws {
        let configuration = try Self.parse(
            etcd: "  hosts: [\"127.0.0.1:2379\"]", postgresql: "  proxy_address: 10.0.0.9:6432")
        #expect(configuration.postgresql.proxyAddress == "10.0.0.9:6432")
        #expect(throws: ConfigurationError.self) {
            try Self.parse(etcd: "  hosts: [\"127.0.0.1:2379\"]", postgresql: "  proxy_address: nowhere")
        }
        let member = Member(
            name: "n",
            body: try JSONDecoder().decode(
                Member.Body.self,
                from: Data(#"{"conn_url":"postgres://a:5432/postgres","proxy_url":"postgres://p:6432/postgres"}"#.utf8))
        )
        #expect(member.proxyURL == "postgres://p:6432/postgres")
        #expect(member.body.proxy_url == "postgres://p:6432/postgres")
    }

    @Test func restapiKeysPatroniHas() throws {
        let configuration = try Self.parse(
            etcd: "  hosts: [\"127.0.0.1:2379\"]",
            restapi: "  keyfile_password: k\n  ciphers: ECDHE-RSA-AES128-GCM-SHA256\n  request_queue_size: 64\n"
                + "  server_tokens: ProductOnly")
        #expect(configuration.restapi.keyfilePassword == "k")
        #expect(configuration.restapi.ciphers == "ECDHE-RSA-AES128-GCM-SHA256")
        #expect(configuration.restapi.requestQueueSize == 64)
        for bad in ["  ciphers: HIGH:!aNULL", "  request_queue_size: 0", "  server_tokens: Full"] {
            #expect(throws: ConfigurationError.self, "\(bad)") {
                try Self.parse(etcd: "  hosts: [\"127.0.0.1:2379\"]", restapi: bad)
            }
        }
    }
}
