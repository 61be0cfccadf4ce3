/// The Patroni-compatible REST API on Hummingbird: health checks, status, cluster, config,
/// switchover, metrics; and `HTTPPeerProbe`, the client side the HA loop uses to ask peers.
///
/// Entry points: `BatonAPIServer.makeApplication(source:configuration:logger:)` and `HTTPPeerProbe`.
public enum BatonAPIModule {}
