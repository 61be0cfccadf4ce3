import BatonCore
import Foundation
import Testing

@testable import BatonAgent

/// `create_replica_methods`, each method's section and `basebackup`, read as Patroni reads them;
/// what cannot work is refused at load with where and why.
@Suite struct ReplicaMethodsConfigurationTests {
    static func parse(_ postgresql: String) throws -> AgentConfiguration {
        try AgentConfiguration.parse(
            AgentConfigurationTests.minimal + "\n" + postgresql, environment: AgentConfigurationTests.secrets)
    }

    @Test func withoutMethodsItIsBasebackupWithItsOptions() throws {
        #expect(try Self.parse("").postgresql.replicaMethods.map(\.name) == ["basebackup"])
        let mapping = try Self.parse("  basebackup: {max-rate: 100M, checkpoint: spread}")
        #expect(
            mapping.postgresql.replicaMethods.first?.options.sorted() == ["--checkpoint=spread", "--max-rate=100M"])
        let list = try Self.parse("  basebackup: [verbose, {max-rate: 64M}]")
        #expect(list.postgresql.replicaMethods.first?.options == ["--verbose", "--max-rate=64M"])
    }

    @Test func aCustomMethodTakesItsCommandFlagsAndParameters() throws {
        let configuration = try Self.parse(
            """
              create_replica_methods: [walg, basebackup]
              walg:
                command: "/bin/sh -c 'exec restore \\"$1\\"' walg"
                keep_data: true
                no_params: true
                no_leader: true
                stanza: main
            """)
        let methods = configuration.postgresql.replicaMethods
        #expect(methods.map(\.name) == ["walg", "basebackup"])
        #expect(methods[0].argv == ["/bin/sh", "-c", "exec restore \"$1\"", "walg"])
        #expect(methods[0].options == ["--stanza=main"])
        #expect(methods[0].keepData && methods[0].noParams && methods[0].noLeader)
        // A program given by name is found in PATH.
        let byName = try Self.parse("  create_replica_methods: [copy]\n  copy: {command: sh -c true}")
        #expect(byName.postgresql.replicaMethods[0].argv.first?.hasSuffix("/sh") == true)
    }

    /// A method defined without being listed (as Patroni allows): for
    /// `standby_cluster.create_replica_methods`, or a restore with no_leader. Before, its section
    /// was refused as an unknown key. A mapping without a command is still refused.
    @Test func aMethodDefinedWithoutBeingListedIsKeptApart() throws {
        let configuration = try Self.parse("  restore: {command: /bin/true, no_params: true, no_leader: true}")
        #expect(configuration.postgresql.replicaMethods.map(\.name) == ["basebackup"])
        #expect(configuration.postgresql.definedReplicaMethods.map(\.name) == ["restore"])
        #expect(configuration.postgresql.definedReplicaMethods.first?.noLeader == true)
        // no_master: Patroni's older name for no_leader (before: passed on as --no_master=true).
        let older = try Self.parse("  create_replica_methods: [walg]\n  walg: {command: /bin/true, no_master: true}")
        #expect(older.postgresql.replicaMethods.first?.noLeader == true)
        #expect(older.postgresql.replicaMethods.first?.options == [])
        #expect(throws: (any Error).self) { try Self.parse("  restor: {no_params: true}") }
        #expect(throws: (any Error).self) { try Self.parse("  restore: {command: /bin/true, datadir: /x}") }
    }

    @Test func whatCannotWorkIsRefusedWithWhereAndWhy() {
        let cases: [(String, String)] = [
            ("  create_replica_methods: [walg]", "postgresql.walg"),
            ("  create_replica_methods: [walg]\n  walg: {keep_data: true}", "postgresql.walg.command"),
            ("  create_replica_methods: [walg]\n  walg: {command: \"/bin/sh -c 'x\"}", "unclosed quote"),
            ("  create_replica_methods: [walg]\n  walg: {command: /no/such/program}", "not an executable"),
            ("  create_replica_methods: [walg, walg]\n  walg: {command: /bin/true}", "listed twice"),
            ("  create_replica_methods: [Wal-G]", "not a method name"),
            ("  basebackup: {pgdata: /tmp/x}", "set by Baton"),
            ("  basebackup: {wal-method: fetch}", "set by Baton"),
            ("  basebackup: [{max-rate: [1, 2]}]", "single value"),
            ("  basebackup: 100M", "mapping or a list"),
            // An abbreviation of a managed option, or one that changes where the copy goes.
            ("  basebackup: {ho: other.example}", "not an option Baton passes"),
            ("  basebackup: {target: blackhole}", "not an option Baton passes"),
            ("  basebackup: [write-recovery-conf]", "not an option Baton passes"),
            ("  create_replica_methods: [walg]\n  walg: {command: /bin/true, datadir: /x}", "passed by Baton itself"),
            ("  create_replica_methods: [walg]\n  walg: {command: bin/true}", "not an executable"),
        ]
        for (text, expected) in cases {
            do {
                _ = try Self.parse(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }

    @Test func commandLinesSplitAsAShellSplitsWords() {
        #expect(ShellWords.split("a b  c") == ["a", "b", "c"])
        #expect(ShellWords.split("a 'b c' \"d \\\"e\\\"\" f\\ g") == ["a", "b c", "d \"e\"", "f g"])
        #expect(ShellWords.split("'$HOME' \"a\\nb\"") == ["$HOME", "a\\nb"])
        #expect(ShellWords.split("''") == [""])
        #expect(ShellWords.split("'open") == nil)
        #expect(ShellWords.split("\"open") == nil)
        #expect(ShellWords.split("trailing\\") == nil)
    }

    static func parseBootstrap(_ bootstrap: String) throws -> AgentConfiguration {
        try AgentConfiguration.parse(
            AgentConfigurationTests.minimal + "\nbootstrap:\n" + bootstrap, environment: AgentConfigurationTests.secrets
        )
    }

    @Test func aCustomBootstrapTakesItsCommandAndRecoverySettings() throws {
        let configuration = try Self.parseBootstrap(
            """
              method: pitr
              pitr:
                command: /bin/sh -c 'restore'
                no_params: true
                recovery_conf:
                  restore_command: cp /archive/%f %p
                  recovery_target_time: '2026-12-07 10:00:00+00'
            """)
        let method = try #require(configuration.postgresql.bootstrapMethod)
        #expect(method.name == "pitr" && method.argv == ["/bin/sh", "-c", "restore"] && method.noParams)
        #expect(method.recoveryConf["recovery_target_time"] == "2026-12-07 10:00:00+00")
        #expect(try Self.parseBootstrap("  method: initdb").postgresql.bootstrapMethod == nil)
    }

    @Test func aCustomBootstrapThatCannotWorkIsRefused() {
        let cases: [(String, String)] = [
            ("  method: pitr", "bootstrap.pitr is missing"),
            ("  method: pitr\n  pitr: {command: /no/such}", "not an executable"),
            (
                "  method: pitr\n  pitr: {command: /bin/true, recovery_conf: {primary_conninfo: x}}",
                "not a recovery setting"
            ),
            (
                "  method: pitr\n  pitr: {command: /bin/true, recovery_conf: {recovery_target_action: pause}}",
                "must be promote"
            ),
            ("  method: pitr\n  pitr: {command: /bin/true, extra: 1}", "unknown key 'extra'"),
        ]
        for (text, expected) in cases {
            do {
                _ = try Self.parseBootstrap(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }

    /// `postgresql.recovery_conf` for standbys: archive settings taken, recovery targets refused
    /// (reaching one would end a standby's recovery without the leader key).
    @Test func standbyRecoverySettings() throws {
        let configuration = try Self.parse(
            "  recovery_conf: {restore_command: 'cp /archive/%f %p', recovery_min_apply_delay: 5min}")
        #expect(configuration.postgresql.recoveryConf["restore_command"] == "cp /archive/%f %p")
        #expect(configuration.postgresql.recoveryConf["recovery_min_apply_delay"] == "5min")
        for (text, expected) in [
            ("  recovery_conf: {recovery_target_time: '2026-12-07'}", "recovery target"),
            ("  recovery_conf: {primary_conninfo: 'host=x'}", "not a standby recovery setting"),
        ] {
            do {
                _ = try Self.parse(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }

    @Test func postBootstrapTakesACommandUnderEitherName() throws {
        #expect(
            try Self.parseBootstrap("  post_bootstrap: /bin/sh -c 'x'").postgresql.postBootstrap == [
                "/bin/sh", "-c", "x",
            ])
        #expect(try Self.parseBootstrap("  post_init: sh").postgresql.postBootstrap?.first?.hasSuffix("/sh") == true)
        for (text, expected) in [
            ("  post_bootstrap: /bin/true\n  post_init: /bin/true", "not both"),
            ("  post_bootstrap: /no/such/script", "not an executable"),
        ] {
            do {
                _ = try Self.parseBootstrap(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }
}
