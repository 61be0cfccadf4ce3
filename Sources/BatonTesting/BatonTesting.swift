/// Test doubles and fixtures: an in-memory ClusterStore with TTLs on a manual clock, a fake PostgreSQL node, the simulated cluster and the ClusterStore contract suite.
public enum BatonTestingModule {}
