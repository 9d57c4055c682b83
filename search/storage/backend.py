"""Storage URLs: defaults, masking, connection settings for concurrent workers, and a trial lock.

* ``sqlite:///studies.db`` (default): one machine; WAL journal and a long busy timeout so
  several worker processes do not fail on "database is locked".
* ``postgresql+psycopg://user:pass@host/db``: many machines (``pip install 'strategy-search[postgres]'``).
* ``journal:PATH``: Optuna's append-only JournalStorage on a local file.
* ``grpc://HOST:PORT``: a ``strategy-search storage-proxy`` in front of the database
  (``pip install 'strategy-search[grpc]'``); workers need no database credentials.

One database connection per worker process: the storage's pool holds one PostgreSQL
connection, shared by Optuna, the trial lock and the heartbeat thread. A connection lost later
(a restart, a failover) is replaced, and the call that lost it retried, for up to the same
``connect_timeout`` (:mod:`search.storage.retry`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from search.core import redact
from search.core.errors import StorageError
from search.storage import retry
from search.storage.owned import OwnedTrialsStorage

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///studies.db"
STORAGE_ENV = "STRATEGY_SEARCH_STORAGE"
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
CONNECT_TIMEOUT = 30.0
# Environment overrides (the CLI's --heartbeat/--grace/--connect-timeout set the same values).
HEARTBEAT_ENV = "STRATEGY_SEARCH_HEARTBEAT"
GRACE_ENV = "STRATEGY_SEARCH_GRACE"
CONNECT_TIMEOUT_ENV = "STRATEGY_SEARCH_CONNECT_TIMEOUT"
JOURNAL_PREFIX = "journal:"
GRPC_PREFIX = "grpc://"


def parse_grpc_url(url: str) -> tuple[str, int]:
    """``grpc://HOST:PORT`` -> (host, port)."""
    rest = url[len(GRPC_PREFIX):].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StorageError(f"storage URL {url!r} is not valid; use grpc://HOST:PORT (a strategy-search storage-proxy)")
    return host.strip("[]"), int(port)


def connect_proxy(url: str, connect_timeout: float) -> BaseStorage:
    """A client of the storage proxy at ``url``, once it answers (waiting up to ``connect_timeout``)."""
    from search.storage.grpc_auth import CA_ENV, check_access, proxy_client, quiet_grpc

    host, port = parse_grpc_url(url)
    quiet_grpc()
    try:
        import grpc  # noqa: F401
    except ImportError as exc:
        raise StorageError(f"storage {url}: gRPC support missing ({exc}); "
                           "pip install 'strategy-search[grpc]'") from None

    proxy = proxy_client(host, port)  # with $STRATEGY_SEARCH_PROXY_TOKEN and TLS ($STRATEGY_SEARCH_PROXY_CA)
    try:
        proxy.wait_server_ready(timeout=connect_timeout)
    except ConnectionError:
        proxy.close()
        tls = f"; with TLS, does ${CA_ENV} hold its certificate?" if os.environ.get(CA_ENV) else ""
        raise StorageError(f"storage {url} unreachable, gave up after {connect_timeout:g}s (is "
                           f"strategy-search storage-proxy running there{tls})") from None
    try:
        check_access(proxy, url)
    except StorageError:
        proxy.close()
        raise
    return proxy


def resolve_url(url: str | None) -> str:
    """The storage URL to use: the argument, else $STRATEGY_SEARCH_STORAGE, else the default."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``url`` with its password and credential query values replaced by ``***`` (safe to show and log)."""
    return redact.mask_url(url)


def storage_label(url: str | None) -> str:
    """The storage that ``url`` resolves to, password masked."""
    return mask_url(resolve_url(url))


def _env_number(name: str, default: float, *, integer: bool) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        kind = "a whole number of seconds" if integer else "a number of seconds"
        raise StorageError(f"${name}={raw!r} is not valid; use {kind} > 0")
    return value


def heartbeat_settings(heartbeat_interval: int | None = None, grace_period: int | None = None) -> tuple[int, int]:
    """(interval, grace) from the arguments, else the environment, else the defaults; validated."""
    interval = int(heartbeat_interval if heartbeat_interval is not None
                   else _env_number(HEARTBEAT_ENV, HEARTBEAT_INTERVAL, integer=True))
    default_grace = max(GRACE_PERIOD, 3 * interval)
    grace = int(grace_period if grace_period is not None else _env_number(GRACE_ENV, default_grace, integer=True))
    if interval <= 0 or grace <= 0:
        raise StorageError("heartbeat interval and grace period must be > 0 seconds")
    if grace <= interval:
        raise StorageError(f"grace period ({grace}s) must be longer than the heartbeat interval ({interval}s), "
                           "or live trials would be failed as stale")
    return interval, grace


