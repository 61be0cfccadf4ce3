import ArgumentParser
import BatonAgent
import BatonCore
import BatonEtcd
import Foundation
import Logging

/// A store connection for operator commands, from the agent's configuration.
struct OperatorStore {
    let client: EtcdClient
    let store: EtcdClusterStore
    let configuration: AgentConfiguration

    init(_ options: ConfigOptions) throws {
        let configuration = try options.load()
        self.configuration = configuration
        let quiet = Logger(label: "baton", factory: { _ in SwiftLogNoOpLogHandler() })
        let credentials = configuration.etcd.username.flatMap { user in
            configuration.etcd.password.map { EtcdConfiguration.Credentials(user: user, password: $0) }
        }
        client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: configuration.etcd.endpoints, retryTimeout: .seconds(3), credentials: credentials),
            logger: quiet)
        store = EtcdClusterStore(
            client: client, namespace: configuration.namespace, scope: configuration.scope, logger: quiet)
    }

    func load() async throws -> ClusterView {
        do {
            return try await store.loadCluster()
        } catch {
            fail(
                "cannot read the cluster from etcd (\(configuration.etcd.endpoints.joined(separator: ", "))): \(error)")
        }
    }

    func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("baton: \(message)\n".utf8))
        client.shutdown()
        Foundation.exit(code)
    }
}

func confirm(_ question: String) -> Bool {
    print("\(question) [y/N] ", terminator: "")
    guard let answer = readLine() else { return false }
    return ["y", "yes"].contains(answer.lowercased())
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover", abstract: "Hand the primary role to another member (planned, no lost writes).")

    @OptionGroup var options: ConfigOptions
    @Option(help: "The current leader (checked; defaults to whoever leads).") var leader: String?
    @Option(help: "The member to promote (default: the healthiest replica).") var candidate: String?
    @Option(help: "When, as ISO 8601 (e.g. 2026-11-22T15:00:00+00:00); default now.") var scheduled: String?
    @Flag(help: "Do not ask for confirmation.") var force = false
    @Flag(help: "Return once requested; do not wait for the new leader.") var noWait = false

    func validate() throws {
        if let scheduled, ISO8601.secondsSince1970(scheduled) == nil {
            throw ValidationError("--scheduled '\(scheduled)' is not an ISO 8601 time like 2026-11-22T15:00:00+00:00")
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        guard let current = view.leader?.member else { op.fail("the cluster has no leader: use 'baton failover'") }
        if let leader, leader != current { op.fail("\(leader) is not the leader (\(current) is)") }
        if let candidate {
            guard let member = view.member(named: candidate) else {
                op.fail("\(candidate) is not a member; members: \(view.members.map(\.name).joined(separator: ", "))")
            }
            if candidate == current { op.fail("\(candidate) already leads") }
            if member.tags.noFailover { op.fail("\(candidate) is tagged nofailover and cannot be promoted") }
        }
        if !force, !confirm("Switch over from \(current) to \(candidate ?? "the healthiest replica")?") {
            op.fail("aborted", code: 1)
        }
        let request = FailoverRequest(leader: current, member: candidate, scheduledAt: scheduled)
        guard try await op.store.writeFailover(request, expected: nil) else {
            op.fail("another switchover or failover is already pending ('baton list' shows it)")
        }
        if scheduled != nil || noWait {
            print(
                "switchover \(scheduled.map { "scheduled at \($0)" } ?? "requested"): \(current) → \(candidate ?? "any")"
            )
            return
        }
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(60) {
            try await Task.sleep(for: .milliseconds(100))
            let now = try await op.load()
            if let leader = now.leader?.member, leader != current, now.member(named: leader)?.role == .primary {
                print("switched over from \(current) to \(leader) in \((ContinuousClock.now - started).secondsText)")
                return
            }
            if now.failover == nil, now.leader?.member == current {
                op.fail("the leader rejected the switchover (see its log for the reason)")
            }
        }
        op.fail("switchover not confirmed within 60 s; 'baton list' shows the current state")
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Maintenance mode: agents take no automatic action.")
    @OptionGroup var options: ConfigOptions

    func run() async throws { try await setPause(options, true) }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Leave maintenance mode.")
    @OptionGroup var options: ConfigOptions

    func run() async throws { try await setPause(options, false) }
}

func setPause(_ options: ConfigOptions, _ paused: Bool) async throws {
    let op = try OperatorStore(options)
    defer { op.client.shutdown() }
    for _ in 0..<5 {
        let view = try await op.load()
        let current = view.config?.value ?? op.configuration.dynamicConfig
        if current.pause == paused {
            print(paused ? "already paused" : "not paused")
            return
        }
        let next = current.merging(patch: .object(["pause": paused ? .bool(true) : .null]))
        if try await op.store.writeConfig(next, expected: view.config?.modRevision) {
            print(paused ? "paused: no automatic failover until 'baton resume'" : "resumed: automatic failover is on")
            return
        }
    }
    op.fail("the config key kept changing under us; try again")
}
