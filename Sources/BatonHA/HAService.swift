import BatonCore
import Logging
import ServiceLifecycle

/// The HA loop as a `Service` of the agent's `ServiceGroup`. On graceful shutdown (SIGTERM) a
/// leader stops postgres cleanly (so every acknowledged write reaches the standbys), then
/// releases the leader key and its session, so that a replica takes over at once rather than
/// after the ttl.
public struct HAService: Service {
    public let loop: HALoop

    public init(loop: HALoop) {
        self.loop = loop
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await loop.run()
        }
        await loop.shutdown()
    }
}

extension HALoop {
    /// Leaves the cluster cleanly: stop postgres (fast) if configured, release the leader key,
    /// revoke the session (deleting the member key).
    public func shutdown() async {
        stopped = true
        failPendingOperatorRequests()
        let wasLeader = status.holdsLeaderKey
        // A primary left running without its agent would outlive its lease: unless the cluster is
        // paused, a leader always stops postgres on the way out.
        let stopPostgres = configuration.stopPostgresOnShutdown || (wasLeader && !status.config.pause)
        if stopPostgres {
            do {
                // primary_stop_timeout (synchronous mode) cuts a primary's stop short, as in Patroni.
                let timeout = effectiveConfig(status.cluster).stopTimeout(
                    primary: status.postgres.inRecovery == false, agentDefault: configuration.stopTimeout)
                try await node.stop(mode: .fast, timeout: timeout)
                logger.info("shutdown: postgres stopped")
            } catch {
                logger.error("shutdown: stopping postgres failed: \(error)")
            }
            if wasLeader {
                _ = try? await store.releaseLeader(member: configuration.name)
                logger.info("shutdown: released the leader key")
            }
            if let session { try? await store.revokeSession(session) }
        } else {
            logger.info("shutdown: postgres left running (paused cluster); the session expires after ttl")
        }
        try? await watchdog?.disarm()
        session = nil
        leaseDeadline = nil
        status.holdsLeaderKey = false
    }
}
