"""Warm starts: seed a study with what is known before sampling.

* ``enqueue:`` in the space (the doctor writes its baseline there): enqueued once, when the
  study is created, so they run first (and count as trials of the study).
* ``run SPACE --warm-start OTHER`` copies OTHER's finished trials whose complete config fits the
  new space (searched params inside the new ranges/choices, every other param equal to what the
  new space would use) into the new study, once. Copies carry the user attr ``warm_start``
  (source study and trial), do not count against ``n_trials`` and are not judged by stop rules.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search.core.config import TrialConfig
from search.space.constraints import violations
from search.space.enqueue import enqueue_params, optuna_value, param_fits
from search.core.errors import UserError
from search import records
from search.core.spec import SearchSpace, choice_label
from search.study.load import load_study

log = logging.getLogger(__name__)

def enqueue_from_space(study: optuna.Study, space: SearchSpace) -> int:
    """Enqueue the space's ``enqueue:`` entries (call once, when the study is created)."""
    for i, entry in enumerate(space.enqueue):
        study.enqueue_trial(enqueue_params(space, entry), user_attrs=records.enqueued_attrs(i), skip_if_exists=True)
    if space.enqueue:
        log.info("enqueued %d configuration(s) from the space's enqueue: list", len(space.enqueue))
    return len(space.enqueue)


@dataclass
class WarmStart:
    """What a warm start copied and skipped (and why)."""

    source: str
    copied: int = 0
    skipped: Counter = field(default_factory=Counter)
    already: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "copied": self.copied, "skipped": sum(self.skipped.values()),
                "skipped_reasons": dict(self.skipped)}

    def format(self) -> str:
        if self.already:
            return f"warm start from {self.source!r} was done when the study began; not copied again"
        text = f"warm start: copied {self.copied} finished trial(s) of study {self.source!r}"
        if self.skipped:
            text += f"; skipped {sum(self.skipped.values())} that do not fit this space (" + "; ".join(
                f"{n}x {why}" for why, n in self.skipped.most_common()) + ")"
        return text


def distribution(spec: Any) -> BaseDistribution:
    """The Optuna distribution ``spec.suggest`` samples from (so copied trials share TPE's model)."""
    if spec.kind == "choices":
        return CategoricalDistribution([choice_label(c) for c in spec.choices])
    if spec.kind == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
    return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)


def fit_trial(space: SearchSpace, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, BaseDistribution]] | str:
    """(params, distributions) of ``config`` in ``space``, or why it does not fit."""
    defaults = TrialConfig().to_dict()
    defaults["epochs"] = space.budget.max_epochs
    listed = {p.name for p in space.params}
    for name, default in defaults.items():
        if name != "seed" and name not in listed and choice_label(config.get(name, default)) != choice_label(default):
            return f"{name} was {choice_label(config.get(name))!r}, this space uses {choice_label(default)!r}"
    params: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    for spec in space.params:
        if not spec.active(config):
            continue
        problem = param_fits(spec, config.get(name := spec.name, defaults.get(spec.name)))
        if problem:
            return f"{name} {problem}"
        if spec.kind != "fixed":
            params[name] = optuna_value(spec, config[name])
            dists[name] = distribution(spec)
    return params, dists


def check_warm_source(space: SearchSpace, source: str, storage: Any = None) -> tuple[optuna.Study, SearchSpace]:
    """The study ``source`` and its space, when its trials can warm-start ``space`` (same objectives and
    dataset); a :class:`UserError` otherwise. Called before the new study is created, so a refused warm
    start leaves nothing behind."""
    other, other_space = load_study(source, storage)
    names = [o.name for o in space.objectives]
    if [o.name for o in other_space.objectives] != names:
        raise UserError(f"--warm-start {source!r}: its objectives ({', '.join(o.name for o in other_space.objectives)})"
                        f" differ from this space's ({', '.join(names)})")
    if other_space.dataset != space.dataset:
        raise UserError(f"--warm-start {source!r}: it searched dataset {other_space.dataset.label} with other "
                        "settings; its scores do not carry over")
    return other, other_space


def warm_start(study: optuna.Study, space: SearchSpace, source: str, storage: Any = None,
               checked: tuple[optuna.Study, SearchSpace] | None = None) -> WarmStart:
    """Copy ``source``'s finished trials that fit ``space`` into ``study`` (once per study); ``checked``:
    what :func:`check_warm_source` returned."""
    report = WarmStart(source)
    if records.warm_started_from(study):
        report.already = True
        return report
    other, _ = checked or check_warm_source(space, source, storage)
    for t in other.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        config = records.config_dict(t)
        fitted = fit_trial(space, config) if config else "no stored config"
        if isinstance(fitted, str):
            report.skipped[fitted] += 1
            continue
        params, dists = fitted
        attrs = records.warm_start_attrs(t, source)
        found = violations(space.constraints, attrs) if t.state == TrialState.COMPLETE else {}
        attrs.update(records.violation_attrs(found))
        study.add_trial(optuna.trial.create_trial(
            state=t.state, values=t.values if t.state == TrialState.COMPLETE else None, params=params,
            distributions=dists, user_attrs=attrs, intermediate_values=dict(t.intermediate_values),
            constraints={k: v["violation"] for k, v in found.items()} or None,
        ))
        report.copied += 1
    records.record_warm_started_from(study, report.to_dict())
    log.info(report.format())
    return report
