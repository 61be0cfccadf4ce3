import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// Where a `BatonDatabase` sends each request.
public enum DatabaseRoute: Sendable {
    /// The primary (writes and strong reads).
    case primary
    /// By consistency, as `BatonClient.read(consistency:)` routes.
    case read(Consistency)
}

extension BatonClient {
    /// BatonClient's routing as postgres-nio's `PostgresDatabase`: the protocol that PostgresKit's
    /// `SQLDatabase` (`database.sql()`) and Fluent's PostgreSQL driver build on. Each request
    /// leases a connection by `route` — following failovers, replica lag limits and breakers as
    /// `write` and `read` do — runs on it, and returns it.
    ///
    ///     let primary = client.database()                      // writes
    ///     let replicas = client.database(.read(.eventual))     // reads that may be a little stale
    ///     let rows = try await replicas.query("SELECT count(*) FROM orders").get().rows
    ///
    /// A request runs on the raw postgres-nio connection: its errors are postgres-nio's own,
    /// without the commit-outcome classification of `BatonConnection`; a transaction it leaves
    /// open is rolled back when the connection is returned.
    public func database(_ route: DatabaseRoute = .primary, logger: Logger? = nil) -> BatonDatabase {
        BatonDatabase(client: self, route: route, logger: logger ?? self.logger)
    }
}

/// See `BatonClient.database(_:logger:)`.
public struct BatonDatabase: PostgresDatabase {
    public let client: BatonClient
    public let route: DatabaseRoute
    public let logger: Logger

    /// Where the returned futures complete (the statements run on their connections' own loops).
    public var eventLoop: any EventLoop { MultiThreadedEventLoopGroup.singleton.any() }

    public func send(_ request: any PostgresRequest, logger: Logger) -> EventLoopFuture<Void> {
        withConnection { $0.send(request, logger: logger) }
    }

    public func withConnection<T>(
        _ closure: @escaping (PostgresNIO.PostgresConnection) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: Unchecked<T>.self)
        let work = Unchecked(closure)
        let client = self.client
        let route = self.route
        promise.completeWithTask {
            let lease: @Sendable (BatonConnection) async throws -> Unchecked<T> = { connection in
                // A request NIO drops when the channel closes under it would leave the future
                // pending forever: the close fails the wait instead.
                try await Unchecked(connection.connection.racingClose { work.value(connection.connection.postgres) })
            }
            switch route {
            case .primary: return try await client.withPrimaryConnection(lease)
            case .read(let consistency): return try await client.read(consistency: consistency, lease)
            }
        }
        return promise.futureResult.map(\.value)
    }
}

/// Carries a value postgres-nio's pre-concurrency API does not mark Sendable (a closure, a result
/// of the caller's type) across the task that runs the request; it is used by one task at a time.
struct Unchecked<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
