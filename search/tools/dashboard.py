"""optuna-dashboard on a study storage, read-only unless asked otherwise, with the trials' files.

optuna-dashboard 0.21 has no read-only mode and no authentication: anyone who reaches its port
can call its write API (``DELETE /api/studies/N`` deletes a study, notes and trial states can be
changed). :func:`serve` therefore answers only GET/HEAD requests unless ``allow_writes``.

The artifact store goes to optuna-dashboard too, so a trial's page lists its kept files and
previews its pictures. Files the keep policy removed are hidden from the lists (on SQL storages):
their metas stay on the finished trials, which Optuna cannot change, and
:mod:`search.artifacts.trial_files` records the removals on the study.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any, Callable, Iterable

from optuna.storages import RDBStorage

from search import records
from search.core.errors import UserError
from search.storage.backend import open_storage, storage_label

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def read_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: 405 for every request that could change the storage."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": "this dashboard is read-only (strategy-search dashboard --allow-writes)"})
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"),
                                                  ("Allow", ", ".join(READ_METHODS))])
        return [body.encode()]

    return guarded


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


def dashboard_artifacts(storage: Any, explicit: str | None, storage_url: str | None) -> Any:
    """The store to show: ``--artifacts``, else the one the studies' spaces name (when they agree),
    else ``artifacts/`` beside a SQLite file."""
    from search.study.artifact_store import open_artifacts

    named: set[str] = set()
    if not explicit:
        for study in storage.get_all_studies():
            doc = records.stored_space(study)
            if isinstance(doc, dict) and isinstance(doc.get("artifacts"), str):
                named.add(doc["artifacts"])
    if len(named) > 1:
        log.warning("the studies name %d artifact stores (%s); showing the default one: choose with --artifacts",
                    len(named), ", ".join(sorted(named)))
    return open_artifacts(explicit, named.pop() if len(named) == 1 else None, storage_url)


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

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    store = open_storage(storage, heartbeat=False, rdb_class=KeptFilesStorage)
    files = dashboard_artifacts(store, artifacts, storage)
    app = wsgi(store, artifact_store=files)
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
            on_ready(storage_label(storage), label(server.artifacts))
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
