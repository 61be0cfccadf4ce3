import BatonCore
import BatonHA
import BatonTesting
import Testing

/// The real HA loop, three agents, simulated postgres and an in-memory store on a manual clock.
@Suite struct SimulatedClusterTests {
    static func bootstrapped(_ options: SimulatedCluster.Options = .init()) async throws -> SimulatedCluster {
        let cluster = SimulatedCluster(options: options)
        for _ in 0..<300 {
            await cluster.step()
            if cluster.writablePrimaries.count == 1, cluster.streamingReplicas().count == options.nodes - 1 { break }
        }
        try #require(cluster.writablePrimaries.count == 1, "no primary after bootstrap: \(cluster.events)")
        #expect(cluster.streamingReplicas().count == options.nodes - 1, "\(cluster.events)")
        return cluster
    }

    /// A new standby cluster whose copy fails (the other cluster unreachable) frees the
    /// `initialize` key it claimed, so that the copy is tried again; nothing runs meanwhile.
    /// Before, the key stayed claimed and empty, and every member waited for a bootstrap that
    /// never ended: one attempt, then none.
    @Test func aFailedStandbyClusterCopyFreesTheInitializeKey() async throws {
        var options = SimulatedCluster.Options()
        options.nodes = 2
        options.dynamicExtra = ["standby_cluster": .object(["host": .string("10.9.9.9"), "port": .number(5432)])]
        let cluster = SimulatedCluster(options: options)
        await cluster.run(seconds: 10)
        let attempts = ["node1", "node2"].map { cluster.postgres(named: $0)?.snapshot.cloneAttempts ?? 0 }
        #expect(attempts.reduce(0, +) >= 3, "\(attempts): \(cluster.events.suffix(20))")
        #expect(cluster.writablePrimaries.isEmpty)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func bootstrapsOnePrimaryAndStreamingReplicas() async throws {
        let cluster = try await Self.bootstrapped()
        #expect(await cluster.leaderKeyHolder() == cluster.writablePrimaries.first)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// The `config` key's `postgresql.parameters` reach every member (before: never read), once
    /// per change; a member that cannot read the store keeps what it has (unknown is not "no
    /// parameters"); what fails the checks never reaches a node.
    @Test func clusterParametersReachEveryMemberOncePerChange() async throws {
        let cluster = try await Self.bootstrapped()
        let names = ["node1", "node2", "node3"]
        try await cluster.patchConfig(
            .object([
                "postgresql": .object([
                    "parameters": .object([
                        "work_mem": .string("64MB"), "max_connections": .number(200), "port": .number(1),
                        "max_wal_senders": .number(1),
                    ])
                ])
            ]))
        await cluster.run(seconds: 3)
        for name in names {
            let state = try #require(cluster.postgres(named: name)).snapshot
            #expect(state.clusterParameters == ["work_mem": "64MB", "max_connections": "200"], "\(name)")
        }
        let applications = names.map { cluster.postgres(named: $0)?.snapshot.parameterApplications ?? 0 }
        await cluster.run(seconds: 3)
        #expect(names.map { cluster.postgres(named: $0)?.snapshot.parameterApplications ?? 0 } == applications)
        // node3 cannot read the store while the parameters change: it keeps the ones it has.
        cluster.cutFromStore("node3")
        try await cluster.patchConfig(
            .object(["postgresql": .object(["parameters": .object(["work_mem": .string("128MB")])])]))
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: "node1")?.snapshot.clusterParameters["work_mem"] == "128MB")
        #expect(cluster.postgres(named: "node3")?.snapshot.clusterParameters["work_mem"] == "64MB")
        cluster.healAll()
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: "node3")?.snapshot.clusterParameters["work_mem"] == "128MB")
        // A value refused at the edge keeps the one in force (not the default), and a parameters
        // section that is not a mapping changes nothing (before: read as "no parameters").
        try await cluster.patchConfig(
            .object(["postgresql": .object(["parameters": .object(["max_connections": .number(500.5)])])]))
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: "node1")?.snapshot.clusterParameters["max_connections"] == "200")
        try await cluster.patchConfig(.object(["postgresql": .object(["parameters": .string("oops")])]))
        await cluster.run(seconds: 3)
        #expect(cluster.postgres(named: "node2")?.snapshot.clusterParameters["max_connections"] == "200")
        #expect(cluster.postgres(named: "node2")?.snapshot.clusterParameters["work_mem"] == "128MB")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// The `config` key's `postgresql.pg_hba`/`pg_ident` reach every member once per change
    /// (before: a patroni.yml with them was refused at load, and the key's were never read); a
    /// list with a bad line keeps the one in force (half a pg_hba could lock clients out).
    @Test func accessRulesReachEveryMemberOncePerChange() async throws {
        let cluster = try await Self.bootstrapped()
        let names = ["node1", "node2", "node3"]
        let lines = ["local all all peer", "host all all 10.0.0.0/8 scram-sha-256"]
        try await cluster.patchConfig(
            .object(["postgresql": .object(["pg_hba": .array(lines.map { .string($0) })])]))
        await cluster.run(seconds: 3)
        for name in names {
            let state = try #require(cluster.postgres(named: name)).snapshot
            #expect(state.accessRules == AccessRules(hba: lines), "\(name): \(state.accessRules)")
            #expect(state.accessApplications == 1, "\(name)")
        }
        await cluster.run(seconds: 3)
        #expect(names.allSatisfy { cluster.postgres(named: $0)?.snapshot.accessApplications == 1 })
        // A line that is not a pg_hba line, written behind the edge's back: nothing changes.
        try await cluster.patchConfig(
            .object([
                "postgresql": .object(["pg_hba": .array([.string("local all all peer"), .string("hots all all md5")])])
            ]))
        await cluster.run(seconds: 3)
        for name in names {
            #expect(cluster.postgres(named: name)?.snapshot.accessRules == AccessRules(hba: lines), "\(name)")
        }
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// The leader keeps a gone member's slot for member_slots_ttl (named in the status key's
    /// retain_slots), then drops it; a slot it never saw as a member's is never dropped (before,
    /// every inactive physical slot not named after a current member was dropped at once).
    @Test func memberSlotsOutliveTheirMemberForTheTTLOnly() async throws {
        let cluster = try await Self.bootstrapped()
        try await cluster.patchConfig(.object(["member_slots_ttl": .string("1min")]))
        await cluster.run(seconds: 3)
        let leader = try #require(cluster.writablePrimaries.first)
        let gone = try #require(["node1", "node2", "node3"].first { $0 != leader })
        let primary = try #require(cluster.postgres(named: leader))
        primary.mutate { $0.slots["pgbackrest"] = false }
        #expect(primary.snapshot.slots[gone] == false, "\(primary.snapshot.slots)")
        cluster.crashWholeNode(gone)
        await cluster.run(seconds: 30)
        #expect(try await cluster.loadCluster().members.contains { $0.name == gone } == false)
        #expect(primary.snapshot.slots[gone] != nil, "dropped before member_slots_ttl")
        #expect(try await cluster.loadCluster().status?.retainSlots?.contains(gone) == true)
        await cluster.run(seconds: 40)
        #expect(primary.snapshot.slots[gone] == nil, "kept past member_slots_ttl: \(primary.snapshot.slots)")
        #expect(primary.snapshot.slots["pgbackrest"] == false, "a slot Baton never made was dropped")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// use_slots: false in the config key: the leader keeps no member slots, and every node is
    /// told to name none.
    @Test func useSlotsFalseKeepsNoMemberSlots() async throws {
        let cluster = try await Self.bootstrapped()
        let leader = try #require(cluster.writablePrimaries.first)
        try await cluster.patchConfig(.object(["postgresql": .object(["use_slots": .bool(false)])]))
        await cluster.run(seconds: 3)
        let slots = try #require(cluster.postgres(named: leader)).snapshot.slots
        #expect(slots.isEmpty, "\(slots)")
        for name in ["node1", "node2", "node3"] {
            #expect(cluster.postgres(named: name)?.snapshot.useSlots == false, "\(name)")
        }
    }

    /// Member keys say `"pause": true` while the cluster is paused, as Patroni's do: patronictl's
    /// `pause --wait` waited for it and reported "members didn't recognize pause state".
    @Test func memberKeysCarryThePause() async throws {
        let cluster = try await Self.bootstrapped()
        try await cluster.patchConfig(.object(["pause": .bool(true)]))
        await cluster.run(seconds: 3)
        let paused = try await cluster.loadCluster().members
        #expect(paused.count == 3 && paused.allSatisfy(\.paused), "\(paused.map { ($0.name, $0.paused) })")
        #expect(paused.first?.body.pause == true)
        try await cluster.patchConfig(.object(["pause": .null]))
        await cluster.run(seconds: 3)
        let resumed = try await cluster.loadCluster().members
        #expect(resumed.allSatisfy { !$0.paused && $0.body.pause == nil })
    }

    /// `max_timelines_history` bounds the history key to its newest entries (before: ignored, the
    /// key grew with every promotion).
    @Test func historyKeepsItsNewestEntries() async throws {
        let cluster = try await Self.bootstrapped()
        try await cluster.patchConfig(.object(["max_timelines_history": .number(2)]))
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<4 {
            await cluster.inject(.switchover, using: &rng)
            await cluster.run(seconds: 8)
        }
        let history = try await cluster.loadCluster().history
        #expect(history.count == 2, "\(history)\n\(cluster.events)")
        #expect(history.map(\.timeline) == history.map(\.timeline).sorted(), "\(history)")
        #expect((history.last?.timeline ?? 0) >= 3, "four promotions, the last ends timeline 4: \(history)")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func wholeNodeCrashFailsOverAndTheOldNodeRejoins() async throws {
        let cluster = try await Self.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        var rng = SeededGenerator(seed: 1)
        cluster.crashWholeNode(old)
        var waited = 0.0
        while cluster.writablePrimaries.isEmpty || cluster.writablePrimaries == [old], waited < 20 {
            await cluster.run(seconds: 0.1)
            waited += 0.1
        }
        let new = try #require(cluster.writablePrimaries.first, "no failover: \(cluster.events)")
        #expect(new != old)
        #expect(waited <= cluster.options.ttl + 1.5, "failover took \(waited) s with ttl \(cluster.options.ttl)")
        _ = rng.next()
        cluster.healAll()
        await cluster.run(seconds: 10)
        #expect(cluster.streamingReplicas().contains(old), "old primary did not rejoin: \(cluster.events)")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    @Test func frozenPrimaryAgentIsFencedBeforeAnotherPromotes() async throws {
        let cluster = try await Self.bootstrapped()
        let old = try #require(cluster.writablePrimaries.first)
        cluster.freeze(old, seconds: cluster.options.ttl * 2)
        await cluster.run(seconds: cluster.options.ttl * 2 + 5)
        #expect(cluster.backstopFirings >= 1, "the backstop never fired: \(cluster.events)")
        #expect(cluster.writablePrimaries.count == 1)
        #expect(cluster.violations.isEmpty, "\(cluster.violations)\n\(cluster.events)")
    }

    @Test func laggingReplicaIsNeverPromoted() async throws {
        var options = SimulatedCluster.Options()
        options.nodes = 2
        let cluster = try await Self.bootstrapped(options)
        let old = try #require(cluster.writablePrimaries.first)
        let replica = try #require(cluster.streamingReplicas().first)
        cluster.pauseReplication(replica)
        await cluster.run(seconds: 6)
        cluster.crashWholeNode(old)
        await cluster.run(seconds: 20)
        #expect(cluster.writablePrimaries.isEmpty, "a lagging replica was promoted: \(cluster.events)")
        #expect(cluster.violations.isEmpty, "\(cluster.violations)")
    }

    /// Thousands of faults across many random sequences, checking the invariants after every tick.
    @Test(arguments: 0..<8)
    func randomFaultSequencesKeepTheInvariants(batch: Int) async throws {
        var totalFaults = 0
        var promotions = 0
        for run in 0..<25 {
            let seed = UInt64(batch * 1000 + run)
            var rng = SeededGenerator(seed: seed)
            let cluster = try await Self.bootstrapped()
            for _ in 0..<12 {
                let fault = SimulatedCluster.Fault.allCases.randomElement(using: &rng) ?? .crashPostgres
                await cluster.inject(fault, using: &rng)
                totalFaults += 1
                await cluster.run(seconds: Double.random(in: 0.5...8, using: &rng))
            }
            cluster.healAll()
            await cluster.run(seconds: 30)
            promotions += cluster.promotionCount
            #expect(cluster.violations.isEmpty, "seed \(seed): \(cluster.violations)\n\(cluster.events.suffix(40))")
            #expect(
                cluster.writablePrimaries.count == 1,
                "seed \(seed): no primary after healing\n\(cluster.events.suffix(40))")
            if !cluster.violations.isEmpty { break }
        }
        #expect(totalFaults >= 300)
        #expect(promotions > 0)
    }
}
