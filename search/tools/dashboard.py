"""optuna-dashboard on a study storage, read-only unless asked otherwise.

optuna-dashboard 0.21 has no read-only mode and no authentication: anyone who reaches its port
can call its write API (``DELETE /api/studies/N`` deletes a study, notes and trial states can be
changed). :func:`serve` therefore answers only GET/HEAD requests unless ``allow_writes``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

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


def make_server(storage: str | None, host: str, port: int, *, allow_writes: bool = False) -> Any:
    """A bound (not yet serving) dashboard server; errors are one-line :class:`UserError`."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port (use 1-65535)")
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server as wsgi_server

    from optuna_dashboard import wsgi

    from search.tools.dashboard_curves import with_objective_curves

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    store = open_storage(storage, heartbeat=False)
    app = with_objective_curves(wsgi(store), store)  # per-objective curves (several objectives)
    if not allow_writes:
        app = read_only(app)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - wsgiref's signature
            log.debug("dashboard: " + format, *args)

    try:
        server = wsgi_server(host, port, app, server_class=ThreadedWSGIServer, handler_class=QuietHandler)
    except OSError as exc:
        raise UserError(f"dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    log.debug("optuna-dashboard (%s) for %s on http://%s:%d", "read-write" if allow_writes else "read-only",
             storage_label(storage), host, server.server_port)
    return server


def serve(storage: str | None, host: str = "127.0.0.1", port: int = 8080, *, allow_writes: bool = False,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard until Ctrl-C; ``on_ready`` gets the masked storage label once it listens."""
    server = make_server(storage, host, port, allow_writes=allow_writes)
    try:  # Ctrl-C is how a dashboard is stopped, from the moment it is announced
        if on_ready is not None:
            on_ready(storage_label(storage))
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
