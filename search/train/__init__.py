"""One trial's training loop, optimizers and schedules, and metrics."""
