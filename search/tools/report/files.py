"""The report's "kept trials" section: what the kept trials uploaded to the artifact store, read back.

For each trial that keeps files (best first, at most :data:`KEPT_SHOWN`): its files with their
artifact ids, its learning-curve and confusion-matrix pictures as its worker drew them, and the
per-class validation metrics from its ``metrics.json``. Read from the store the command was given
(any machine can write the report: nothing comes from the workers' disks).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from search.artifacts.store import ArtifactStoreError
from search.artifacts.trial_files import METRICS_FILE, PICTURES
from search.tools.report.data import Image, SectionData, StudyView, Table, Text

log = logging.getLogger(__name__)

KEPT_SHOWN = 5


def kept_files(s: StudyView, sid: str, title: str) -> SectionData:
    data = SectionData(sid, title)
    if s.space.keep == "none":
        data.blocks.append(Text("the space keeps no trial's files (keep: none)"))
        return data
    if s.files is None:
        data.blocks.append(Text("no artifact store was given"))
        return data
    kept = [t for t in s.ranked() if s.files.files(t)][:KEPT_SHOWN]
    if not kept:
        data.blocks.append(Text(f"no completed trial keeps files in {s.files.label}"))
        return data
    where = ", ".join(sorted({s.files.where(t) for t in kept}))
    data.blocks.append(Text(f"read from {where}: what keep: {s.space.keep} keeps (best first); optuna-dashboard "
                            "shows the same files on each trial's page, and strategy-search export turns the model "
                            "into a bundle without re-training."))
    for t in kept:
        files = s.files.files(t)
        data.blocks.append(Text(f"trial {t.number}: {s.objective} {t.values[0]:.4f}", note=False))
        data.blocks.append(Table(["file", "artifact id"], sorted(files.items()), table_id=f"kept-files-{t.number}"))
        for name in PICTURES:
            if name in files:
                png = _read(s, t, name, data)
                if png is not None:
                    data.blocks.append(Image(png, f"trial {t.number}: {name}", f"{sid}-trial{t.number}-{name}"))
        if METRICS_FILE in files:
            raw = _read(s, t, METRICS_FILE, data)
            if raw is not None:
                data.blocks.append(_per_class(t.number, raw))
    return data


def _read(s: StudyView, trial: Any, name: str, data: SectionData) -> bytes | None:
    try:
        return s.files.read(trial, name)
    except ArtifactStoreError as exc:  # one missing file is a note, not a lost report
        data.blocks.append(Text(str(exc)))
        return None


def _per_class(number: int, raw: bytes) -> Table | Text:
    try:
        doc = json.loads(raw)
        per_class = doc["validation"]["per_class"]
        rows = [(c, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}") for c, m in per_class.items()]
    except (ValueError, KeyError, TypeError) as exc:
        return Text(f"trial {number}'s {METRICS_FILE} is not readable ({type(exc).__name__})")
    return Table(["class (validation)", "precision", "recall", "F1"], rows, table_id=f"per-class-{number}")
