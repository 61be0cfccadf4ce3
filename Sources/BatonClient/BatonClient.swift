/// The library applications link: reads the published topology and keeps a primary pool and a replica pool.
public enum BatonClientModule {}
