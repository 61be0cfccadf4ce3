import BatonCore
import PropertyBased
import Testing

/// The cluster's `postgresql.parameters` are input from anyone who can write the `config` key:
/// before, they were accepted and ignored; now they are used, so every value is checked first.
@Suite struct PostgresParametersTests {
    @Test func valuesBecomeConfigurationText() {
        let (parameters, refused) = PostgresParameters.fromCluster([
            "work_mem": .string("64MB"), "max_connections": .number(200), "jit": .bool(false),
            "random_page_cost": .number(1.5), "pg_stat_statements.max": .number(5000), "Shared_Buffers": .string("1GB"),
            "statement_timeout": .null,
        ])
        #expect(refused.isEmpty, "\(refused)")
        #expect(
            parameters == [
                "work_mem": "64MB", "max_connections": "200", "jit": "off", "random_page_cost": "1.5",
                "pg_stat_statements.max": "5000", "shared_buffers": "1GB",
            ])
    }

    @Test func whatCannotBeUsedIsRefusedByName() {
        let (parameters, refused) = PostgresParameters.fromCluster([
            "work_mem": .string("64MB\ninclude '/etc/passwd'"), "bad name": .string("1"), "x.y.z": .number(1),
            "listen_addresses": .string("*"), "port": .number(6000), "hba_file": .string("/tmp/hba"),
            "unix_socket_directories": .string("/tmp"), "max_connections": .number(10), "wal_level": .string("minimal"),
            "hot_standby": .bool(false), "wal_log_hints": .string("off"), "huge": .number(.infinity),
            "list": .array([.string("a")]), "object": .object([:]),
            "long": .string(String(repeating: "x", count: 9000)),
            "max_wal_senders": .string("many"), "wal_keep_size": .string("8MB"),
        ])
        #expect(parameters.isEmpty, "\(parameters)")
        #expect(
            Set(refused.map(\.name))
                == [
                    "work_mem", "bad name", "x.y.z", "listen_addresses", "port", "hba_file", "unix_socket_directories",
                    "max_connections", "wal_level", "hot_standby", "wal_log_hints", "huge", "list", "object", "long",
                    "max_wal_senders", "wal_keep_size",
                ])
        let reason = refused.first { $0.name == "max_connections" }?.reason ?? ""
        #expect(reason.contains("'10' is not allowed") && reason.contains("default 100"), "\(reason)")
    }

    /// A recovery target or promotion trigger from the config key would make every standby end
    /// recovery at its next start (or reload) without the leader key: two primaries.
    @Test func nothingThatCouldPromoteAStandbyIsAccepted() {
        let (parameters, refused) = PostgresParameters.fromCluster([
            "recovery_target": .string("immediate"), "recovery_target_action": .string("promote"),
            "recovery_target_time": .string("2026-01-01"), "recovery_target_lsn": .string("0/1"),
            "recovery_target_name": .string("x"), "recovery_target_xid": .string("1"),
            "promote_trigger_file": .string("PG_VERSION"), "Recovery_Target_Inclusive": .bool(false),
            "restore_command": .string("cp /archive/%f %p"),
        ])
        #expect(parameters == ["restore_command": "cp /archive/%f %p"])
        #expect(refused.count == 8 && refused.allSatisfy { $0.reason.contains("promote itself") }, "\(refused)")
    }

    @Test func namesAndSizesPostgresWouldRefuseAreRefusedHere() {
        let (parameters, refused) = PostgresParameters.fromCluster([
            "x$y": .number(1), "wal_keep_segments": .number(134_217_728), "ok.name": .string("1"),
        ])
        #expect(parameters == ["ok.name": "1"])
        #expect(Set(refused.map(\.name)) == ["x$y", "wal_keep_segments"])
    }

    @Test func anUnreadableParametersSectionIsAProblemNotNothing() {
        #expect(PostgresParameters.structureProblem(DynamicConfig(["postgresql": .string("x")])) != nil)
        #expect(
            PostgresParameters.structureProblem(DynamicConfig(["postgresql": .object(["parameters": .string("x")])]))
                != nil)
        #expect(
            PostgresParameters.structureProblem(DynamicConfig(["postgresql": .object(["parameters": .null])])) == nil)
        #expect(PostgresParameters.structureProblem(DynamicConfig([:])) == nil)
    }

    @Test func theLocalFileWinsExceptForWhatEveryMemberMustShare() {
        let (parameters, ignored) = PostgresParameters.effective(
            defaults: ["port": "5432", "wal_level": "replica"],
            cluster: [
                "work_mem": "8MB", "max_connections": "300", "wal_level": "hot_standby", "wal_keep_segments": "64",
            ],
            local: ["work_mem": "16MB", "max_connections": "50", "shared_buffers": "1GB", "port": "6000"])
        #expect(parameters["work_mem"] == "16MB" && parameters["shared_buffers"] == "1GB")
        #expect(parameters["max_connections"] == "300" && parameters["port"] == "5432")
        #expect(parameters["wal_level"] == "replica")
        #expect(parameters["wal_keep_size"] == "1024MB" && parameters["wal_keep_segments"] == nil)
        #expect(parameters["max_worker_processes"] == "8" && parameters["max_locks_per_transaction"] == "64")
        #expect(ignored == ["max_connections", "port"])
        // Names are case-insensitive: a local Work_Mem replaces the cluster's work_mem (one line).
        let mixed = PostgresParameters.effective(
            defaults: [:], cluster: ["work_mem": "8MB"], local: ["Work_Mem": "16MB", "MAX_CONNECTIONS": "5"])
        #expect(mixed.parameters["work_mem"] == "16MB" && mixed.parameters["Work_Mem"] == nil)
        #expect(mixed.ignoredLocal == ["MAX_CONNECTIONS"])
    }

    /// Hostile documents: whatever is accepted is a valid name with a value that cannot break a
    /// line of postgresql.conf, and nothing traps.
    @Test func nothingHostileIsAccepted() async {
        let names = [
            "work_mem", "a.b", "", ".", "a.", "1abc", "work mem", "work_mem\n", "ü", "max_connections", "wal_level",
            "x$y", String(repeating: "a", count: 64), "include_dir", "hot_standby",
        ]
        let strings = ["64MB", "", "a\nb", "'", "\\", "\u{0}", "on", "off", "25", "1e400", "-1", "replica", "\u{7F}"]
        let numbers: [Double] = [0, -1, 24, 25, 1.5, 1e300, -1e300, .nan, .infinity, 9.1e15]
        await propertyCheck(count: 3000, input: Gen.int(in: 0...1_000_000).array(of: 0...8)) { picks in
            var document: [String: JSONValue] = [:]
            for pick in picks {
                let name = names[pick % names.count]
                switch pick / names.count % 5 {
                case 0: document[name] = .string(strings[pick % strings.count])
                case 1: document[name] = .number(numbers[pick % numbers.count])
                case 2: document[name] = .bool(pick % 2 == 0)
                case 3: document[name] = .array([.number(1)])
                default: document[name] = .null
                }
            }
            let (parameters, _) = PostgresParameters.fromCluster(document)
            for (name, value) in parameters {
                #expect(PostgresParameters.isValidName(name), "\(name)")
                #expect(!value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "\(name)")
                #expect(!PostgresParameters.agentManaged.contains(name))
            }
        }
    }
}