def _sqlite_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    return None if db in (None, "", ":memory:") else db


def _sqlite_creator(path: str) -> Any:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=60.0, check_same_thread=False)
        # WAL lets readers (the dashboard, other workers) proceed while one worker writes.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    return connect


def _engine_kwargs(url: str, connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        return {"creator": _sqlite_creator(path)} if path else {}
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 1800}
    if url.startswith("postgresql"):
        # Pinged only after a pause instead (ping_when_idle): a trial checks its connection out ~20
        # times, and a ping per checkout was a round trip each, several inside the trial lock.
        del kwargs["pool_pre_ping"]
        # A blackholed host must not hold one attempt past the overall deadline (libpq's minimum is 2s).
        kwargs["connect_args"] = {**_PG_CONNECT_ARGS,
                                  "connect_timeout": max(2, min(10, int(connect_timeout)))}
        # One connection per worker process (max_connections arithmetic in docs/how-to/postgresql.md). No
        # recycling: the trial lock is a session lock of that one backend (TrialLock); keepalives
        # and the ping after a pause notice a dead connection instead.
        kwargs.update(pool_size=1, max_overflow=0, pool_timeout=120)
        del kwargs["pool_recycle"]
    return kwargs


# A pooled PostgreSQL connection idle for longer than this is pinged before use (see ping_when_idle).
PING_AFTER_IDLE = 2.0


def ping_when_idle(engine: Any) -> Any:
    """Ping a pooled connection on checkout only when it sat unused for :data:`PING_AFTER_IDLE` s.

    A dead connection (a restarted server, a dropped peer) is then replaced before a worker uses it
    after a pause (a training epoch, the heartbeat interval), as SQLAlchemy's ``pool_pre_ping``
    would, without a round trip on each of the many checkouts a trial makes in a row.
    """
    from sqlalchemy import event, exc

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        last = record.info.get("checked_in")
        if last is not None and time.monotonic() - last < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as err:  # noqa: BLE001 - any failure of the ping means "use another connection"
            raise exc.DisconnectionError(str(err)) from err
        if not alive:
            raise exc.DisconnectionError("ping failed")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    return engine


# libpq settings: fail a connection attempt after 10s, and notice a dead peer (a lost machine,
# a dropped NAT entry) through TCP keepalives instead of hanging on a half-open socket.
_PG_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                    "keepalives_interval": 10, "keepalives_count": 3}


# Errors that waiting will not fix: report them at once instead of retrying.
_PERMANENT = retry.PERMANENT


