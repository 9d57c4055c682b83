"""One trial's training loop, optimisers and schedules, and metrics."""
