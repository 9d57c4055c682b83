"""``strategy-search storage-proxy``: Optuna's gRPC storage proxy, with heartbeats and the trial lock.

One proxy process holds the database connections (a fixed few, however many workers) and
serves workers at ``grpc://HOST:PORT``; the workers need no database credentials. Optuna's
proxy has neither heartbeats nor a cross-machine lock, so two study/trial system attrs that
workers write through it are handled here instead of being stored:

* ``strategy_search:heartbeat`` on a trial records the database heartbeat of that trial; the
  proxy runs the stale-trial check (fail with "worker lost: ...", retry once) every interval.
* ``strategy_search:fail-and-retry`` on a trial (an interrupted worker's) fails it and queues its
  retry in one transaction (:func:`~search.storage.heartbeat.fail_and_retry`).
* A trial claim: ``get_trial_id_from_study_id_trial_number`` with a negative number (carrying the
  budget, :func:`~search.storage.backend.claim_number`) counts the study's used budget, takes a
  queued trial or creates one, and records its first heartbeat, all in this process under the
  study's :class:`TrialLock` (the same flock / advisory lock that workers connected directly
  take, so the budget stays exact across machines and proxies). One call per trial: workers never
  hold a lock across the network, so a worker that dies cannot keep one.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from search.core.errors import StorageError
from search.storage.heartbeat import BEAT_ATTR, FAIL_ATTR, carry_out_fail_request, fail_stale
from search.storage.budget import NotCounted, create_counted, rdb_usage
from search.storage import internals
from search.storage.grpc_auth import (
    check_listen, is_loopback, make_server, quiet_grpc, read_token, server_credentials,
)
from search.storage.owned import OwnedTrialsStorage
from search.storage.resolved import StudyStorage
from search.storage.backend import (
    GRPC_PREFIX, TrialLock, claimed_budget, heartbeat_settings, mask_url, open_storage, resolve_url,
)

log = logging.getLogger(__name__)

# Database connections the proxy holds (a study's trial lock, while held, keeps one of them).
PROXY_POOL = 4
PROXY_THREADS = 32


class ProxyBackend(OwnedTrialsStorage):
    """The database behind the proxy: heartbeats are recorded and trial claims carried out, not stored.

    Every write to a trial the proxy created comes through this process (the workers' calls), so it
    answers their reads of it from its own copy (:mod:`search.storage.owned`).
    """

    def _proxy_setup(self, url: str, front: BaseStorage) -> None:
        self._url = url
        # The cache the server answers from: a trial must be created (and a queued one taken) through
        # it, or its later writes find no cached trial.
        self._front = front
        self._mutex = threading.Lock()
        self._locks: dict[int, TrialLock] = {}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == BEAT_ATTR:
            self.record_heartbeat(trial_id)
            return
        if key == FAIL_ATTR:
            carry_out_fail_request(self, trial_id, value)
            return
        super().set_trial_system_attr(trial_id, key, value)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        if trial_number >= 0:
            return super().get_trial_id_from_study_id_trial_number(study_id, trial_number)
        trial_id = self._claim(study_id, claimed_budget(trial_number))
        if trial_id is None:
            raise KeyError("budget used up")  # the client's answer: no trial
        return trial_id

    def _claim(self, study_id: int, total: int | None) -> int | None:
        # Without the lock first: at the end of a study every waiting worker asks twice a second.
        if total is not None and rdb_usage(self, study_id)[0] >= total:
            return None
        lock = self._lock_of(study_id)
        trial_id = None
        try:
            if lock.advisory_key is None:
                raise NotCounted("not PostgreSQL")
            # One transaction that takes the lock: no connection of the small pool stays checked
            # out by a lock holder while it waits for another one to create the trial.
            trial_id = create_counted(self._front, self, study_id, total, lock.advisory_key)
            if trial_id is None:
                return None
        except NotCounted:
            with lock.hold():
                used, queued = rdb_usage(self, study_id)
                if total is not None and used >= total:
                    return None
                trial_id = self._pop_queued(study_id) if queued else None
                if trial_id is None:
                    trial_id = self._front.create_new_trial(study_id)
        # Before the worker hears of it: a RUNNING trial without a heartbeat is never failed as stale.
        if self.owns(trial_id):
            self.start_trial(trial_id, {}, heartbeat=True)
        else:
            self.record_heartbeat(trial_id)
        return trial_id

    def _pop_queued(self, study_id: int) -> int | None:
        """A WAITING trial (a retry, an enqueued config) set RUNNING, as ``study.ask()`` takes one."""
        for trial in self._front.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if self._front.set_trial_state_values(internals.trial_id(trial), state=TrialState.RUNNING):
                return internals.trial_id(trial)
        return None

    def _lock_of(self, study_id: int) -> TrialLock:
        with self._mutex:
            if study_id not in self._locks:
                # On the proxy's own pool: the lock's connection stays checked out while it is held.
                self._locks[study_id] = TrialLock(self._url, self.get_study_name_from_id(study_id),
                                                  engine=self.engine, policy=self.retry)
            return self._locks[study_id]

    def fail_stale_everywhere(self) -> int:
        """One stale-trial check over every study."""
        failed = 0
        for summary in self.get_all_studies():
            if internals.stale_trial_ids(self, summary):
                failed += fail_stale(StudyStorage.of(optuna.load_study(study_name=summary.study_name, storage=self)))
        return failed


def serve(storage: str | None, host: str, port: int, *, heartbeat_interval: int | None = None,
          grace_period: int | None = None, connect_timeout: float | None = None,
          ready: threading.Event | None = None, allow_remote: bool = False, token_file: str | None = None,
          tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """Run the proxy in front of ``storage`` until interrupted.

    It listens on a loopback address unless ``allow_remote`` (which needs a token), checks the token
    (``token_file``, else $STRATEGY_SEARCH_PROXY_TOKEN or $STRATEGY_SEARCH_PROXY_TOKEN_FILE) on every
    call when one is set, and serves TLS with ``tls_cert`` and ``tls_key`` (see :mod:`.grpc_auth`).
    """
    url = resolve_url(storage)
    if url.startswith(GRPC_PREFIX) or not (url.startswith(("sqlite", "postgresql", "mysql"))):
        raise StorageError(f"storage-proxy --storage {mask_url(url)}: give the database URL "
                           "(sqlite:///... or postgresql+psycopg://...), not a journal or another proxy")
    quiet_grpc()
    try:
        import grpc  # noqa: F401
    except ImportError as exc:
        raise StorageError(f"gRPC support missing ({exc}); pip install 'strategy-search[grpc]'") from None
    if (tls_cert is None) != (tls_key is None):
        raise StorageError("storage-proxy: give both --tls-cert and --tls-key (or neither)")
    token = read_token(token_file)
    check_listen(host, allow_remote, token)
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    if tls is not None:
        server_credentials(*tls)  # unreadable files: refused before the database is opened
    if not is_loopback(host) and tls is None:
        log.warning("storage-proxy on %s without TLS: the token and the studies cross the network unencrypted "
                    "(give --tls-cert and --tls-key on a network you do not trust)", host)
    interval, grace = heartbeat_settings(heartbeat_interval, grace_period)
    backend = open_storage(url, heartbeat_interval=interval, grace_period=grace, connect_timeout=connect_timeout,
                           rdb_class=ProxyBackend, pool_size=PROXY_POOL)
    assert isinstance(backend, ProxyBackend)
    from optuna.storages._cached_storage import _CachedStorage

    # The cache answers the workers' trial reads incrementally (Optuna's advice for the proxy).
    front = _CachedStorage(backend)
    backend._proxy_setup(url, front)
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
        server = make_server(front, host, port, ThreadPoolExecutor(max_workers=PROXY_THREADS), token=token, tls=tls)
    except StorageError:
        stop.set()
        backend.engine.dispose()
        raise
    server.start()
    log.info("storage proxy for %s on grpc://%s:%d (heartbeat %ds, grace %ds%s%s)", mask_url(url), host, port,
             interval, grace, ", token required" if token else "", ", TLS" if tls else "")
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
