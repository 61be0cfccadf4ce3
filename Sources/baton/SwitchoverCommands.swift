import ArgumentParser
import BatonAgent
import BatonCore
import Foundation

/// Posts `body` to the first member API that answers, in `members` order. nil when none answers.
func postToFirstAPI(
    _ op: OperatorStore, _ members: [Member], method: String = "POST", path: String, body: JSONValue?,
    timeout: Double
) async -> (member: Member, reply: OperatorAPI.Reply?)? {
    for member in members {
        do {
            let reply = try await op.api.call(method, member.apiURL, path: path, body: body, timeout: timeout)
            return (member, reply)
        } catch let error as OperatorAPI.Unreachable where error.timedOut {
            // It answered the connection but not within the time: the request may have been taken.
            return (member, nil)
        } catch {
            printError("\(member.name)'s REST API did not answer (\(error)); trying the next member")
        }
    }
    return nil
}

/// Exits with the API's answer when it refused (auth, validation, failure).
func checkReply(_ op: OperatorStore, _ reply: OperatorAPI.Reply, _ member: Member) {
    switch reply.status {
    case 200..<300: return
    case 401, 403:
        op.fail(
            "\(member.name)'s REST API refused the credentials (HTTP \(reply.status)): set restapi.authentication "
                + "in the config file or BATON_RESTAPI_USERNAME and BATON_RESTAPI_PASSWORD", code: 2)
    default:
        op.fail("\(member.name)'s REST API answered HTTP \(reply.status): \(reply.message)")
    }
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Hand the primary role to another member (planned, no lost writes).",
        discussion: """
            Asks the leader's REST API (POST /switchover), or another member's if the leader's does not answer; \
            only when no API answers does it write the failover key in etcd directly.
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "The current leader (checked; defaults to whoever leads).") var leader: String?
    @Option(help: "The member to promote (default: the healthiest replica).") var candidate: String?
    @Option(help: "When, as ISO 8601 (e.g. 2026-11-22T15:00:00+00:00); default now.") var scheduled: String?
    @Flag(help: "Do not ask for confirmation.") var force = false
    @Flag(help: "Return once requested; do not wait for the new leader.") var noWait = false
    @Flag(help: "Cancel a scheduled switchover (DELETE /switchover).") var cancel = false

    func validate() throws {
        if cancel, leader != nil || candidate != nil || scheduled != nil {
            throw ValidationError("--cancel takes no --leader, --candidate or --scheduled")
        }
        if let scheduled {
            // Checked here too: when no REST API answers, the value goes into the failover key as is.
            guard let at = ISO8601.secondsSince1970(scheduled), ISO8601.hasTimeZone(scheduled) else {
                throw ValidationError(
                    "--scheduled '\(scheduled)' is not an ISO 8601 time with its zone, like 2026-11-22T15:00:00+00:00")
            }
            guard at > Date().timeIntervalSince1970 else {
                throw ValidationError("--scheduled '\(scheduled)' is in the past; give a later time or leave it out")
            }
        }
    }

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        if cancel {
            guard view.failover?.value.scheduled_at != nil else { op.fail("no switchover is scheduled") }
            guard
                let (member, reply) = await postToFirstAPI(
                    op, view.apiMembersLeaderFirst, method: "DELETE", path: "/switchover", body: nil, timeout: 10),
                let reply
            else { op.fail("no member's REST API answered: are the agents running?") }
            checkReply(op, reply, member)
            print("\(reply.message) (through \(member.name)'s REST API)")
            return
        }
        guard let current = view.leader?.member else {
            op.fail("the cluster has no leader: use 'baton failover --candidate MEMBER'")
        }
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
        var body: [String: JSONValue] = ["leader": .string(current)]
        if let candidate { body["candidate"] = .string(candidate) }
        if let scheduled { body["scheduled_at"] = .string(scheduled) }
        let started = ContinuousClock.now
        if let (member, reply) = await postToFirstAPI(
            op, view.apiMembersLeaderFirst, path: "/switchover", body: .object(body), timeout: noWait ? 3 : 90)
        {
            guard let reply else {
                print("switchover requested through \(member.name)'s REST API; not waiting ('baton list' shows it)")
                return
            }
            checkReply(op, reply, member)
            print(
                "\(reply.message) (through \(member.name)'s REST API, \((ContinuousClock.now - started).secondsText))")
            return
        }
        printError("no member's REST API answered: writing the failover key in etcd directly")
        try await writeFailoverKey(op, current: current)
    }

    /// The fallback: the failover key, then (unless --no-wait) watching the leader key.
    func writeFailoverKey(_ op: OperatorStore, current: String) async throws {
        let request = FailoverRequest(leader: current, member: candidate, scheduledAt: scheduled)
        guard try await op.store.writeFailover(request, expected: nil) else {
            op.fail("another switchover or failover is already pending ('baton list' shows it)")
        }
        if scheduled != nil || noWait {
            print(
                "switchover \(scheduled.map { "scheduled at \($0)" } ?? "requested") through the failover key in etcd: "
                    + "\(current) → \(candidate ?? "any")")
            return
        }
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(60) {
            try await Task.sleep(for: .milliseconds(100))
            let now = try await op.load()
            if let leader = now.leader?.member, leader != current,
                [.primary, .standbyLeader].contains(now.member(named: leader)?.role)
            {
                print(
                    "switched over from \(current) to \(leader) in \((ContinuousClock.now - started).secondsText) "
                        + "(through the failover key in etcd)")
                return
            }
            if now.failover == nil, now.leader?.member == current {
                op.fail("the leader rejected the switchover (see its log for the reason)")
            }
        }
        op.fail("switchover not confirmed within 60 s; 'baton list' shows the current state")
    }
}

struct FailoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Promote a named member, with or without a healthy leader (POST /failover).",
        discussion: "Use switchover for a planned change of leader; failover may lose the writes not yet replicated.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "The member to promote.") var candidate: String
    @Flag(help: "Do not ask for confirmation.") var force = false

    func run() async throws {
        let op = try OperatorStore(options)
        defer { op.client.shutdown() }
        let view = try await op.load()
        guard let member = view.member(named: candidate) else {
            op.fail("\(candidate) is not a member; members: \(view.members.map(\.name).joined(separator: ", "))")
        }
        if view.leader?.member == candidate { op.fail("\(candidate) already leads") }
        if member.tags.noFailover { op.fail("\(candidate) is tagged nofailover and cannot be promoted") }
        let from = view.leader.map { "from \($0.member) " } ?? "(the cluster has no leader) "
        if !force, !confirm("Fail over \(from)to \(candidate)? Writes not yet on \(candidate) may be lost.") {
            op.fail("aborted")
        }
        let order = [member] + view.apiMembersLeaderFirst.filter { $0.name != candidate }
        let started = ContinuousClock.now
        guard
            let (via, reply) = await postToFirstAPI(
                op, order.filter { !$0.apiURL.isEmpty }, path: "/failover",
                body: .object(["candidate": .string(candidate)]), timeout: 90)
        else {
            op.fail("no member's REST API answered: are the agents running? ('baton list' shows their api_url)")
        }
        guard let reply else {
            op.fail("\(via.name)'s REST API took the request but did not answer in time; 'baton list' shows the state")
        }
        checkReply(op, reply, via)
        print("\(reply.message) (through \(via.name)'s REST API, \((ContinuousClock.now - started).secondsText))")
    }
}
