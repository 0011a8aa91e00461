"""Self-evolution: what the gateway learns from its own traces, and the versions it promotes."""
