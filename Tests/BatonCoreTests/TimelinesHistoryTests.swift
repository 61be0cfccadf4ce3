import BatonCore
import Testing

/// `max_timelines_history`: the newest entries are kept; 0 (or unset) keeps all; a value that is
/// not a whole number ≥ 0 makes the config key invalid (the last valid one stays in force).
@Suite struct TimelinesHistoryTests {
    static func entry(_ timeline: Int) -> HistoryEntry {
        HistoryEntry(
            timeline: timeline, lsn: LSN(UInt64(timeline) * 100), reason: "failover", timestamp: nil, newLeader: "a")
    }

    @Test func theNewestEntriesAreKept() {
        let old = (1...5).map(Self.entry)
        let keepThree = DynamicConfig(["max_timelines_history": .number(3)])
        #expect(keepThree.history(old, appending: Self.entry(6)).map(\.timeline) == [4, 5, 6])
        #expect(DynamicConfig([:]).history(old, appending: Self.entry(6)).count == 6)
        #expect(DynamicConfig(["max_timelines_history": .number(0)]).history(old, appending: Self.entry(6)).count == 6)
        #expect(DynamicConfig(["max_timelines_history": .number(10)]).history(old, appending: Self.entry(6)).count == 6)
    }

    @Test func badValuesAreRefused() {
        for value: JSONValue in [.number(-1), .number(1.5), .string("many"), .bool(true), .number(1e300)] {
            let config = DynamicConfig(["max_timelines_history": value])
            #expect(config.validationErrors().contains { $0.hasPrefix("max_timelines_history") }, "\(value)")
            #expect(config.maxTimelinesHistory == 0, "\(value)")
        }
        // Patroni accepts numbers written as strings.
        #expect(DynamicConfig(["max_timelines_history": .string("4")]).maxTimelinesHistory == 4)
        #expect(DynamicConfig(["max_timelines_history": .number(4)]).validationErrors().isEmpty)
    }
}

/// `primary_stop_timeout` (Patroni): a primary's stop in synchronous mode is cut short after it;
/// otherwise, and for a replica, the agent's own stop timeout applies. Before, it was refused at
/// bootstrap and ignored in the config key.
@Suite struct PrimaryStopTimeoutTests {
    @Test func onlyASynchronousPrimaryUsesIt() {
        let agent = Duration.seconds(30)
        let sync = DynamicConfig(["synchronous_mode": .bool(true), "primary_stop_timeout": .number(5)])
        #expect(sync.stopTimeout(primary: true, agentDefault: agent) == .seconds(5))
        #expect(sync.stopTimeout(primary: false, agentDefault: agent) == agent)
        let async = DynamicConfig(["primary_stop_timeout": .number(5)])
        #expect(async.stopTimeout(primary: true, agentDefault: agent) == agent)
        let unset = DynamicConfig(["synchronous_mode": .bool(true), "primary_stop_timeout": .number(0)])
        #expect(unset.stopTimeout(primary: true, agentDefault: agent) == agent)
        for bad: JSONValue in [.number(-1), .string("soon"), .number(1e300)] {
            let config = DynamicConfig(["synchronous_mode": .bool(true), "primary_stop_timeout": bad])
            #expect(!config.validationErrors().isEmpty, "\(bad)")
            #expect(config.stopTimeout(primary: true, agentDefault: agent) == agent, "\(bad)")
        }
    }
}