def open_storage(url: str | None = None, *, heartbeat: bool = True, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, connect_timeout: float | None = None,
                 rdb_class: type[RDBStorage] = OwnedTrialsStorage, pool_size: int = 1) -> BaseStorage:
    """Open a storage, retrying with backoff while the database is unreachable.

    With ``heartbeat``, a trial whose worker died (SIGKILL, lost machine) is marked FAIL after
    ``grace_period`` seconds and retried once with the same params. Unset settings come from
    $STRATEGY_SEARCH_HEARTBEAT, $STRATEGY_SEARCH_GRACE, $STRATEGY_SEARCH_CONNECT_TIMEOUT or the defaults.
    ``pool_size``: PostgreSQL connections this process may hold (1 for a worker; the proxy more).
    """
    url = resolve_url(url)
    if connect_timeout is None:
        connect_timeout = _env_number(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT, integer=False)
    shown = mask_url(url)
    if url.startswith(JOURNAL_PREFIX):
        path = url[len(JOURNAL_PREFIX):].removeprefix("//")
        if not path:
            raise StorageError(f"storage {shown}: journal URLs are journal:PATH (a log file)")
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise StorageError(f"storage {shown}: directory {parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(Path(path).expanduser()), lock_obj=JournalFileOpenLock(str(path) + ".lock"))
        return optuna.storages.JournalStorage(backend)
    if url.startswith(GRPC_PREFIX):
        proxy = connect_proxy(url, connect_timeout)
        # Optuna's proxy client has no heartbeat settings: ours beats through it (search.storage.heartbeat).
        proxy.heartbeat_interval = heartbeat_settings(heartbeat_interval, grace_period)[0] if heartbeat else None
        return proxy
    _check_rdb_url(url, shown)
    # A SQLite file that does not exist yet gets Optuna's current schema: no version to check
    # (the check loads every Alembic migration script, ~0.2 s of each start).
    sqlite_file = _sqlite_path(url) if url.startswith("sqlite") else None
    new_file = sqlite_file is not None and not Path(sqlite_file).expanduser().exists()
    options: dict[str, Any] = {}
    if heartbeat:
        heartbeat_interval, grace_period = heartbeat_settings(heartbeat_interval, grace_period)
        options = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=1),
        }
    deadline = time.monotonic() + connect_timeout
    delay = 1.0
    while True:
        try:
            # Optuna's own schema check holds a second connection (ours needs one).
            kwargs = _engine_kwargs(url, connect_timeout)
            single = kwargs.get("max_overflow") == 0
            if single:
                # Creating the tables of a new database nests two connections (Optuna's alembic
                # set-up): allow one extra until then.
                kwargs.update(pool_size=pool_size, max_overflow=1)
            storage = rdb_class(url, engine_kwargs=kwargs, skip_compatibility_check=True, **options)
            if not new_file:
                _check_schema(storage)
            if single:
                storage.engine.pool._max_overflow = 0  # type: ignore[attr-defined]
            if url.startswith("postgresql"):
                ping_when_idle(storage.engine)
            if isinstance(storage, OwnedTrialsStorage) and not url.startswith("sqlite"):
                storage.retry = retry.Retry(connect_timeout, shown)
            return storage
        except ImportError as exc:
            raise StorageError(
                f"storage {shown}: database driver missing ({exc}); for PostgreSQL run "
                "pip install 'strategy-search[postgres]' and use postgresql+psycopg://"
            ) from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds; all mean "unreachable"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = reason.replace(url, shown)
            if reason.startswith("(") and ") " in reason:  # sqlalchemy's "(sqlite3.DatabaseError) ..." prefix
                reason = reason.split(") ", 1)[1]
            left = deadline - time.monotonic()
            if any(marker in reason for marker in _PERMANENT):
                raise StorageError(f"storage {shown}: {reason}") from None
            if left <= 0:
                raise StorageError(f"storage {shown} unreachable, gave up after {connect_timeout:g}s "
                                   f"(raise it with --connect-timeout): {reason}") from None
            delay = min(delay, left)
            log.warning("storage %s unreachable (%s); retrying in %.1fs (giving up in %.0fs)",
                        shown, reason, delay, left)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """The RDBStorage behind ``storage`` (Optuna wraps it in a cache when a study is loaded), or None."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def _check_schema(storage: RDBStorage) -> None:
    manager = storage._version_manager
    current, head = manager.get_current_version(), manager.get_head_version()
    if current != head:
        storage.engine.dispose()
        raise RuntimeError(f"the schema of this storage is {current}, this Optuna needs {head}; "
                           "run: optuna storage upgrade --storage URL")


def _check_rdb_url(url: str, shown: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a bad port or an unclosed [IPv6 bracket
        raise StorageError(
            f"storage URL {shown!r} is not valid; use sqlite:///studies.db, "
            "postgresql+psycopg://user:password@host/db or journal:PATH"
        ) from None
    if parsed.host and "@" in parsed.host:
        raise StorageError(f"storage URL {shown!r}: the user or password contains '@'; "
                           "write it percent-encoded as %40")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"storage {shown}: unsupported database {backend!r}; use sqlite or postgresql")
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path and not Path(path).expanduser().resolve().parent.is_dir():
            raise StorageError(f"storage {shown}: directory {Path(path).parent} does not exist")
    if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2",):
        with contextlib.suppress(ImportError):
            import psycopg2  # noqa: F401

            return
        raise StorageError(f"storage {shown}: use postgresql+psycopg:// (psycopg 3, the 'postgres' extra)")


# ----------------------------------------------------------------------------- trial lock


def is_proxy(storage: BaseStorage) -> bool:
    """Whether ``storage`` is a client of a storage proxy (``grpc://``; ours sends the token: a subclass)."""
    from optuna.storages import GrpcStorageProxy

    return isinstance(storage, GrpcStorageProxy)


# A trial claim through a storage proxy (search.storage.proxy) rides on Optuna's
# get_trial_id_from_study_id_trial_number with a negative trial number, which no trial has:
# -1 for an unlimited budget, -2 - N for a budget of N trials.
def claim_number(total: int | None) -> int:
    return -1 if total is None else -2 - total


def claimed_budget(number: int) -> int | None:
    """The budget a :func:`claim_number` carries."""
    return None if number == -1 else -2 - number


class TrialLock:
    """Serializes "is there budget left? then create a trial" across workers of one study.

    SQLite and journal files: an ``flock`` on a file beside the database. PostgreSQL: a session
    advisory lock keyed by the study name, taken on ``engine`` (the storage's own one-connection
    pool, so the lock costs no connection of its own). A storage proxy takes this lock itself when
    it claims a trial for a worker (:mod:`search.storage.proxy`). Otherwise: a process-local lock only.
    """

    def __init__(self, url: str, study_name: str, engine: Any = None, policy: retry.Retry | None = None) -> None:
        self.url = resolve_url(url)
        # A lost connection: taking the lock is retried; the lock died with it (releasing says so).
        self._retry = policy
        self.study_name = study_name
        self._local = threading.Lock()
        self._engine: Any = None
        self._own_engine = False
        self._path: str | None = None
        self._fh: Any = None
        self._conn: Any = None
        self._pid: Any = None
        if self.url.startswith(JOURNAL_PREFIX):
            self._path = self.url[len(JOURNAL_PREFIX):].removeprefix("//") + ".trial-lock"
        elif self.url.startswith("sqlite"):
            db = _sqlite_path(self.url)
            self._path = f"{db}.trial-lock" if db else None
        elif self.url.startswith("postgresql"):
            if engine is None:
                from sqlalchemy import create_engine

                engine = ping_when_idle(create_engine(self.url, **_engine_kwargs(self.url)))
                self._own_engine = True
            self._engine = engine
        self._key = zlib.crc32(hashlib.sha1(study_name.encode()).digest()) & 0x7FFFFFFF

    @property
    def advisory_key(self) -> int | None:
        """The PostgreSQL advisory lock's key (a creation transaction can take it itself), else None."""
        return self._key if self._engine is not None else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (``blocking=False``: only if free now); True when taken."""
        if not self._local.acquire(blocking=blocking):
            return False
        try:
            if self._path:
                self._fh = open(self._path, "a")
                try:
                    fcntl.flock(self._fh, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._fh.close()
                    self._local.release()
                    return False
            elif self._engine is not None and not retry.call(self._retry, lambda: self._advisory_lock(blocking),
                                                             "taking the study's lock"):
                self._local.release()
                return False
        except BaseException:
            self._local.release()
            raise
        return True

    def release(self) -> None:
        try:
            if self._path:
                fcntl.flock(self._fh, fcntl.LOCK_UN)
                self._fh.close()
            elif self._engine is not None:
                retry.call(self._retry, self._advisory_unlock, "releasing the study's lock")
        finally:
            self._local.release()

    def _advisory_lock(self, blocking: bool) -> bool:
        from sqlalchemy import text

        call = "pg_advisory_lock" if blocking else "pg_try_advisory_lock"
        # With a one-connection pool the same backend comes back every time, so the session lock
        # stays held while Optuna uses that connection in between (no second connection). With a
        # larger pool the lock's connection stays checked out until release.
        # Autocommit: a session lock needs no transaction, which would cost two more round trips.
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken, self._pid = conn.execute(text(f"SELECT {call}(:k), pg_backend_pid()"), {"k": self._key}).one()
        except BaseException:
            conn.close()
            raise
        if taken is False:
            conn.close()
            return False
        if _single_connection(self._engine):
            conn.close()
            self._conn = None
        else:
            self._conn = conn
        return True

    def _advisory_unlock(self) -> None:
        from sqlalchemy import text

        conn = self._conn or self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            released, pid = conn.execute(text("SELECT pg_advisory_unlock(:k), pg_backend_pid()"),
                                         {"k": self._key}).one()
        finally:
            conn.close()
            self._conn = None
        if pid != self._pid or not released:
            log.warning("the database connection was replaced while the trial lock was held")

    def close(self) -> None:
        if self._engine is not None and self._own_engine:
            self._engine.dispose()


def _single_connection(engine: Any) -> bool:
    pool = engine.pool
    return getattr(pool, "_pool", None) is not None and pool.size() == 1 and getattr(pool, "_max_overflow", 1) == 0


CHECKPOINTS_ENV = "STRATEGY_SEARCH_CHECKPOINTS"


def checkpoint_root(storage_url: str | None = None, explicit: str | Path | None = None) -> Path:
    """Where versions before the artifact store kept trial models (``export`` still reads them)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CHECKPOINTS_ENV):
        return Path(os.environ[CHECKPOINTS_ENV]).expanduser()
    return beside_storage(storage_url, "checkpoints")


def beside_storage(storage_url: str | None, name: str) -> Path:
    """``name`` in the folder of a SQLite or journal file, else in the working directory."""
    url = resolve_url(storage_url)
    db: str | None = None
    if url.startswith(JOURNAL_PREFIX):
        db = url[len(JOURNAL_PREFIX):].removeprefix("//")
    elif url.startswith("sqlite"):
        db = _sqlite_path(url)
    return (Path(db).expanduser().parent if db else Path.cwd()) / name


def is_local_file(storage_url: str | None) -> bool:
    """Whether the storage is a file on this machine (SQLite, journal): no other machine shares it."""
    url = resolve_url(storage_url)
    return url.startswith(JOURNAL_PREFIX) or url.startswith("sqlite")
