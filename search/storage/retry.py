"""Riding out a database outage: a storage call that lost its connection is retried on a fresh one.

A PostgreSQL restart, a failover or ``pg_terminate_backend`` drops a worker's connection while it
trains. The next storage call then fails with an ``OperationalError`` (the server closed the
connection, or refuses new ones while it restarts). :class:`Retry` calls it again, each time on a
new connection (SQLAlchemy's pool replaces an invalidated one), with backoff, until the
``--connect-timeout`` deadline; only then it gives up with :class:`Outage`, one line.

Retrying is safe only for a call that does the same thing twice when its first try was in fact
committed (the reply lost with the connection). :class:`search.storage.owned.OwnedTrialsStorage`
retries reads and writes that are upserts as they are, and resolves the two that are not:
a trial's final state (read back: a refusal because the trial already holds exactly that state is
success) and a counted creation (looked up by its number and start time before creating again).

PostgreSQL's session lock of :class:`~search.storage.backend.TrialLock` dies with its connection:
taking it is retried, and releasing it on a new connection says so (a warning). The usual claim
(a counted creation, :mod:`search.storage.budget`) takes its lock inside one transaction instead,
which a lost connection rolls back whole.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from search.core.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that waiting will not fix: reported at once instead of retried.
PERMANENT = ("authentication failed", "does not exist", "no password supplied", "file is not a database",
             "schema of this storage")
# Backoff between tries: short, because reconnecting to a server that is up again is cheap and a
# trial's heartbeat must resume well inside the grace period.
FIRST_DELAY = 0.25
MAX_DELAY = 2.0

_local = threading.local()


class Outage(StorageError):
    """The database stayed unreachable for the whole ``--connect-timeout``: the worker gives up."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: Optuna re-raises SQLAlchemy's errors) is a lost or refused
    connection that a retry on a fresh connection may get past."""
    from sqlalchemy import exc as sa

    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, Outage):
            return False
        if isinstance(error, sa.DisconnectionError):
            return True
        if isinstance(error, sa.DBAPIError):
            if any(marker in str(error) for marker in PERMANENT):
                return False
            return bool(error.connection_invalidated) or isinstance(error, sa.OperationalError)
        error = error.__cause__ or error.__context__
    return False


def reason_of(exc: BaseException) -> str:
    """The first line of the database's own message (without SQLAlchemy's ``(psycopg...)`` prefix)."""
    from sqlalchemy import exc as sa

    error: BaseException | None = exc
    while error is not None and not isinstance(error, sa.DBAPIError):
        error = error.__cause__ or error.__context__
    text = str(getattr(error, "orig", None) or error or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line


@contextlib.contextmanager
def _direct() -> Iterator[None]:
    """Storage calls in this block (on this thread) are not retried one by one: the call around
    them, which is being retried, retries them as a whole."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


class Retry:
    """Calls a storage operation, retrying it on a lost connection until ``timeout`` seconds have
    passed since the first failure (``label``: the masked storage URL, for the messages)."""

    def __init__(self, timeout: float, label: str, enabled: bool = True) -> None:
        self.timeout = timeout
        self.label = label
        self.enabled = enabled
        self._lock = threading.Lock()
        self._down_since: float | None = None  # the outage being ridden out (any thread), for one log line

    def __call__(self, fn: Callable[[], T], what: str) -> T:
        if not self.enabled or getattr(_local, "depth", 0):
            return fn()
        with _direct():
            return self._retry(fn, what)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        deadline: float | None = None
        delay = FIRST_DELAY
        while True:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - classified just below; anything else is re-raised
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                    self._went_down(what, exc)
                left = deadline - now
                if left <= 0:
                    raise Outage(f"storage {self.label} unreachable, gave up after {self.timeout:g}s "
                                 f"(raise it with --connect-timeout): {reason_of(exc)}") from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, MAX_DELAY)
                continue
            if deadline is not None:
                self._came_back()
            return result

    def _went_down(self, what: str, exc: BaseException) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        if first:
            log.warning("storage %s: connection lost during %s (%s); retrying on a new connection for up to %gs",
                        self.label, what, reason_of(exc), self.timeout)

    def _came_back(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.warning("storage %s: connection back after %.1fs", self.label, time.monotonic() - since)


def disabled() -> Retry:
    """A policy that never retries (storages we did not open with a timeout)."""
    return Retry(0.0, "", enabled=False)


def call(policy: Any, fn: Callable[[], T], what: str) -> T:
    """``policy(fn, what)`` when ``policy`` is a :class:`Retry`, else ``fn()``."""
    return policy(fn, what) if isinstance(policy, Retry) else fn()
