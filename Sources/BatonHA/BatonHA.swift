/// The HA loop service: observe, decide (BatonCore), execute actions, publish; keeps the lease and the self-fencing deadline.
public enum BatonHAModule {}
