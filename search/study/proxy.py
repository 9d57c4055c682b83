"""``strategy-search storage-proxy``: Optuna's gRPC storage proxy, with heartbeats and the trial lock.

One proxy process holds the database connections (a fixed few, however many workers) and
serves workers at ``grpc://HOST:PORT``; the workers need no database credentials. Optuna's
proxy has neither heartbeats nor a cross-machine lock, so two study/trial system attrs that
workers write through it are handled here instead of being stored:

* ``strategy_search:heartbeat`` on a trial records the database heartbeat of that trial; the
  proxy runs the stale-trial check (fail with "worker lost: ...", retry once) every interval.
* ``strategy_search:trial-lock`` on a study takes or releases the study's :class:`TrialLock`
  (the same flock / advisory lock that workers connected directly use), so the budget stays
  exact across machines. A worker that dies holding it loses it after the grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage

from search.errors import StorageError
from search import records
from search.study.heartbeat import BEAT_ATTR, fail_stale, grace_of
from search.study.storage import (
    GRPC_PREFIX, LOCK_ATTR, TrialLock, heartbeat_settings, mask_url, open_storage, resolve_url,
)

log = logging.getLogger(__name__)

# Database connections the proxy holds (plus one per study whose trial lock it has taken).
PROXY_POOL = 4
PROXY_THREADS = 32


@dataclass
class _Held:
    lock: TrialLock
    owner: str | None = None
    since: float = 0.0


class ProxyBackend(RDBStorage):
    """The database behind the proxy: heartbeats and trial-lock requests are acted on, not stored."""

    def _proxy_setup(self, url: str) -> None:
        self._url = url
        self._mutex = threading.Lock()
        self._held: dict[int, _Held] = {}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == BEAT_ATTR:
            self.record_heartbeat(trial_id)
            return
        super().set_trial_system_attr(trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key != LOCK_ATTR:
            super().set_study_system_attr(study_id, key, value)
            return
        if "release" in value:
            self._release(study_id, value["release"])
        elif not self._acquire(study_id, value["acquire"]):
            raise KeyError("trial lock busy")  # the client retries

    def _acquire(self, study_id: int, owner: str) -> bool:
        with self._mutex:
            held = self._held.get(study_id)
            if held is None:
                held = self._held[study_id] = _Held(TrialLock(self._url, self.get_study_name_from_id(study_id)))
            now = time.monotonic()
            if held.owner == owner:
                held.since = now
                return True
            if held.owner is not None and now - held.since > grace_of(self):
                log.warning("trial lock of study %d held for %.0fs by a worker that never released it; "
                            "taking it back", study_id, now - held.since)
                held.lock.release()
                held.owner = None
            if held.owner is None and held.lock.acquire(blocking=False):
                held.owner, held.since = owner, now
                return True
            return False

    def _release(self, study_id: int, owner: str) -> None:
        with self._mutex:
            held = self._held.get(study_id)
            if held is not None and held.owner == owner:
                held.lock.release()
                held.owner = None

    def fail_stale_everywhere(self) -> int:
        """One stale-trial check over every study."""
        failed = 0
        for summary in self.get_all_studies():
            if records.stale_trial_ids(self, summary):
                failed += fail_stale(optuna.load_study(study_name=summary.study_name, storage=self))
        return failed


def serve(storage: str | None, host: str, port: int, *, heartbeat_interval: int | None = None,
          grace_period: int | None = None, connect_timeout: float | None = None,
          ready: threading.Event | None = None) -> None:
    """Run the proxy in front of ``storage`` until interrupted."""
    url = resolve_url(storage)
    if url.startswith(GRPC_PREFIX) or not (url.startswith(("sqlite", "postgresql", "mysql"))):
        raise StorageError(f"storage-proxy --storage {mask_url(url)}: give the database URL "
                           "(sqlite:///... or postgresql+psycopg://...), not a journal or another proxy")
    try:
        from optuna.storages._grpc.server import make_server
    except ImportError as exc:
        raise StorageError(f"gRPC support missing ({exc}); pip install 'strategy-search[grpc]'") from None
    interval, grace = heartbeat_settings(heartbeat_interval, grace_period)
    backend = open_storage(url, heartbeat_interval=interval, grace_period=grace, connect_timeout=connect_timeout,
                           rdb_class=ProxyBackend, pool_size=PROXY_POOL)
    assert isinstance(backend, ProxyBackend)
    backend._proxy_setup(url)
    stop = threading.Event()

    def check() -> None:
        while not stop.wait(interval):
            try:
                backend.fail_stale_everywhere()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("stale-trial check failed: %s", exc)

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    try:
        from optuna.storages._cached_storage import _CachedStorage

        # The cache answers the workers' trial reads incrementally (Optuna's advice for the proxy).
        server = make_server(_CachedStorage(backend), host, port, ThreadPoolExecutor(max_workers=PROXY_THREADS))
    except RuntimeError as exc:
        raise StorageError(f"storage-proxy: cannot listen on {host}:{port} ({exc})") from None
    server.start()
    log.info("storage proxy for %s on grpc://%s:%d (heartbeat %ds, grace %ds)", mask_url(url), host, port,
             interval, grace)
    if ready is not None:
        ready.set()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        log.info("storage proxy stopped")
    finally:
        stop.set()
        server.stop(grace=2)
        backend.engine.dispose()
