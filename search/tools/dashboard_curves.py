"""Per-objective learning curves on optuna-dashboard's study page.

optuna-dashboard (0.21) draws intermediate values only for studies with one objective, and Optuna
cannot store them for several (``trial.report`` refuses). Our trials record their values per
objective and epoch (``records.INTERMEDIATE``); this WSGI layer adds them to a study's page as one
of optuna-dashboard's custom plotly figures ("plotly graph objects"), drawn by the report's own
renderer from the same data (:func:`search.tools.report.pareto.curve_data`). It is computed when
the page asks for the study (cached a few seconds, as the dashboard caches trials) and nothing is
written to the storage, so a read-only dashboard stays read-only.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable

from optuna.storages import BaseStorage

from search.core.errors import UserError
from search.study.load import load_study
from search.tools.report import render_html
from search.tools.report.data import StudyView
from search.tools.report.pareto import curve_data

log = logging.getLogger(__name__)

GRAPH_ID = "objective-curves"
TITLE = "Per-objective learning curves (strategy-search)"
CACHE_SECONDS = 5.0
_STUDY_PATH = re.compile(r"^/api/studies/(\d+)$")


def curves_json(storage: BaseStorage, study_id: int) -> str | None:
    """The curves figure of study ``study_id`` as plotly JSON (None: not a study of ours, or no curves)."""
    try:
        study, space = load_study(storage.get_study_name_from_id(study_id), storage)
    except (KeyError, UserError):
        return None
    data = curve_data(StudyView(study, space))
    if data is None or not data.metrics:
        return None
    figure = render_html.objective_curves(data)
    figure.update_layout(title={"text": TITLE})
    return figure.to_json()


def with_objective_curves(app: Callable[..., Iterable[bytes]], storage: BaseStorage) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: a study's JSON (``GET /api/studies/<id>``) gets the curves figure among its
    ``plotly_graph_objects``; every other request passes through untouched."""
    cache: dict[int, tuple[float, str | None]] = {}
    lock = threading.Lock()

    def figure(study_id: int) -> str | None:
        now = time.monotonic()
        with lock:
            hit = cache.get(study_id)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            drawn = curves_json(storage, study_id)
        except Exception as exc:  # noqa: BLE001 - the dashboard's own page must not fail for an extra figure
            log.warning("dashboard: no per-objective curves for study %d (%s: %s)", study_id, type(exc).__name__, exc)
            drawn = None
        with lock:
            cache[study_id] = (now, drawn)
        return drawn

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _STUDY_PATH.match(environ.get("PATH_INFO", "").rstrip("/"))
        if match is None or environ.get("REQUEST_METHOD", "GET").upper() != "GET":
            return app(environ, start_response)
        chunks: list[bytes] = []
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return chunks.append

        result = app(environ, capture)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        body = b"".join(chunks)
        status, headers = captured["status"], list(captured["headers"])
        encoded = any(k.lower() == "content-encoding" for k, _ in headers)
        if status.startswith("200") and not encoded:
            drawn = figure(int(match.group(1)))
            if drawn is not None:
                doc = json.loads(body)
                doc.setdefault("plotly_graph_objects", []).append({"id": GRAPH_ID, "graph_object": drawn})
                body = json.dumps(doc).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    return wrapped
