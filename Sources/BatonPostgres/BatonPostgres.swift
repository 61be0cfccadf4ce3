/// Everything the agent does to its local PostgreSQL: a libpq connection wrapper, process control (initdb, supervised start, stop, promote, demote, rewind, basebackup) and LocalPostgresNode.
public enum BatonPostgresModule {}
