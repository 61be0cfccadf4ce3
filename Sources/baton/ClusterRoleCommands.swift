import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

struct DemoteClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demote-cluster",
        abstract: "Turn this cluster into a standby cluster of another (its primary becomes the standby leader).")
    @OptionGroup var options: ConfigOptions
    @Option(help: "Address of the other cluster's primary (or of a proxy in front of it).") var host: String?
    @Option(help: "Its port.") var port: Int?
    @Option(help: "Command to restore WAL from the other cluster's archive.") var restoreCommand: String?
    @Option(help: "The replication slot on the other cluster's primary to stream through.") var primarySlotName: String?
    @Option(help: "How long to wait for the leader to report the new role, in seconds.") var timeout: Int = 120

    func validate() throws {
        if host == nil, port == nil, restoreCommand == nil {
            throw ValidationError("name the cluster to follow: --host (with --port), or --restore-command")
        }
    }

    func run() async throws {
        var section: [String: JSONValue] = [:]
        if let host { section["host"] = .string(host) }
        if let port { section["port"] = .number(Double(port)) }
        if let restoreCommand { section["restore_command"] = .string(restoreCommand) }
        if let primarySlotName { section["primary_slot_name"] = .string(primarySlotName) }
        try await changeClusterRole(options, standby: .object(section), timeout: timeout)
    }
}

struct PromoteClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote-cluster",
        abstract: "Turn a standby cluster into a primary cluster (its standby leader promotes).")
    @OptionGroup var options: ConfigOptions
    @Option(help: "How long to wait for the leader to report the new role, in seconds.") var timeout: Int = 120

    func run() async throws { try await changeClusterRole(options, standby: .null, timeout: timeout) }
}

/// Writes (or removes, for `.null`) `standby_cluster` in the config key, as Patroni's
/// `demote-cluster`/`promote-cluster` do, then waits until the leader reports the role that
/// follows: `standby_leader` after a demotion, `primary` after a promotion.
func changeClusterRole(_ options: ConfigOptions, standby: JSONValue, timeout: Int) async throws {
    let demote = standby != .null
    let op = try OperatorStore(options)
    defer { op.client.shutdown() }
    let target: Member.Role = demote ? .standbyLeader : .primary
    let first = try await op.load()
    guard let leader = first.leaderMember else {
        op.fail("the cluster has no leader: \(demote ? "demotion" : "promotion") is not possible now")
    }
    if first.config?.value.pause == true {
        op.fail("the cluster is paused: its leader takes no automatic action; run 'baton resume' first")
    }
    if leader.role == target {
        op.fail(
            "the cluster is already \(demote ? "a standby cluster" : "a primary cluster") (\(leader.name) is \(target))"
        )
    }
    print(ClusterTable.render(first, scope: op.configuration.scope, format: "table", extended: false))
    var written = false
    for _ in 0..<5 {
        let view = try await op.load()
        let current = view.config?.value ?? op.configuration.dynamicConfig
        let next = current.merging(patch: .object(["standby_cluster": standby]))
        if let problem = next.validationErrors().first {
            op.fail("not written: \(problem)", code: 2)
        }
        if try await op.store.writeConfig(next, expected: view.config?.modRevision) {
            written = true
            break
        }
    }
    guard written else { op.fail("the config key kept changing under us; try again") }
    print(
        demote
            ? "standby_cluster written: \(leader.name) demotes to a standby leader"
            : "standby_cluster removed: \(leader.name) promotes")
    let deadline = ContinuousClock.now + .seconds(max(1, timeout))
    var last = ""
    while ContinuousClock.now < deadline {
        let view = try await op.load()
        let now = view.leaderMember
        let line =
            "leader: \(now?.name ?? "none"), role: \(now?.role.rawValue ?? "-"), state: \(now?.state.rawValue ?? "-")"
        if let now, now.role == target, now.state == .running {
            print(line)
            print("the cluster is \(demote ? "demoted: a standby cluster" : "promoted: a primary cluster")")
            print(ClusterTable.render(view, scope: op.configuration.scope, format: "table", extended: false))
            return
        }
        if line != last { print(line) }
        last = line
        try await Task.sleep(for: .seconds(1))
    }
    op.fail("the leader did not report \(target) within \(timeout) s; 'baton list' and the leader's log say why")
}
