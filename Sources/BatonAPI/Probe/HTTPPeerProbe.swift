import BatonCore
import BatonHA
import BatonHTTP
import Foundation
import Logging
import NIOSSL

/// The HA loop's `PeerProbe` over the REST API: `GET <api_url>` (Patroni's `/patroni`) of each
/// member within a short deadline, and `POST /failsafe` for failsafe confirmations.
public struct HTTPPeerProbe: PeerProbe {
    public let timeout: Duration
    let logger: Logger
    let tls: TLSConfiguration?
    /// `Authorization` header for unsafe calls (`POST /failsafe`): the members of one cluster share
    /// the REST API's credentials, so a peer with authentication configured accepts the call.
    let authorization: String?

    /// - Parameters:
    ///   - timeout: the deadline of each call (connect, request and reply).
    ///   - tls: how to call peers whose `api_url` is `https://`; throws when its files cannot be loaded.
    ///   - username: the REST API's Basic-auth user, sent with unsafe calls; `password` with it.
    public init(
        timeout: Duration = .seconds(1), tls: APIClientTLS? = nil, username: String? = nil, password: String? = nil,
        logger: Logger
    ) throws {
        self.timeout = timeout
        self.logger = logger
        self.tls = try tls?.configuration()
        self.authorization = Self.basicAuthorization(username: username, password: password)
    }

    /// `Basic base64(user:password)`, or nil unless both are given.
    static func basicAuthorization(username: String?, password: String?) -> String? {
        guard let username, let password else { return nil }
        return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }

    public func status(of members: [Member]) async -> [PeerStatus] {
        await withTaskGroup(of: (Int, PeerStatus).self) { group in
            for (index, member) in members.enumerated() {
                group.addTask { (index, await status(of: member)) }
            }
            var results: [(Int, PeerStatus)] = []
            for await result in group { results.append(result) }
            return results.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    func status(of member: Member) async -> PeerStatus {
        do {
            let reply = try await BatonHTTP.send("GET", url: member.apiURL, tls: tls, timeout: timeout)
            // Patroni answers /patroni with 200, and with 503 on some versions when postgres is down;
            // both carry the status document.
            guard reply.status == 200 || reply.status == 503 else {
                throw BatonHTTP.Failure("HTTP \(reply.status)")
            }
            return try Self.parseStatus(name: member.name, body: reply.body)
        } catch {
            logger.debug("peer unreachable", metadata: ["ha.peer": "\(member.name)", "api.error": "\(error)"])
            return PeerStatus(name: member.name, reachable: false)
        }
    }

    /// Reads a `GET /patroni` document (BatonCore's `NodeStatusDocument`, read field by field)
    /// into what the decision core needs.
    public static func parseStatus(name: String, body: [UInt8]) throws -> PeerStatus {
        let document: NodeStatusDocument
        do {
            document = try JSONDecoder().decode(NodeStatusDocument.self, from: Data(body))
        } catch {
            throw BatonHTTP.Failure("status document is not a JSON object")
        }
        let role = document.role
        let state = document.state
        guard role != nil || state != nil else {
            throw BatonHTTP.Failure("not a status document (no role, no state)")
        }
        // Unknown is not "replica": a peer whose postgres may accept writes is a possible primary —
        // one that reports itself primary or demoted (stepping down, not yet fenced) while its
        // postgres is not known to be down, or one that does not say what it is.
        let down: Set<String> = ["stopped", "crashed", "stopping", "stopped after a failure"]
        let mayAcceptWrites = role == nil || role == "primary" || role == "master" || role == "demoted"
        let runningAsPrimary = mayAcceptWrites && !(state.map(down.contains) ?? false)
        let xlog = document.xlog
        // An answer signed with another member's name (two member keys naming one API address)
        // gives no position: it would count as this member's vote in quorum commit. Its claim
        // to be a primary still counts: whoever it is, a primary runs there.
        if let signed = document.patroni?.name, signed != name {
            return PeerStatus(
                name: name, reachable: true, runningAsPrimary: runningAsPrimary, tags: document.tags ?? Tags())
        }
        let position =
            runningAsPrimary
            ? xlog?.location?.lsn
            : [xlog?.receivedLocation?.lsn, xlog?.replayedLocation?.lsn].compactMap { $0 }.max()
        return PeerStatus(
            name: name, reachable: true, runningAsPrimary: runningAsPrimary, walPosition: position,
            timeline: document.timeline, tags: document.tags ?? Tags())
    }

    public func confirmFailsafe(leader: String, connURL: String, apiURL: String, members: [String: String]) async
        -> Bool
    {
        // Patroni's standbys read all three fields (a missing one fails the request).
        let body = Array(
            "{\"name\":\(Self.quoted(leader)),\"conn_url\":\(Self.quoted(connURL)),\"api_url\":\(Self.quoted(apiURL))}"
                .utf8)
        return await withTaskGroup(of: Bool.self) { group in
            for (name, url) in members {
                group.addTask {
                    guard let target = Self.url(url, path: "/failsafe") else { return false }
                    do {
                        let reply = try await BatonHTTP.send(
                            "POST", url: target, body: body,
                            headers: authorization.map { [("Authorization", $0)] } ?? [], tls: tls, timeout: timeout)
                        if reply.status == 401 || reply.status == 403 {
                            logger.warning(
                                "failsafe confirmation refused: check that every member has the same restapi.authentication and allowlist",
                                metadata: ["ha.peer": "\(name)", "http.status": "\(reply.status)"])
                        }
                        return reply.status == 200
                    } catch {
                        logger.debug(
                            "failsafe confirmation failed", metadata: ["ha.peer": "\(name)", "api.error": "\(error)"])
                        return false
                    }
                }
            }
            for await confirmed in group where !confirmed {
                group.cancelAll()
                return false
            }
            return true
        }
    }

    /// The same server as `apiURL` (`http://host:port/patroni`) with another path; nil when it
    /// is not an http(s) URL with a host.
    static func url(_ apiURL: String, path: String) -> String? {
        guard var components = URLComponents(string: apiURL), let scheme = components.scheme,
            scheme == "http" || scheme == "https", components.host?.isEmpty == false
        else { return nil }
        components.user = nil
        components.password = nil
        components.path = path
        components.query = nil
        components.fragment = nil
        return components.string
    }

    static func quoted(_ text: String) -> String {
        let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
