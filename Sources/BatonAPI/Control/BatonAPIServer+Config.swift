import BatonCore
import Hummingbird

extension BatonAPIServer {
    /// `GET /config`: the `config` key as the HA loop last read it (at most one loop_wait old, or
    /// sooner through the store's watch). Answered without asking etcd: this endpoint needs no
    /// authentication, and a flood of it must cost the store nothing.
    func readConfig() async -> Response {
        let status = await source.status()
        guard let cluster = status.cluster else {
            return APIResponse.error(
                .serviceUnavailable,
                "this member has not read the cluster from the store yet; retry in a few seconds, or ask another member"
            )
        }
        guard let config = cluster.config else {
            return APIResponse.error(
                .serviceUnavailable, "the config key does not exist yet: the cluster has not been bootstrapped")
        }
        return APIResponse.json(.ok, config.value.document)
    }

    /// `GET /failsafe`: the members the leader wrote into the `failsafe` key (name → REST API URL),
    /// as Patroni answers it; 502 when there is no such key (failsafe mode off, or not written yet).
    func readFailsafe() async -> Response {
        let status = await source.status()
        guard let failsafe = status.cluster?.failsafe else {
            return APIResponse.error(
                .badGateway, "no failsafe key: failsafe_mode is off, or the leader has not written it yet")
        }
        return APIResponse.json(.ok, .object(failsafe.mapValues { .string($0) }))
    }

    /// `PATCH /config` (RFC 7386 merge patch) and `PUT /config` (replace), validated, written
    /// with a compare-and-swap on the revision that was read.
    func changeConfig(_ request: Request, context: APIRequestContext, replace: Bool) async -> Response {
        let body: [String: JSONValue]
        switch await jsonObject(request) {
        case .success(let object): body = object
        case .failure(let error): return APIResponse.error(error)
        }
        let cluster: ClusterView
        do {
            cluster = try await source.store.loadCluster()
        } catch {
            return storeUnavailable("read the config key", error)
        }
        // A key that is not a JSON object at all is replaced: a patch applies to the configuration
        // the HA loop keeps in force meanwhile (the last valid one), compared on the bad key's revision.
        let current: Versioned<DynamicConfig>? =
            if let config = cluster.config {
                config
            } else if let revision = cluster.unreadableConfigRevision {
                Versioned(await source.status().config, modRevision: revision)
            } else {
                nil
            }
        let updated =
            replace
            ? DynamicConfig(body) : (current?.value ?? DynamicConfig()).merging(patch: .object(body))
        // Slot entries a config key may carry from Patroni are skipped when read; given here, they
        // are refused.
        let problems = updated.validationErrors() + updated.slotProblems()
        guard problems.isEmpty else {
            return APIResponse.json(
                .badRequest,
                [
                    "error": .string(
                        "the resulting configuration is invalid: " + problems.joined(separator: "; ")),
                    "problems": .array(problems.map(JSONValue.string)),
                ])
        }
        do {
            guard try await source.store.writeConfig(updated, expected: current?.modRevision) else {
                return APIResponse.error(
                    .conflict,
                    "the configuration was changed by someone else since it was read; "
                        + "GET /config and apply your change again")
            }
        } catch {
            return storeUnavailable("write the config key", error)
        }
        context.logger.notice(
            "configuration \(replace ? "replaced" : "patched") through the REST API",
            metadata: ["api.keys": "\(body.keys.sorted().joined(separator: ","))"])
        source.wake("config changed through the REST API")
        return APIResponse.json(.ok, updated.document)
    }

    func storeUnavailable(_ what: String, _ error: any Error) -> Response {
        APIResponse.error(
            .serviceUnavailable, "could not \(what): \(error); check that the store (etcd) is reachable and retry")
    }
}
