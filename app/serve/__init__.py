"""The processes: the supervisor, the engine processes it starts, and what they share (lifeline,
runtime directory, logs, the containers' health check)."""
