"""Studies: storage, samplers, pruners, the trial objective and the worker loop."""

import warnings

import optuna

# Heartbeats, stale-trial retries and their helpers are flagged experimental by Optuna; we use
# them on purpose (see search.storage.backend), so their warnings would only be noise for users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# We drive trials with ask/tell and our own heartbeat thread (search.storage.heartbeat.HeartbeatThread).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

# The public modules (``from search.study import *``); each declares its own names.
__all__ = ["create", "load", "objective", "readiness", "runner", "signals", "stopping", "warmstart", "workers"]
