import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Maintenance mode: agents take no automatic action.")
    @OptionGroup var options: ConfigOptions
    @Flag(help: "Wait until every member reports the pause in GET /patroni.") var wait = false

    func run() async throws { try await setPause(options, true, wait: wait) }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Leave maintenance mode.")
    @OptionGroup var options: ConfigOptions
    @Flag(help: "Wait until no member reports a pause in GET /patroni.") var wait = false

    func run() async throws { try await setPause(options, false, wait: wait) }
}

func setPause(_ options: ConfigOptions, _ paused: Bool, wait: Bool) async throws {
    let op = try OperatorStore(options)
    defer { op.client.shutdown() }
    var changed = false
    for _ in 0..<5 {
        let view = try await op.load()
        let current = view.config?.value ?? op.configuration.dynamicConfig
        if current.pause == paused {
            print(paused ? "already paused" : "not paused")
            changed = true
            break
        }
        let next = current.merging(patch: .object(["pause": paused ? .bool(true) : .null]))
        if try await op.store.writeConfig(next, expected: view.config?.modRevision) {
            print(paused ? "paused: no automatic failover until 'baton resume'" : "resumed: automatic failover is on")
            changed = true
            break
        }
    }
    guard changed else { op.fail("the config key kept changing under us; try again") }
    guard wait else { return }
    let view = try await op.load()
    let deadline = ContinuousClock.now + max(.seconds(30), view.dynamicConfig.loopWait * 3)
    var pending = view.members.map(\.name)
    while ContinuousClock.now < deadline {
        var still: [String] = []
        for member in view.members where pending.contains(member.name) {
            let reply = try? await op.api.call("GET", member.apiURL, path: "/patroni", timeout: 3)
            let reported = reply.flatMap { PauseReport.reportedPause(in: Array($0.body)) }
            if reported != paused { still.append(member.name) }
        }
        pending = still
        if pending.isEmpty {
            print("every member (\(view.members.count)) reports \(paused ? "the pause" : "no pause")")
            return
        }
        try await Task.sleep(for: .milliseconds(500))
    }
    op.fail(
        "not confirmed in time by \(pending.joined(separator: ", ")) (GET /patroni): is the agent running there? "
            + "'baton list' shows the members")
}
