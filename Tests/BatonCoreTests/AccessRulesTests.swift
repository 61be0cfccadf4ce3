import BatonCore
import Testing

/// `postgresql.pg_hba`/`pg_ident`: the shape of each line is checked at the edge (the agent's
/// file, PATCH /config, edit-config, the config key as read); PostgreSQL checks the rest.
@Suite struct AccessRulesTests {
    /// Lines from Patroni's own example configuration and its documentation pass.
    @Test func patronisExampleLinesPass() {
        let lines = [
            "host replication replicator 127.0.0.1/32 md5",
            "host all all 0.0.0.0/0 md5",
            "hostssl all all 0.0.0.0/0 md5",
            "host replication replicator 127.0.0.1/32 gss include_realm=0",
            "local   all   all   peer map=omicron",
            "host all all 192.168.12.10 255.255.255.255 scram-sha-256",
            "host \"my db\" all 10.0.0.0/8 scram-sha-256  # a comment",
            "# only a comment", "",
        ]
        for line in lines { #expect(AccessRules.hbaProblem(line) == nil, "\(line)") }
        #expect(AccessRules.identProblem("omicron bryanh guest1") == nil)
        #expect(AccessRules.identProblem("# comment") == nil)
    }

    @Test func badLinesAreRefusedWithTheReason() {
        let cases: [(String, String)] = [
            ("hots all all 10.0.0.0/8 md5", "not a connection type"),
            ("host all all 10.0.0.0/8", "expected 'host DATABASE USER ADDRESS METHOD"),
            ("local all all", "expected 'local DATABASE USER METHOD"),
            ("host all all 10.0.0.0/8 mdfive", "no authentication method"),
            ("host all all 10.0.0.0/8 md5\nlocal all all trust", "line break"),
            ("host all all 10.0.0.0/8 md5\u{0}", "control character"),
            // PostgreSQL 15 joins it with the next line: a comment would swallow the next rule.
            ("# replication from the old site \\", "ends with a backslash"),
        ]
        for (line, reason) in cases {
            let problem = AccessRules.hbaProblem(line)
            #expect(problem?.contains(reason) == true, "\(line): \(problem ?? "accepted")")
        }
        #expect(AccessRules.identProblem("map user")?.contains("MAPNAME") == true)
    }

    /// An hba list without a rule: PostgreSQL admits nobody, refuses to start, and on a reload
    /// keeps its old rules without an error row (so the check after the reload would pass).
    @Test func anHbaListWithoutARuleIsRefused() {
        #expect(AccessRules.hbaListProblem([])?.contains("has no rule") == true)
        #expect(AccessRules.hbaListProblem(["# only", ""])?.contains("has no rule") == true)
        #expect(AccessRules.hbaListProblem(["local all all peer"]) == nil)
        let (rules, problems) = AccessRules.fromCluster(["pg_hba": .array([])])
        #expect(rules.hba == nil && problems.first?.contains("postgresql.pg_hba: has no rule") == true, "\(problems)")
    }

    /// The agent's file wins over the config key list by list, as in Patroni.
    @Test func theAgentsFileWinsListByList() {
        let local = AccessRules(hba: ["local all all peer"])
        let key = AccessRules(hba: ["host all all 0.0.0.0/0 md5"], ident: ["m a b"])
        #expect(
            AccessRules.effective(local: local, cluster: key)
                == AccessRules(hba: ["local all all peer"], ident: ["m a b"]))
        #expect(AccessRules.effective(local: AccessRules(), cluster: key) == key)
    }

    /// In the config key: a list with a bad item is not used at all, and the problem names it;
    /// `validationErrors` refuses it at PATCH /config and edit-config.
    @Test func aBadListInTheConfigKeyIsRefusedWhole() {
        let (rules, problems) = AccessRules.fromCluster([
            "pg_hba": .array([.string("local all all peer"), .number(5)]),
            "pg_ident": .string("not a list"),
        ])
        #expect(rules == AccessRules())
        #expect(problems.count == 2, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("postgresql.pg_hba[1]: expected a string") }, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("postgresql.pg_ident: expected a list") }, "\(problems)")
        let config = DynamicConfig(["postgresql": .object(["pg_hba": .array([.string("hots all all md5")])])])
        #expect(
            config.validationErrors().contains { $0.contains("postgresql.pg_hba[0]") }, "\(config.validationErrors())")
        let fine = DynamicConfig(["postgresql": .object(["pg_hba": .array([.string("local all all peer")])])])
        #expect(AccessRules.fromCluster(fine.postgresql).rules.hba == ["local all all peer"])
    }

    @Test func managedFileTextSaysWhereItComesFrom() {
        let text = AccessRules.fileText(["local all all peer"], key: "postgresql.pg_hba", source: "config key")
        #expect(text.hasPrefix("# Managed by Baton from postgresql.pg_hba (config key)"))
        #expect(text.hasSuffix("local all all peer\n"))
    }
}
