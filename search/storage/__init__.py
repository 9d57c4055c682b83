"""Study storage engineering: URLs -> storages, owned trials, the gRPC proxy, budget counts, heartbeats.

A worker resolves its study's storage once into a :class:`~search.storage.resolved.StudyStorage`
(backend, kind, URL, heartbeat, the trial lock) and passes it to ``budget`` and ``heartbeat``.

This package is the only place that touches Optuna's private names (``tests/test_layers.py`` fails
when a module outside it imports or reads one). Tested with Optuna 4.9.0 and 5.1.0, the ends of the
range ``setup.cfg`` allows (``>=4.9,<5.2``): ``.ci/run`` runs the storage tests on the lowest too.
4.9 is the lowest that works: ``RetryHeartbeatStaleTrialCallback`` first appears in it (4.2-4.8 name
it ``RetryFailedTrialCallback``; the gRPC proxy needs 4.2). An Optuna release that renames one of
these breaks this package alone.

| Optuna internal | used in | why |
| --- | --- | --- |
| `Study._storage` | `internals` | no public accessor for a study's storage |
| `Study._study_id`, `FrozenStudy._study_id` | `internals` | the key of BaseStorage's study methods |
| `Trial._trial_id`, `FrozenTrial._trial_id` | `internals`, `owned` | the key of BaseStorage's trial methods |
| `Study._thread_local.cached_all_trials` | `internals` | dropped before creating a trial, as `ask()` does |
| `RDBStorage._get_stale_trial_ids` | `internals` | stale trials without failing them |
| `Study._get_trials` (filtered) | `internals` | TPE lists trials through it (`WithoutPruned`) |
| `RDBStorage._create_new_trial` (overridden) | `owned` | keep the worker's own trial in memory |
| `RDBStorage._get_trials` (overridden) | `owned` | Optuna's cache reads through it: retried on a lost connection |
| `RDBStorage._get_prepared_new_trial` | `owned` | fail a trial and create its retry in one transaction (`fail_running`) |
| `RDBStorage._set_trial_attr_without_commit` | `owned` | the fail reason, in that transaction |
| `RDBStorage._version_manager` | `backend` | the schema check without a second engine |
| `_CachedStorage._backend` | `backend` | the RDB storage behind Optuna's cache |
| `optuna.storages._rdb.models` | `owned`, `budget` | one-statement writes, the counted creation |
| `TrialModel._datetime_start_utc` (presence) | `owned` | Optuna 5.0+ stores trial times as naive UTC |
| `optuna.storages._rdb.storage._create_scoped_session` | `owned` | Optuna's session and rollback handling |
| `optuna.storages._cached_storage._CachedStorage` | `proxy` | the cache Optuna puts in front of RDB storages |
| `optuna.storages._grpc.servicer`, `optuna.storages._grpc.auto_generated` | `grpc_auth` | Optuna's storage service on our own gRPC server (token check, exclusive port, TLS) |
| `GrpcStorageProxy._setup` (overridden), `optuna.storages._grpc.client.GrpcClientCache` | `grpc_auth` | the proxy client on a channel that sends the token and speaks TLS |
| SQLAlchemy `pool._max_overflow` | `backend` | a single-connection pool for SQLite |
"""

# The public modules (``from search.storage import *``); each declares its own names.
__all__ = ["backend", "budget", "heartbeat", "internals", "owned", "proxy", "resolved"]
