"""Optuna samplers and pruners by the names space files use; each checks its own options."""
