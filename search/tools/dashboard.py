"""optuna-dashboard on a study storage, read-only unless asked otherwise.

optuna-dashboard 0.21 has no read-only mode and no authentication: anyone who reaches its port
can call its write API (``DELETE /api/studies/N`` deletes a study, notes and trial states can be
changed). :func:`serve` therefore answers only GET/HEAD requests unless ``allow_writes``, and says
so on every page and atop each study's note (the buttons stay: they are optuna-dashboard's).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Iterable

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


def make_server(storage: str | None, host: str, port: int, *, allow_writes: bool = False) -> Any:
    """A bound (not yet serving) dashboard server; errors are one-line :class:`UserError`."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port (use 1-65535)")
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server as wsgi_server

    from optuna_dashboard import wsgi

    class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    store = open_storage(storage, heartbeat=False)
    app = wsgi(store)
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
