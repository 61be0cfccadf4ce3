import BatonCore
import Hummingbird

extension BatonAPIServer {
    /// `POST /switchover` and `POST /failover`: validate, write the `failover` key, wake the loop,
    /// and for an immediate one wait (bounded) until another member holds the leader key.
    func requestSwitchover(
        _ action: SwitchoverRequest.Action, _ request: Request, context: APIRequestContext
    ) async -> Response {
        let parsed: SwitchoverRequest
        switch await jsonObject(request) {
        case .success(let object):
            switch SwitchoverRequest.parse(action, object) {
            case .success(let value): parsed = value
            case .failure(let error): return APIResponse.error(error)
            }
        case .failure(let error): return APIResponse.error(error)
        }
        let cluster: ClusterView
        do {
            cluster = try await source.store.loadCluster()
        } catch {
            return storeUnavailable("read the cluster", error)
        }
        let key: FailoverRequest
        switch parsed.validate(cluster: cluster, config: cluster.dynamicConfig, wallClock: source.wallClockSeconds()) {
        case .success(let value): key = value
        case .failure(let refusal):
            return APIResponse.error(HTTPResponse.Status(code: refusal.statusCode), refusal.message)
        }
        do {
            guard try await source.store.writeFailover(key, expected: cluster.failover?.modRevision) else {
                return APIResponse.error(
                    .conflict,
                    "the failover key was changed by someone else at the same time; check GET /cluster and retry")
            }
        } catch {
            return storeUnavailable("write the failover key", error)
        }
        context.logger.notice(
            "\(action.rawValue) requested through the REST API",
            metadata: [
                "api.leader": "\(parsed.leader ?? "-")", "api.candidate": "\(parsed.candidate ?? "-")",
                "api.scheduled_at": "\(parsed.scheduledAt ?? "-")",
            ])
        source.wake("\(action.rawValue) requested through the REST API")
        if parsed.scheduledAt != nil {
            return APIResponse.text(.accepted, "\(action.title) scheduled")
        }
        return await awaitNewLeader(action, previous: cluster.leader?.member, candidate: parsed.candidate)
    }

    /// Polls the store until a member other than `previous` holds the leader key (200), the
    /// request was dropped with the old leader still in place (503 failed), or the time is up
    /// (503 unknown).
    func awaitNewLeader(
        _ action: SwitchoverRequest.Action, previous: String?, candidate: String?
    ) async -> Response {
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.switchoverTimeout
        while clock.now < deadline {
            do {
                try await Task.sleep(for: configuration.switchoverPollInterval)
            } catch {
                break
            }
            guard let cluster = try? await source.store.loadCluster() else { continue }
            if let leader = cluster.leader?.member, leader != previous {
                if candidate == nil || candidate == leader {
                    return APIResponse.text(.ok, "Successfully \(action.pastTense) to \"\(leader)\"")
                }
                return APIResponse.text(
                    .ok, "\(action.pastTense.capitalizedFirst) to \"\(leader)\" instead of \"\(candidate ?? "")\"")
            }
            if cluster.failover == nil, cluster.leader != nil {
                return APIResponse.text(
                    .serviceUnavailable,
                    "\(action.title) failed: the request was dropped and \(previous ?? "the leader") is still the leader; "
                        + "see the leader's log for the reason")
            }
        }
        return APIResponse.text(
            .serviceUnavailable,
            "\(action.title) status unknown: no new leader within \(configuration.switchoverTimeout); check GET /cluster"
        )
    }

    /// `DELETE /switchover`: cancels a scheduled switchover.
    func cancelSwitchover(context: APIRequestContext) async -> Response {
        do {
            let cluster = try await source.store.loadCluster()
            guard let failover = cluster.failover, failover.value.scheduled_at != nil else {
                return APIResponse.error(.notFound, "no switchover is scheduled")
            }
            guard try await source.store.deleteFailover(expected: failover.modRevision) else {
                return APIResponse.error(
                    .conflict, "the scheduled switchover changed at the same time; check GET /cluster and retry")
            }
            context.logger.notice("scheduled switchover cancelled through the REST API")
            source.wake("switchover cancelled through the REST API")
            return APIResponse.text(.ok, "scheduled switchover deleted")
        } catch {
            return storeUnavailable("delete the failover key", error)
        }
    }

    /// `POST /failsafe`: a leader that lost the store asks this member to confirm it as primary.
    /// Accepted when failsafe mode is on and this member is not itself running as primary.
    func acceptFailsafe(_ request: Request, context: APIRequestContext) async -> Response {
        let body: [String: JSONValue]
        switch await jsonObject(request) {
        case .success(let object): body = object
        case .failure(let error): return APIResponse.error(error)
        }
        guard case .string(let leader)? = body["name"], !leader.isEmpty else {
            return APIResponse.error(.badRequest, "name: expected the leader's member name as a string")
        }
        let status = await source.status()
        guard status.config.failsafeMode else {
            return APIResponse.error(.serviceUnavailable, "failsafe mode is not enabled (config failsafe_mode)")
        }
        if status.postgres.process == .running, status.postgres.inRecovery == false, leader != status.member {
            return APIResponse.error(.conflict, "Running as a leader")
        }
        // A confirmation commits this member: it does not race while the confirmed leader may
        // still be serving on the strength of it (ttl).
        if leader != status.member { source.noteFailsafeConfirmed(leader: leader) }
        context.logger.info("confirmed failsafe leader", metadata: ["api.leader": "\(leader)"])
        return APIResponse.text(.ok, "Accepted")
    }
}

extension String {
    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}
