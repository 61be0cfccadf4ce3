/// etcd v3 client over libcurl (the JSON gateway at /v3/) and EtcdClusterStore, the ClusterStore port in Patroni's key layout.
public enum BatonEtcdModule {}
