"""``doctor:`` in a space file: what ``strategy-search doctor`` measured before it wrote the space.

The doctor writes its baseline (the objective it was judged by, its validation value and
confusion matrix, epochs, seconds), its findings and why each param is in the space, so the
study carries them and the report can show the gain over the baseline and why the space looks
as it does. The record is information only: no trial reads it, and ``export`` leaves it out.

Checked here for shape (types and sizes), so a hand-edited record is one error naming the key,
never a crash in the report.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

DOCTOR_KEYS = ("objective", "dataset", "baseline", "findings", "why")
BASELINE_KEYS = ("value", "train_value", "epochs", "seconds", "n_params", "input_size", "classes", "val_confusion")
MAX_CLASSES = 1000  # a confusion matrix bigger than this is not stored (the doctor writes none then)
MAX_ITEMS = 200  # findings, params with a reason


def check_doctor(c: Any, raw: Any) -> None:
    """Validate ``doctor:`` with the space parser's checker ``c`` (``mapping``, ``number``, ``fail``)."""
    if raw is None:
        return
    raw = c.mapping(raw, "doctor", DOCTOR_KEYS)
    for key in ("objective", "dataset"):
        if key in raw and not isinstance(raw[key], str):
            raise c.fail(f"doctor.{key}", f"expected a string, got {raw[key]!r}")
    baseline = c.mapping(raw.get("baseline", {}), "doctor.baseline", BASELINE_KEYS)
    for key in ("value", "train_value", "seconds"):
        if key in baseline:
            c.number(baseline[key], f"doctor.baseline.{key}")
    for key in ("epochs", "n_params", "input_size"):
        if key in baseline:
            c.number(baseline[key], f"doctor.baseline.{key}", integer=True, low=0)
    classes = baseline.get("classes", [])
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES or not all(isinstance(x, str) for x in classes):
        raise c.fail("doctor.baseline.classes", f"expected a list of at most {MAX_CLASSES} class names")
    confusion = baseline.get("val_confusion")
    if confusion is not None:
        k = len(classes)
        ok = isinstance(confusion, list) and len(confusion) == k and all(
            isinstance(row, list) and len(row) == k and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in row) for row in confusion)
        if not ok:
            raise c.fail("doctor.baseline.val_confusion",
                         f"expected a {k} x {k} matrix of counts (rows: true class, columns: predicted)")
    findings = raw.get("findings", [])
    if not isinstance(findings, list) or len(findings) > MAX_ITEMS:
        raise c.fail("doctor.findings", f"expected a list of at most {MAX_ITEMS} findings")
    for i, f in enumerate(findings):
        f = c.mapping(f, f"doctor.findings[{i}]", ("kind", "summary"))
        if not all(isinstance(f.get(k), str) for k in ("kind", "summary")):
            raise c.fail(f"doctor.findings[{i}]", "expected {kind: str, summary: str}")
    why = raw.get("why", {})
    if not isinstance(why, Mapping) or len(why) > MAX_ITEMS or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in why.items()):
        raise c.fail("doctor.why", "expected a mapping of param -> reason (strings)")


def doctor_record(space_raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``doctor:`` record of a space document, or None (not written by the doctor)."""
    record = space_raw.get("doctor")
    return dict(record) if isinstance(record, Mapping) else None


def baseline_value(record: Mapping[str, Any]) -> float | None:
    """The baseline's recorded validation value (None when it did not train)."""
    value = (record.get("baseline") or {}).get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
