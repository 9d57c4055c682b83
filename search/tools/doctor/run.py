"""``strategy-search doctor`` as one library call: options in, the diagnosis, its text and the space file out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import time

from search.core.duration import parse_duration
from search.data.datasets import dataset_doc
from search.tools.doctor.diagnose import diagnose
from search.tools.doctor.findings import Diagnosis
from search.tools.doctor.recommend import recommend_space
from search.tools.doctor.report import format_report
from search.core.errors import UserError
from search.artifacts.bundle import check_file_output
from search.space.parse import check_study_name, parse_space, safe_study_name, safe_yaml


@dataclass
class DoctorRun:
    """What ``doctor`` found and wrote: ``record`` is its JSON output, ``text`` its terminal output."""

    diagnosis: Diagnosis
    record: dict[str, Any]
    text: str
    space: Path | None = None


def run_doctor(data: str, *, objective: str | None = None, epochs: int | None = None, limit: int | None = None,
               val_fraction: float | None = None, test_fraction: float | None = None,
               overrides: Sequence[str] = (), probe_color: bool = True, output: str | Path | None = None,
               study_name: str | None = None, n_trials: int = 30, force: bool = False,
               device: str | None = None, weights_dir: str | Path | None = None,
               budget: str | float | None = None) -> DoctorRun:
    """Diagnose DATA (a built-in name, image folder or CSV manifest) and, with ``output``, write the space.

    ``objective`` is YAML as in a space file (None: the default, accuracy); ``overrides`` are ``PARAM=VALUE`` strings changing the
    baseline. ``budget`` (seconds, or text like ``15m``) is the whole time for doctor and search: the
    space's trials, epochs and pruner are sized to what is left of it after the diagnosis. Every
    option is checked (and ``output`` may be written) before the baseline trains.
    """
    seconds = None
    if budget is not None:
        try:
            seconds = parse_duration(budget)
        except ValueError as exc:
            raise UserError(f"--budget: {exc}") from None
    if study_name is not None and check_study_name(study_name):
        raise UserError(f"--study: {check_study_name(study_name)}")
    if output:
        check_file_output(output, force)  # before the baseline trains, not after
    dataset = dataset_doc(data)
    for key, value in (("limit", limit), ("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None:
            dataset[key] = value
    wanted = safe_yaml(objective, "--objective") if objective is not None else "accuracy"
    changes = parse_overrides(overrides)
    if isinstance(wanted, list):
        raise UserError("--objective: doctor diagnoses one quality metric, not a list")
    spec = parse_space({"study": "doctor", "dataset": dataset, "objective": wanted},
                       source="doctor options", base_dir=Path.cwd())
    start = time.monotonic()
    diagnosis = diagnose(spec.dataset, spec.objectives[0], epochs=epochs, overrides=changes, device=device,
                         probe_color=probe_color, weights_dir=weights_dir)
    spent = time.monotonic() - start
    record = diagnosis.to_dict()
    space = None
    if output:
        name = study_name or safe_study_name(f"{Path(data).name}-doctor")
        space = Path(output)
        space.write_text(recommend_space(diagnosis, name, n_trials, budget=seconds, spent=spent,
                                                    objective_given=objective is not None), encoding="utf-8")
        record["space"] = output
        tail = f"recommended space written to {output}: strategy-search run {output}"
    else:
        tail = (f"write a space with these remedies: strategy-search doctor {data} -o space.yaml   "
                "(then: strategy-search run space.yaml)")
    return DoctorRun(diagnosis, record, f"{format_report(diagnosis)}\n\n{tail}", space)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``PARAM=VALUE`` strings as {param: YAML value} (checked against the params when the baseline is built)."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected PARAM=VALUE, e.g. --set width=32")
        changes[key.strip()] = safe_yaml(value, f"--set {key.strip()}")
    return changes
