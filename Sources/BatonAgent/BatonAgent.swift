/// The agent's configuration (YAML to typed, validated values) and the wiring of every service into one ServiceGroup.
public enum BatonAgentModule {}
