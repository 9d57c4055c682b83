"""Search-space files: YAML -> validated SearchSpace, constraints and enqueued configurations."""
