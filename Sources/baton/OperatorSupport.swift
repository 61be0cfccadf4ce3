import ArgumentParser
import BatonAPI
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
    /// `-k`: REST answers are taken without checking the server's certificate.
    let insecure: Bool

    init(_ options: ConfigOptions) throws {
        let configuration = try options.load()
        self.configuration = configuration
        self.insecure = options.insecure
        let quiet = Logger(label: "baton", factory: { _ in SwiftLogNoOpLogHandler() })
        let credentials = configuration.etcd.username.flatMap { user in
            configuration.etcd.password.map { EtcdConfiguration.Credentials(user: user, password: $0) }
        }
        // The same etcd TLS settings as the agent's (Agent.init): operators reach a TLS-only etcd too.
        let etcd = configuration.etcd
        var tls: EtcdTLSConfiguration?
        if etcd.cacert != nil || etcd.cert != nil || etcd.protocolScheme == "https" {
            tls = EtcdTLSConfiguration(caFile: etcd.cacert, certFile: etcd.cert, keyFile: etcd.key)
        }
        client = EtcdClient(
            configuration: EtcdConfiguration(
                endpoints: etcd.endpoints, retryTimeout: .seconds(3), credentials: credentials, tls: tls),
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

    /// The REST API client with this configuration's credentials and TLS files.
    var api: OperatorAPI {
        var tls = AgentRunner.clientTLS(configuration.restapi)
        if insecure {
            tls = tls ?? APIClientTLS()
            tls?.insecure = true
        }
        return OperatorAPI(
            username: configuration.restapi.username, password: configuration.restapi.password, tls: tls)
    }

    func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("baton: \(message)\n".utf8))
        client.shutdown()
        Foundation.exit(code)
    }
}

func confirm(_ question: String) -> Bool {
    print("\(question) [y/N] ", terminator: "")
    guard let answer = readLine() else {
        print("(no answer)")
        return false
    }
    return ["y", "yes"].contains(answer.lowercased())
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("baton: \(message)\n".utf8))
}

/// Output formats for commands that have a machine-readable form.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, yaml
}

/// Calls to the members' REST APIs (`api_url` in their member keys).
struct OperatorAPI {
    var username: String?
    var password: String?
    var tls: APIClientTLS?

    struct Reply {
        var status: Int
        var body: Data
        var url: String

        var ok: Bool { (200..<300).contains(status) }

        /// The message for a human: the `error` field of a JSON error, or the body as text.
        var message: String {
            if let value = try? JSONDecoder().decode(JSONValue.self, from: body),
                case .object(let object) = value, let error = object["error"]?.stringValue
            {
                return error
            }
            let text = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return text.isEmpty ? "HTTP \(status)" : text
        }

        var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: body) }
    }

    struct Unreachable: Error, CustomStringConvertible {
        var url: String
        var reason: String
        var timedOut = false
        var description: String { "\(url): \(reason)" }
    }

    /// `http(s)://host:port` from a member's `api_url` (`http://host:port/patroni`).
    static func base(_ apiURL: String) -> String? {
        guard !apiURL.isEmpty, var components = URLComponents(string: apiURL), components.host != nil,
            components.scheme == "http" || components.scheme == "https"
        else {
            return nil
        }
        components.path = ""
        components.query = nil
        return components.string
    }

    func call(
        _ method: String, _ apiURL: String, path: String, body: JSONValue? = nil, timeout: Double = 10
    ) async throws -> Reply {
        guard let base = Self.base(apiURL) else {
            throw Unreachable(url: apiURL, reason: "not an http:// or https:// URL")
        }
        let target = base + path
        var headers: [(String, String)] = []
        if let username, let password {
            headers.append(("Authorization", "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()))
        }
        let client: APIClient
        do {
            client = try APIClient(tls: tls)
        } catch {
            throw Unreachable(url: target, reason: "TLS setup failed: \(error)")
        }
        do {
            let reply = try await client.send(
                method, url: target, body: try body.map { Array(try JSONEncoder().encode($0)) }, headers: headers,
                timeout: Duration(checkedSeconds: timeout) ?? .seconds(10))
            return Reply(status: reply.status, body: Data(reply.body), url: target)
        } catch {
            let text = "\(error)"
            throw Unreachable(url: target, reason: text, timedOut: text.contains("within"))
        }
    }
}

extension ClusterView {
    /// Members with an `api_url`, the leader first.
    var apiMembersLeaderFirst: [Member] {
        let leader = leader?.member
        return members.filter { !$0.apiURL.isEmpty }.sorted {
            ($0.name == leader ? 0 : 1) < ($1.name == leader ? 0 : 1)
        }
    }
}
