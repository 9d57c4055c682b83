"""Stop rules for the whole study: ``budget: {target: 0.95}`` and ``budget: {patience: 25, min_delta: 0.002}``.

The rule is judged on the study's trials in the storage, so every worker on every machine sees
the same answer. The first worker that finds it met records the study's user attr
``stop_reason`` (once); every worker checks it before asking for a new trial, so each stops
after its running trial. Both rules look at the first objective of feasible COMPLETE trials
that ran in this study (trials copied by a warm start do not count).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space.constraints import is_feasible
from search import records
from search.records import is_copied
from search.core.spec import SearchSpace

log = logging.getLogger(__name__)

def stop_reason(study: optuna.Study) -> dict[str, Any] | None:
    """The study's recorded stop reason, read fresh from the storage (None: not stopped)."""
    return records.stop_reason(study)


def _finished_at(t: FrozenTrial) -> tuple[datetime.datetime, int]:
    return (t.datetime_complete or datetime.datetime.max, t.number)


def evaluate(space: SearchSpace, trials: Sequence[FrozenTrial], maximize: bool) -> dict[str, Any] | None:
    """The stop reason the space's rules give for ``trials`` (None: go on)."""
    budget = space.budget
    if not budget.has_stop_rules:
        return None
    name = space.objectives[0].name
    sign = 1.0 if maximize else -1.0
    finished = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                       and not is_copied(t)), key=_finished_at)
    scored = [t for t in finished if t.state == TrialState.COMPLETE and t.values and is_feasible(t)]
    if budget.target is not None:
        hit = next((t for t in scored if sign * t.values[0] >= sign * budget.target), None)
        if hit is not None:
            return {"rule": "target", "trial": hit.number, "value": hit.values[0], "finished_trials": len(finished),
                    "message": f"trial {hit.number} reached the target {name} "
                               f"{'>=' if maximize else '<='} {budget.target:g} ({hit.values[0]:.4f})"}
    if budget.patience is not None:
        best: float | None = None
        best_trial: FrozenTrial | None = None
        since = 0
        for t in finished:
            value = t.values[0] if t.state == TrialState.COMPLETE and t.values and is_feasible(t) else None
            if value is not None and (best is None or sign * (value - best) > budget.min_delta):
                best, best_trial, since = value, t, 0
            else:
                since += 1
        if since >= budget.patience:
            where = (f"the best, trial {best_trial.number} ({name} {best:.4f})" if best_trial is not None
                     else "no feasible completed trial")
            return {"rule": "patience", "trial": best_trial.number if best_trial else None, "value": best,
                    "finished_trials": len(finished),
                    "message": f"{since} finished trials without improving on {where} by more than "
                               f"{budget.min_delta:g} (patience {budget.patience})"}
    return None


def check(study: optuna.Study, space: SearchSpace) -> dict[str, Any] | None:
    """The study's stop reason; judged now (and recorded, once) when none is recorded yet."""
    if not space.budget.has_stop_rules:
        # No rule: nothing to judge, and nothing recorded under these rules (a stop recorded under
        # other rules is reset when the space changes). Saves reading every trial per trial.
        return None
    recorded = stop_reason(study)
    if recorded is not None:
        return recorded
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    reason = evaluate(space, study.get_trials(deepcopy=False), maximize)
    if reason is None:
        return None
    reason["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if stop_reason(study) is None:  # another worker may have recorded it a moment ago: keep the first
        records.record_stop_reason(study, reason)
        log.info("study %r stopped: %s", study.study_name, reason["message"])
    return stop_reason(study) or reason


def reset(study: optuna.Study) -> None:
    """Forget a recorded stop (the space's stop rules changed, e.g. a higher target)."""
    if stop_reason(study) is not None:
        records.record_stop_reason(study, None)


def format_stop(reason: dict[str, Any] | None) -> str | None:
    if not reason:
        return None
    return f"stopped by budget.{reason['rule']}: {reason['message']}"
