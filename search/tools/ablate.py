"""Which remedies mattered: switch each strategy of the best config off, one at a time.

:func:`ablate` retrains the best trial's config and one variant per strategy (augmentation ->
none, color -> gray or rgb, dropout -> 0, ...) over the same fresh seeds, and gives each
strategy's effect on the objective as a difference of means with a 95% Welch interval. A
strategy "mattered" when the interval excludes 0. The record is stored with the study
(:func:`search.records.record_ablation`) so reports can chart it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial

from search.core.config import TrialConfig
from search.core.numbers import readable
from search import records
from search.core.errors import UserError
from search.strategies import NO_OFF, STRATEGIES
from search.core.spec import SearchSpace, choice_label
from search.tools.stats import CONFIDENCE, mean_std, welch_interval
from search.tools.summary import chosen_config
from search.tools.reruns import Job, Reruns, fresh_seeds
from search.train.loop import resolve_device

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- switching strategies off


def variants(config: TrialConfig, space: SearchSpace, only: Sequence[str] | None = None
             ) -> list[tuple[str, Any, TrialConfig]]:
    """(param, reference value, config) for every strategy of ``config`` that is switched on.

    Only params the space names are considered (the strategies the search was about), or
    exactly ``only`` when given.
    """
    switchable = [name for name in STRATEGIES if STRATEGIES.get(name).off is not NO_OFF]
    names = list(only) if only else [p.name for p in space.params]
    unknown = [n for n in names if n not in switchable]
    if only and unknown:
        raise UserError(f"cannot ablate {', '.join(unknown)}; strategies: {', '.join(switchable)}")
    out = []
    for name in names:
        if name not in switchable:
            continue
        strategy = STRATEGIES.get(name)
        if strategy.requires is not None and not strategy.requires(config):
            continue  # e.g. pretrained without a backbone: nothing to switch off
        current = getattr(config, name)
        off = strategy.off_value(current, space)
        if off is NO_OFF or choice_label(off) == choice_label(current):
            continue
        out.append((name, off, config.replace(**{name: off, **strategy.off_also})))
    return out


# ----------------------------------------------------------------------------- ablation


def _row(param: str, best: Any, off: Any, values: list[float | None], reference: list[float | None],
         sign: int) -> records.AblationRow:
    """Statistics of one config's values against the best config's (same seeds)."""
    ok = [v for v in values if v is not None]
    ref = [v for v in reference if v is not None]
    diverged = len(values) - len(ok)
    mean, std = mean_std(ok) if ok else (None, None)
    delta, ci95 = None, None
    if len(ok) >= 2 and len(ref) >= 2:
        delta, lo, hi = welch_interval(ok, ref)
        ci95 = (lo, hi)
        if lo > 0 or hi < 0:
            verdict = "mattered" if sign * delta < 0 else "hurt"
        else:
            verdict = "noise"
    elif diverged * 2 >= len(values):
        verdict = "mattered"  # without it training diverges
    else:
        verdict = "unknown"
    return records.AblationRow(param=param, best=best, switched_to=off, values=tuple(values), diverged=diverged,
                               verdict=verdict, mean=mean, std=std, delta=delta, ci95=ci95)


def ablate(study: optuna.Study, space: SearchSpace, *, seeds: int = 3, budget_epochs: int | None = None,
           trial: FrozenTrial | None = None, only: Sequence[str] | None = None,
           device: str | torch.device | None = None, weights_dir: str | Path | None = None) -> records.AblationRecord:
    """Ablate the best trial's strategies; returns (and stores in the study) the record.

    Every finished run is stored with the study as it ends (:mod:`search.tools.reruns`): after an
    interrupt the same call trains only the runs still missing.
    """
    if seeds < 2:
        raise UserError("ablation needs at least 2 seeds for a confidence interval")
    trial, config = chosen_config(study, trial, "ablate")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    trial_epochs = int(config.epochs or 1)
    if budget_epochs is not None:
        config.epochs = budget_epochs
    todo = variants(config, space, only)
    if not todo:
        raise UserError(f"trial {trial.number} switches on no strategy to ablate "
                        f"(every param the space names is already at its reference value)")
    seed_list = fresh_seeds(seeds)
    sign = 1 if space.objectives[0].direction == "maximize" else -1
    start = time.perf_counter()
    reference_job = Job.of_trial("best config", config, trial)
    jobs = [reference_job] + [Job(f"{name}={value_label(off)}", variant, reference_job.epoch_seconds,
                                  reference_job.overhead) for name, off, variant in todo]
    runs = Reruns(study, space, seed_list, device=device, weights_dir=weights_dir, what=f"ablation of trial {trial.number}")
    plan = runs.start(jobs)
    try:
        reference = runs.values(reference_job)
        rows = []
        for (name, off, _), job in zip(todo, jobs[1:]):
            row = _row(name, getattr(config, name), off, runs.values(job), reference, sign)
            rows.append(row)
            log.info("%s %s -> %s: %s", name, value_label(row.best), value_label(off), row.verdict)
    finally:
        runs.close()
    ref_ok = [v for v in reference if v is not None]
    ref_mean, ref_std = mean_std(ref_ok) if ref_ok else (None, None)
    record = records.AblationRecord(
        trial=trial.number,
        objective=space.objectives[0].name,
        direction=space.objectives[0].direction,
        split="validation",
        seeds=tuple(seed_list),
        epochs=int(config.epochs or 1),
        trial_epochs=trial_epochs,
        confidence=CONFIDENCE,
        reference=records.AblationReference(values=tuple(reference), diverged=len(reference) - len(ref_ok),
                                            mean=ref_mean, std=ref_std),
        rows=tuple(rows),
        resumed_runs=plan["done"],
        seconds=round(time.perf_counter() - start, 1),
    )
    record = replace(record, advice=seed_advice(record))
    records.record_ablation(study, record)
    return record


POWER_Z = 1.959964 + 0.841621  # two-sided 5% test with 80% power (normal approximation)
MAX_SUGGESTED_SEEDS = 30


def seeds_needed(values: Sequence[float | None], reference: Sequence[float | None], delta: float) -> int | None:
    """Seeds per config that would make a difference of ``delta`` significant 4 times out of 5 (80% power,
    two-sample normal approximation with the pooled seed-to-seed spread); None when nothing varies."""
    a = [v for v in values if v is not None]
    b = [v for v in reference if v is not None]
    if len(a) < 2 or len(b) < 2 or delta == 0:
        return None
    sd = math.sqrt((mean_std(a)[1] ** 2 + mean_std(b)[1] ** 2) / 2)
    if sd == 0:
        return None
    return max(2, math.ceil(2 * (POWER_Z * sd / abs(delta)) ** 2))


def seed_advice(record: records.AblationRecord) -> records.AblationAdvice | None:
    """When intervals are too wide to decide: which rows, and the seed count that would decide them.

    A row is undecided when its interval includes 0 but its observed change would be significant
    with more seeds: :func:`seeds_needed` at that change (80% power) is above the seeds used and at
    most MAX_SUGGESTED_SEEDS. The suggestion is the largest such count; rows that would need more are
    called tiny (their change is small against the seed-to-seed spread: noise for practical purposes).
    """
    seeds = len(record.seeds)
    wide, tiny, widths = [], [], []
    for r in record.rows:
        ci = r.ci95
        if not ci or r.verdict != "noise" or r.delta is None:
            continue
        half = (ci[1] - ci[0]) / 2
        widths.append(half)
        need = seeds_needed(r.values, record.reference.values, r.delta)
        if need is None or need > MAX_SUGGESTED_SEEDS:
            tiny.append(r.param)
        elif need > seeds:
            wide.append((r.param, need))
    if not wide:
        return None
    suggested = max(n for _, n in wide)
    return records.AblationAdvice(
        undecided=tuple(p for p, _ in wide), suggested_seeds=suggested, tiny=tuple(tiny),
        median_half_width=sorted(widths)[len(widths) // 2],
        message=(f"{len(wide)} verdict(s) undecided with {seeds} seeds: "
                 f"{', '.join(p for p, _ in wide)} moved the objective, but the 95% intervals "
                 f"(about +-{sorted(widths)[len(widths) // 2]:.3g}) are too wide to tell it from noise; "
                 f"about {suggested} seeds would decide them (80% power): --seeds {suggested}"))


def value_label(v: Any) -> str:
    """A param value as a person reads it: 3 significant digits, an op list as ``a+b``."""
    return readable(choice_label(v))


def epochs_note(record: records.AblationRecord) -> str:
    """``4 epochs per run (trial 7 trained 23: --budget-epochs)`` or ``23 epochs per run, as trial 7``."""
    epochs, original = record.epochs, record.trial_epochs
    if original is None or original == epochs:
        return f"{epochs} epochs per run, as trial {record.trial} trained"
    return f"{epochs} epochs per run (trial {record.trial} trained {original}: --budget-epochs)"


def row_label(row: records.AblationRow) -> str:
    """``color: rgb -> gray``: the strategy, its value in the best config and what it was switched to."""
    return f"{row.param}: {value_label(row.best)} -> {value_label(row.switched_to)}"


def format_ablation(record: records.AblationRecord, width: int = 24) -> str:
    """A table with a bar per strategy: how much the objective moves when it is switched off."""
    ref = record.reference
    seeds = record.seeds
    rows = [(row_label(r), r) for r in record.rows]
    w = max([len("strategy switched off")] + [len(what) for what, _ in rows])
    lines = [
        f"ablation of trial {record.trial}: {record.objective} on the validation split, "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}, the same for every row), {epochs_note(record)}",
        f"best config re-trained: mean {_num(ref.mean)}, sd {_num(ref.std)} over the seeds"
        + (f"  ({ref.diverged} diverged)" if ref.diverged else ""),
        "",
        f"  {'strategy switched off':<{w}} {'mean':>6} {'delta':>7}  {'95% CI':<17} verdict",
    ]
    deltas = [abs(r.delta) for r in record.rows if r.delta is not None]
    scale = max(deltas) if deltas and max(deltas) > 0 else 1.0
    for what, r in rows:
        ci = r.ci95
        ci_text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
        delta = r.delta
        bar = ""
        if delta is not None:
            bar = ("-" if delta < 0 else "+") * max(1, round(width * abs(delta) / scale)) if delta else ""
        note = f" ({r.diverged} diverged)" if r.diverged else ""
        lines.append(f"  {what:<{w}} {_num(r.mean):>6} {_signed(delta):>7}  {ci_text:<17} "
                     f"{r.verdict:<8} {bar}{note}")
    lines += ["", "delta: variant minus best config. mattered: switching it off makes the objective worse and the "
              "95% interval excludes 0; hurt: switching it off helps; noise: the interval includes 0."]
    if record.advice is not None:
        lines += ["", f"warning: {record.advice.message}"]
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"
