/// The Patroni-compatible REST API on Hummingbird: health checks, status, cluster, config, switchover, metrics.
public enum BatonAPIModule {}
