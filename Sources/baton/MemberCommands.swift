import ArgumentParser
import BatonAgent
import BatonCore
import BatonEtcd
import Foundation

/// POST to one member's REST API and report its answer (restart, reinit).
func memberAction(
    _ options: ConfigOptions, member name: String, path: String, verb: String, force: Bool
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
        reply = try await op.api.call("POST", member.apiURL, path: path, body: .object([:]), timeout: 120)
    } catch {
        op.fail("\(name)'s REST API did not answer (\(error)): is its agent running?")
    }
    checkReply(op, reply, member)
    print("\(name): \(reply.message)")
}

struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart", abstract: "Restart PostgreSQL on a member (POST /restart).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The member to restart.") var member: String
    @Flag(help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        try await memberAction(options, member: member, path: "/restart", verb: "restart", force: force)
    }
}

struct ReinitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reinit", abstract: "Re-clone a replica from the leader (POST /reinitialize).")
    @OptionGroup var options: ConfigOptions
    @Argument(help: "The replica to rebuild.") var member: String
    @Flag(help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        try await memberAction(
            options, member: member, path: "/reinitialize", verb: "reinitialize (erase and re-clone)", force: force)
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
