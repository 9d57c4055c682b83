"""optuna-dashboard on a study storage, read-only unless asked otherwise, with the trials' files.

optuna-dashboard 0.21 has no read-only mode and no authentication: anyone who reaches its port
can call its write API (``DELETE /api/studies/N`` deletes a study, notes and trial states can be
changed). :func:`serve` therefore answers only GET/HEAD requests unless ``allow_writes``, and says
so on every page and atop each study's note (the buttons stay: they are optuna-dashboard's).

The artifact store goes to optuna-dashboard too, so a trial's page lists its kept files and
previews its pictures; without ``--artifacts``, each trial's files are read from the store its worker
recorded, so studies with different stores share one dashboard. Files the keep policy removed are hidden from the lists (on SQL storages):
their metas stay on the finished trials, which Optuna cannot change, and
:mod:`search.artifacts.trial_files` records the removals on the study.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable

from optuna.storages import RDBStorage

from search import records
from search.core.errors import UserError
from search.storage.backend import open_storage, storage_label

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "HEAD", "OPTIONS")


STUDY_DETAIL = re.compile(r"^/api/studies/\d+$")  # the study page's data (its note included)
READ_ONLY_NOTE = (
    "**This dashboard is read-only** (`strategy-search dashboard`): its buttons that create, edit or delete "
    "(notes, trial states, studies) are refused with *405 Method Not Allowed*, so nobody who reaches the port "
    "can change the study. To use them, restart it with `--allow-writes` on a port only you can reach.\n\n"
    "Each finished trial's note (on its page) has its validation and test metrics, per-class table, size, "
    "latency and config. Parameter importances here are optuna-dashboard's (PED-ANOVA); the HTML report "
    "(`strategy-search report`) uses fANOVA: with a few dozen trials or fewer the two can rank params "
    "differently, and neither ranking is reliable yet."
)
BANNER = (b'<div style="position:fixed;bottom:0;right:0;z-index:9999;background:#fff3cd;color:#664d03;'
          b'font:13px sans-serif;padding:4px 10px;border-top-left-radius:6px;opacity:.92">'
          b'read-only dashboard: create, edit and delete buttons are refused (strategy-search dashboard '
          b'--allow-writes enables them)</div>')


def read_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: 405 for every request that could change the storage, and the read-only mode
    stated where people look: a line at the bottom of every page and atop each study's note."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            body = json.dumps({"reason": "this dashboard is read-only (strategy-search dashboard --allow-writes)"})
            start_response("405 Method Not Allowed", [("Content-Type", "application/json"),
                                                      ("Allow", ", ".join(READ_METHODS))])
            return [body.encode()]
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET").upper() != "GET" or not (
                STUDY_DETAIL.match(path) or path == "/" or path.startswith("/dashboard")):
            return app(environ, start_response)
        return _rewritten(app, environ, start_response, study=bool(STUDY_DETAIL.match(path)))

    return guarded


def _rewritten(app: Callable[..., Iterable[bytes]], environ: dict[str, Any], start_response: Callable[..., Any],
               *, study: bool) -> Iterable[bytes]:
    """The app's answer, with the read-only note put atop the study's note (study data) or the
    banner put into the page (HTML). Anything unexpected passes through untouched."""
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        captured.update(status=status, headers=headers)
        return lambda data: None  # (bottle does not use the write callable)

    chunks = app(environ, capture)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    headers = list(captured.get("headers", []))
    kind = next((v for k, v in headers if k.lower() == "content-type"), "")
    encoded = next((v for k, v in headers if k.lower() == "content-encoding"), "")
    if captured.get("status", "").startswith("200") and not encoded:
        if study and "json" in kind:
            body = _with_read_only_note(body)
        elif not study and "html" in kind and b"</body>" in body:
            body = body.replace(b"</body>", BANNER + b"</body>", 1)
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
    start_response(captured.get("status", "500 Internal Server Error"), headers)
    return [body]


def _with_read_only_note(body: bytes) -> bytes:
    try:
        doc = json.loads(body)
        note = doc.get("note") or {}
        text = note.get("body") or ""
        doc["note"] = {**note, "body": READ_ONLY_NOTE + ("\n\n---\n\n" + text if text else "")}
        return json.dumps(doc).encode()
    except (ValueError, AttributeError, TypeError):
        return body


class KeptFilesStorage(RDBStorage):
    """An RDB storage whose trials list only the artifacts their study still keeps."""

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[Any]:
        trials = super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        removed = set(records.removed_artifacts(self.get_study_system_attrs(study_id)))
        return [_kept_only(t, removed) for t in trials] if removed else trials


def _kept_only(trial: Any, removed: set[str]) -> Any:
    attrs = records.without_artifacts(trial.system_attrs, removed)
    if attrs is None:
        return trial
    shown = copy.copy(trial)
    shown.system_attrs = attrs
    return shown


class TrialStores:
    """optuna-dashboard's artifact store when the studies keep their files in different stores.

    optuna-dashboard asks for a file by its artifact id only (one store per dashboard); each trial
    records the store its worker uploaded to (user attr ``artifacts``), so the id leads to its store,
    opened on first use. Files uploaded from the dashboard (``--allow-writes``) go to ``default``.
    """

    RESCAN_S = 5.0  # an id no trial records is looked for again at most this often

    def __init__(self, storage: Any, default: Any) -> None:
        from search.artifacts.store import label

        self.storage = storage
        self.default = default
        self.description = f"the store each trial recorded (else {label(default)})"
        self._where: dict[str, str] = {}
        self._opened: dict[str, Any] = {label(default): default}
        self._scanned = 0.0
        self._lock = threading.Lock()

    def _scan(self) -> None:
        from search.storage import internals

        for study in self.storage.get_all_studies():
            for trial in self.storage.get_all_trials(internals.study_id(study), deepcopy=False):
                url, files = records.artifacts_of(trial)
                if url:
                    self._where.update(dict.fromkeys(files.values(), url))
        self._scanned = time.monotonic()

    def _store_of(self, artifact_id: str) -> Any:
        with self._lock:
            if artifact_id not in self._where and time.monotonic() - self._scanned > self.RESCAN_S:
                self._scan()
            url = self._where.get(artifact_id)
            return self.default if url is None else self.open(url)

    def open(self, url: str) -> Any:
        """The store at ``url``, opened once (a one-line ``UserError`` when it cannot be)."""
        from search.artifacts.store import open_store
        from search.core.locations import parse_location

        if url not in self._opened:
            self._opened[url] = open_store(parse_location(url))
        return self._opened[url]

    def open_reader(self, artifact_id: str) -> Any:
        return self._store_of(artifact_id).open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.default.write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store_of(artifact_id).remove(artifact_id)


def dashboard_artifacts(storage: Any, explicit: str | None, storage_url: str | None) -> Any:
    """The trials' files: ``--artifacts`` (or $STRATEGY_SEARCH_ARTIFACTS) when given, else each
    trial's own store (:class:`TrialStores`, with ``artifacts/`` beside a SQLite file as the default).

    Without ``--artifacts``, a store a study's space names that cannot be opened is a warning, not
    an error: the dashboard still serves every other study (that study's pages show no files).
    """
    from search.core.errors import UserError
    from search.study.artifact_store import open_artifacts

    store = open_artifacts(explicit, None, storage_url)
    if explicit:
        return store
    routed = TrialStores(storage, store)
    named = {doc.get("artifacts") for doc in (records.stored_space(s) for s in storage.get_all_studies())
             if isinstance(doc, dict)}
    for url in sorted(u for u in named if isinstance(u, str)):
        try:
            routed.open(url)
        except UserError as exc:
            log.warning("%s; its trials' files are not shown", exc)
    return routed


def make_server(storage: str | None, host: str, port: int, *, allow_writes: bool = False,
                artifacts: str | None = None) -> Any:
    """A bound (not yet serving) dashboard server; errors are one-line :class:`UserError`.

    ``artifacts``: the artifact store URL (see :func:`dashboard_artifacts`); ``server.artifacts``
    is the store it serves the trials' files from.
    """
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port (use 1-65535)")
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server as wsgi_server

    from optuna_dashboard import wsgi

    from search.tools.dashboard_curves import with_objective_curves

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    store = open_storage(storage, heartbeat=False, rdb_class=KeptFilesStorage)
    files = dashboard_artifacts(store, artifacts, storage)
    app = with_objective_curves(wsgi(store, artifact_store=files), store)  # per-objective curves (several objectives)
    if not allow_writes:
        app = read_only(app)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's signature
            log.debug("dashboard: " + format, *args)

    try:
        server = wsgi_server(host, port, app, server_class=ThreadedWSGIServer, handler_class=QuietHandler)
    except OSError as exc:
        raise UserError(f"dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.artifacts = files
    log.debug("optuna-dashboard (%s) for %s on http://%s:%d", "read-write" if allow_writes else "read-only",
             storage_label(storage), host, server.server_port)
    return server


def serve(storage: str | None, host: str = "127.0.0.1", port: int = 8080, *, allow_writes: bool = False,
          artifacts: str | None = None, on_ready: Callable[[str, str], None] | None = None) -> None:
    """Serve the dashboard until Ctrl-C; ``on_ready`` gets the masked storage label and the artifact
    store's URL once it listens."""
    from search.artifacts.store import label

    server = make_server(storage, host, port, allow_writes=allow_writes, artifacts=artifacts)
    try:  # Ctrl-C is how a dashboard is stopped, from the moment it is announced
        if on_ready is not None:
            files = getattr(server.artifacts, "description", None) or label(server.artifacts)
            on_ready(storage_label(storage), files)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
