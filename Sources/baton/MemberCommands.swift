import ArgumentParser
import BatonAgent
import BatonCore
import BatonEtcd
import Foundation

/// POST to each member's REST API (in order) and report each answer (restart, reinit); exit
/// status 1 when any refused or did not answer.
func memberAction(
    _ op: OperatorStore, members: [Member], path: String, verb: String, force: Bool,
    body: [String: JSONValue] = [:], method: String = "POST"
) async throws {
    let names = members.map(\.name).joined(separator: ", ")
    if !force, !confirm("\(verb.prefix(1).uppercased() + verb.dropFirst()) \(names)?") { op.fail("aborted") }
    var failed = false
    for member in members {
        guard !member.apiURL.isEmpty else {
            FileHandle.standardError.write(Data("\(member.name): publishes no api_url: is its agent running?\n".utf8))
            failed = true
            continue
        }
        let reply: OperatorAPI.Reply
        do {
            reply = try await op.api.call(
                method, member.apiURL, path: path, body: method == "POST" ? .object(body) : nil, timeout: 120)
        } catch {
            FileHandle.standardError.write(
                Data("\(member.name): its REST API did not answer (\(error)): is its agent running?\n".utf8))
            failed = true
            continue
        }
        if members.count == 1 { checkReply(op, reply, member) }
        if (200..<300).contains(reply.status) {
            print("\(member.name): \(reply.message)")
        } else {
            FileHandle.standardError.write(Data("\(member.name): HTTP \(reply.status): \(reply.message)\n".utf8))
            failed = true
        }
    }
    if failed { throw ExitCode(1) }
}

struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Restart PostgreSQL on members (POST /restart); the HA loop does it, without a failover.",
        discussion: """
            With no member named, every member (or those in --role) is restarted, one after the \
            other; --any restarts one of them. A named member's --role is a condition its agent checks.
            """)
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The members to restart (default: all, or those in --role).") var members: [String] = []
    @Option(help: "Restart only if the member runs in this role: primary or replica.") var role: String?
    @Flag(help: "Restart one member (chosen at random) of those selected.") var any = false
    @Flag(help: "Restart only if postgres reports a pending restart (a changed parameter needs one).")
    var pending = false
    @Option(help: "Restart only if postgres is older than this version, e.g. 15.4.") var pgVersion: String?
    @Option(help: "Seconds postgres may take to come back before the leader key is released.") var timeout: Int?
    @Option(help: "Restart at this time instead of now (ISO 8601 with a zone, e.g. 2026-11-22T03:00:00+00:00).")
    var scheduled: String?
    @Flag(help: "Cancel the members' scheduled restarts (DELETE /restart).") var cancel = false
    @Flag(help: "Do not ask for confirmation.") var force = false

    func validate() throws {
        if let role, !["primary", "replica", "master", "standby_leader", "leader", "any"].contains(role) {
            throw ValidationError("--role must be primary or replica, not '\(role)'")
        }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be a positive number of seconds") }
        if cancel, role != nil || pending || pgVersion != nil || timeout != nil || scheduled != nil || any {
            throw ValidationError("--cancel takes no other restart option")
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        let selection: MemberRole =
            switch role {
            case "primary", "master", "leader", "standby_leader": .leader
            case "replica": .replica
            default: .any
            }
        var targets = op.members(of: view, members, role: members.isEmpty ? selection : .any)
        if any, let one = targets.randomElement() { targets = [one] }
        if cancel {
            try await memberAction(
                op, members: targets, path: "/restart", verb: "cancel the scheduled restart of", force: true,
                method: "DELETE")
            return
        }
        var body: [String: JSONValue] = [:]
        if let role, role != "any" { body["role"] = .string(role == "leader" ? "primary" : role) }
        if pending { body["restart_pending"] = .bool(true) }
        if let pgVersion { body["postgres_version"] = .string(pgVersion) }
        if let timeout { body["timeout"] = .number(Double(timeout)) }
        if let scheduled { body["schedule"] = .string(scheduled) }
        try await memberAction(
            op, members: targets, path: "/restart", verb: scheduled == nil ? "restart" : "schedule a restart of",
            force: force, body: body)
    }
}

struct ReinitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reinit", abstract: "Re-clone replicas from the leader (POST /reinitialize).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The replicas to rebuild (one or more).") var members: [String]
    @Flag(help: "Do not ask for confirmation.") var force = false
    @Flag(help: "Wait until the members stream from the leader again.") var wait = false

    func validate() throws {
        if members.isEmpty { throw ValidationError("name the replicas to reinitialize") }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        let targets = op.members(of: view, members, role: .any)
        try await memberAction(
            op, members: targets, path: "/reinitialize", verb: "reinitialize (erase and re-clone)", force: force,
            body: ["force": .bool(force)])
        if wait { for member in members { try await waitForStreaming(member) } }
    }

    func waitForStreaming(_ member: String) async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let deadline = Date().addingTimeInterval(600)
        // The member key says "creating replica" first, then running and streaming again.
        try await Task.sleep(for: .seconds(2))
        while Date() < deadline {
            let view = try await op.load()
            if let state = view.member(named: member), state.state == .running, state.replicationState == "streaming" {
                print("\(member): streaming from the leader again")
                return
            }
            try await Task.sleep(for: .seconds(1))
        }
        op.fail("\(member) is not streaming 10 minutes after the reinitialize; see its agent's log")
    }
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Delete the whole cluster's state from etcd (every key of the scope), once all agents are stopped.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        let scope = op.configuration.scope
        guard view.members.isEmpty else {
            op.fail(
                "agents are still running for \(scope) (members: \(view.members.map(\.name).joined(separator: ", "))): "
                    + "stop every agent first, then run remove again")
        }
        let prefix = EtcdKeyLayout(namespace: op.configuration.namespace, scope: scope).prefix
        print("This deletes every key under \(prefix) in etcd: the leader, config, history and initialize keys.")
        print("Type the cluster name (\(scope)) to confirm: ", terminator: "")
        guard readLine()?.trimmingCharacters(in: .whitespaces) == scope else { op.fail("aborted: nothing deleted") }
        let response = try await op.client.delete(EtcdDeleteRequest(prefix: prefix))
        print("removed \(scope): \(response.deleted) key\(response.deleted == 1 ? "" : "s") deleted under \(prefix)")
    }
}
