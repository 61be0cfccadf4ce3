import ArgumentParser
import BatonAgent
import BatonCore
import BatonEtcd
import Foundation

/// POST to one member's REST API and report its answer (restart, reinit).
func memberAction(
    _ options: ConfigOptions, member name: String, path: String, verb: String, force: Bool,
    body: [String: JSONValue] = [:]
) async throws {
    let op = try OperatorStore(options)
    defer { op.client.shutdown() }
    let view = try await op.load()
    guard let member = view.member(named: name) else {
        op.fail("\(name) is not a member; members: \(view.members.map(\.name).joined(separator: ", "))")
    }
    guard !member.apiURL.isEmpty else { op.fail("\(name) publishes no api_url: is its agent running?") }
    if !force, !confirm("\(verb.prefix(1).uppercased() + verb.dropFirst()) \(name)?") { op.fail("aborted") }
    let reply: OperatorAPI.Reply
    do {
        reply = try await op.api.call("POST", member.apiURL, path: path, body: .object(body), timeout: 120)
    } catch {
        op.fail("\(name)'s REST API did not answer (\(error)): is its agent running?")
    }
    checkReply(op, reply, member)
    print("\(name): \(reply.message)")
}

struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Restart PostgreSQL on a member (POST /restart); the HA loop does it, without a failover.")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The member to restart.") var member: String
    @Option(help: "Restart only if the member runs in this role: primary or replica.") var role: String?
    @Flag(help: "Restart only if postgres reports a pending restart (a changed parameter needs one).")
    var pending = false
    @Option(help: "Restart only if postgres is older than this version, e.g. 15.4.") var pgVersion: String?
    @Option(help: "Seconds postgres may take to come back before the leader key is released.") var timeout: Int?
    @Option(help: "Restart at this time instead of now (ISO 8601 with a zone, e.g. 2026-11-22T03:00:00+00:00).")
    var scheduled: String?
    @Flag(help: "Cancel the member's scheduled restart (DELETE /restart).") var cancel = false
    @Flag(help: "Do not ask for confirmation.") var force = false

    func validate() throws {
        if let role, !["primary", "replica", "master", "standby_leader"].contains(role) {
            throw ValidationError("--role must be primary or replica, not '\(role)'")
        }
        if let timeout, timeout <= 0 { throw ValidationError("--timeout must be a positive number of seconds") }
        if cancel, role != nil || pending || pgVersion != nil || timeout != nil || scheduled != nil {
            throw ValidationError("--cancel takes no other restart option")
        }
    }

    func run() async throws {
        if cancel {
            try await cancelRestart()
            return
        }
        var body: [String: JSONValue] = [:]
        if let role { body["role"] = .string(role) }
        if pending { body["restart_pending"] = .bool(true) }
        if let pgVersion { body["postgres_version"] = .string(pgVersion) }
        if let timeout { body["timeout"] = .number(Double(timeout)) }
        if let scheduled { body["schedule"] = .string(scheduled) }
        try await memberAction(
            options, member: member, path: "/restart", verb: scheduled == nil ? "restart" : "schedule a restart of",
            force: force, body: body)
    }

    func cancelRestart() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        guard let target = view.member(named: member) else {
            op.fail("\(member) is not a member; members: \(view.members.map(\.name).joined(separator: ", "))")
        }
        let reply: OperatorAPI.Reply
        do {
            reply = try await op.api.call("DELETE", target.apiURL, path: "/restart")
        } catch {
            op.fail("\(member)'s REST API did not answer (\(error)): is its agent running?")
        }
        checkReply(op, reply, target)
        print("\(member): \(reply.message)")
    }
}

struct ReinitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reinit", abstract: "Re-clone a replica from the leader (POST /reinitialize).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The replica to rebuild.") var member: String
    @Flag(help: "Do not ask for confirmation.") var force = false
    @Flag(help: "Wait until the member streams from the leader again.") var wait = false

    func run() async throws {
        try await memberAction(
            options, member: member, path: "/reinitialize", verb: "reinitialize (erase and re-clone)", force: force,
            body: ["force": .bool(force)])
        if wait { try await waitForStreaming() }
    }

    func waitForStreaming() async throws {
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
