import BatonCore
import Logging

extension EtcdClient {
    /// `/v3/auth/authenticate`: fetches a token with the configured credentials and keeps it for
    /// later calls. Wrong credentials are a `StoreError` with code `.auth`. Never logs the password.
    @discardableResult
    public func authenticate() async throws -> String {
        try await authenticate(deadline: ContinuousClock().now + requestTimeout)
    }

    func authenticate(deadline: ContinuousClock.Instant) async throws -> String {
        guard let credentials = configuration.credentials else {
            throw StoreError(.auth, "no etcd credentials configured")
        }
        let body = WireEncoding.encode(["name": credentials.user, "password": credentials.password])
        let token = try await call(
            "/v3/auth/authenticate", body: body, idempotent: true, authenticated: false, deadline: deadline
        ) { (wire: WireObject) throws(WireError) -> String in
            guard let token = try wire.string("token"), !token.isEmpty else {
                throw WireError("authenticate reply without a token")
            }
            return token
        }
        setToken(token)
        logger.debug("authenticated to etcd", metadata: ["etcd.user": "\(credentials.user)"])
        return token
    }

    /// `/v3/cluster/member/list`.
    public func memberList() async throws -> [EtcdMember] {
        try await call("/v3/cluster/member/list", body: Array("{}".utf8), idempotent: true) {
            (wire: WireObject) throws(WireError) -> [EtcdMember] in
            var members: [EtcdMember] = []
            for member in try wire.objects("members") { members.append(try EtcdMember(wire: member)) }
            return members
        }
    }

    /// Replaces the endpoints with the client URLs of the cluster's voting members (learners
    /// cannot serve linearizable requests). Keeps the current list when the answer has none.
    @discardableResult
    public func discoverEndpoints() async throws -> [String] {
        let members = try await memberList()
        let secure = configuration.tls != nil
        var urls: [String] = []
        for member in members where !member.isLearner {
            for url in member.clientURLs {
                let normalized = EtcdConfiguration.normalize(url, secure: secure)
                if !urls.contains(normalized) { urls.append(normalized) }
            }
        }
        guard !urls.isEmpty else { return endpoints }
        replaceEndpoints(urls)
        logger.info("etcd endpoints discovered", metadata: ["etcd.endpoints": "\(urls.joined(separator: ","))"])
        return urls
    }

    /// `GET /version` of one endpoint (the current one by default).
    public func version(endpoint: String? = nil) async throws -> EtcdVersion {
        guard let target = endpoint ?? currentEndpoint else { throw StoreError(.unavailable, "no etcd endpoints") }
        let request = HTTPRequest(
            url: target + "/version", method: .get, body: [], headers: [],
            connectTimeout: connectTimeout, timeout: requestTimeout)
        switch await pool.run(request) {
        case .success(let response):
            return try interpret(response, endpoint: target) { (wire: WireObject) throws(WireError) in
                try EtcdVersion(wire: wire)
            }
        case .failure(let failure):
            if failure.kind == .aborted { throw CancellationError() }
            throw StoreError.transport(failure, endpoint: target, idempotent: true)
        }
    }

    /// Checks that the cluster runs etcd 3.4 or newer (the `/v3/` gateway), trying each endpoint
    /// until one answers.
    @discardableResult
    public func checkVersion() async throws -> EtcdVersion {
        var lastError: (any Error)?
        for endpoint in endpoints {
            do {
                let version = try await version(endpoint: endpoint)
                guard version.supportsV3Gateway else {
                    throw StoreError(
                        .invalidRequest,
                        "etcd \(version.server) (cluster version \(version.cluster)) is too old: "
                            + "Baton needs etcd 3.4 or newer for the /v3/ JSON gateway; upgrade etcd",
                        endpoint: endpoint)
                }
                logger.debug(
                    "etcd version", metadata: ["etcd.endpoint": "\(endpoint)", "etcd.version": "\(version.server)"])
                return version
            } catch let error as StoreError where error.code == .invalidRequest {
                throw error
            } catch {
                lastError = error
            }
        }
        throw lastError ?? StoreError(.unavailable, "no etcd endpoints")
    }
}
