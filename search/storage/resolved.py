"""A study's storage, resolved once: what the worker loop, the budget, heartbeats and the trial lock need to know.

``optuna.load_study`` hides the storage a study was opened with behind Optuna's cache, and the
things a worker must know about it (the RDB storage behind the cache, whether it is a storage
proxy, its heartbeat interval and grace period, the URL the trial lock keys on) are not on the
study. :meth:`StudyStorage.of` derives them once, where a command opens the study; the runner
passes the one object down to :mod:`~search.storage.budget`, :mod:`~search.storage.heartbeat`, the
trial lock (:meth:`StudyStorage.lock`) and the keep code, and none of them derives them again per
trial or per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage

from search.storage import internals
from search.storage.backend import TrialLock, heartbeat_settings, is_proxy, mask_url, rdb_backend, resolve_url
from search.storage.owned import OwnedTrialsStorage
from search.storage.retry import Retry

# What a study is stored in: an RDB storage names its database ("sqlite", "postgresql", "mysql").
PROXY = "proxy"
JOURNAL = "journal"
IN_MEMORY = "in-memory"
OTHER = "other"


@dataclass(frozen=True)
class StudyStorage:
    """One study's storage, resolved once (:meth:`of`) and passed to everything that touches it."""

    study: optuna.Study
    front: BaseStorage  # the study's own storage: every read and write goes through it (Optuna's cache, for RDB)
    study_id: int
    rdb: RDBStorage | None  # the RDB storage behind ``front``; None for a proxy, a journal, in memory
    kind: str  # "sqlite" | "postgresql" | "mysql" | PROXY | JOURNAL | IN_MEMORY | OTHER
    url: str | None  # the URL it was opened from (None: in memory)
    label: str  # ``url`` with its password masked, to show and log
    heartbeat: int | None  # seconds between a running trial's heartbeats (None: no heartbeats)
    grace: int | None  # seconds without a heartbeat after which a trial is failed (None: a proxy's, or none)
    checks_stale: bool  # whether workers run the stale-trial check (a proxy runs it itself)
    retry: Retry | None  # the policy for a lost connection (a database server opened by us), else None

    @classmethod
    def of(cls, study: optuna.Study, url: str | None = None) -> "StudyStorage":
        """Resolve ``study``'s storage. An RDB storage knows its URL; for a journal or a proxy,
        ``url`` (the one the study was opened from, else $STRATEGY_SEARCH_STORAGE, else the default)."""
        front = internals.storage_of(study)
        rdb = rdb_backend(front)
        if rdb is not None:
            kind, url = rdb.engine.name, rdb.url
        elif is_proxy(front):
            kind, url = PROXY, resolve_url(url)
        elif isinstance(front, InMemoryStorage):
            kind, url = IN_MEMORY, None
        else:
            kind, url = (JOURNAL if isinstance(front, JournalStorage) else OTHER), resolve_url(url)
        if hasattr(front, "get_heartbeat_interval"):  # Optuna's heartbeat API (RDB storages)
            heartbeat = front.get_heartbeat_interval()
        elif kind == PROXY:
            # Optuna's proxy client has no heartbeat settings: open_storage sets them on it.
            heartbeat = getattr(front, "heartbeat_interval", None) or heartbeat_settings()[0]
        else:
            heartbeat = None
        checks_stale = internals.lists_stale_trials(front) and bool(heartbeat)
        grace = int(rdb.grace_period or 2 * heartbeat) if rdb is not None and heartbeat else None
        return cls(study=study, front=front, study_id=internals.study_id(study), rdb=rdb, kind=kind, url=url,
                   label=mask_url(url) if url is not None else IN_MEMORY, heartbeat=heartbeat, grace=grace,
                   checks_stale=checks_stale, retry=getattr(rdb, "retry", None))

    @property
    def proxied(self) -> bool:
        """Whether the study is reached through a storage proxy (``grpc://``)."""
        return self.kind == PROXY

    @property
    def owned(self) -> OwnedTrialsStorage | None:
        """The RDB storage when it is ours (:mod:`search.storage.owned`: kept trials, one-transaction writes)."""
        return self.rdb if isinstance(self.rdb, OwnedTrialsStorage) else None

    @property
    def counts_in_transaction(self) -> bool:
        """Whether the budget is counted and a trial created in one transaction (PostgreSQL, opened by us)."""
        return self.owned is not None and self.kind == "postgresql"

    def lock(self) -> TrialLock | None:
        """A new trial lock of the study (close it when done); None where none is taken here (in
        memory: one process; a proxy takes the lock itself when it claims a trial)."""
        if self.kind in (IN_MEMORY, PROXY):
            return None
        return TrialLock(self.url, self.study.study_name, engine=self.rdb.engine if self.rdb is not None else None,
                         policy=self.retry)
