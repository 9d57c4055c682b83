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
from pathlib import Path
from typing import Any, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial

from search.core.config import TrialConfig
from search import records
from search.core.errors import UserError
from search.strategies import NO_OFF, STRATEGIES
from search.core.spec import SearchSpace, choice_label
from search.tools.stats import CONFIDENCE, mean_std, welch_interval
from search.tools.summary import chosen_config
from search.train.loop import NonFiniteLoss, resolve_device, train_space

log = logging.getLogger(__name__)

SEED_BASE = 10_000  # fresh seeds: search trials use "space seed + trial number"


def fresh_seeds(n: int) -> list[int]:
    """The same ``n`` seeds for every retrained config, so comparisons are paired."""
    return [SEED_BASE + i for i in range(n)]


def values_over_seeds(config: TrialConfig, space: SearchSpace, seeds: Sequence[int], *, device: torch.device,
            weights_dir: str | Path | None, label: str) -> list[float | None]:
    """The first objective on the validation split, once per seed; None where training diverged."""
    values: list[float | None] = []
    for seed in seeds:
        try:
            result = train_space(config.replace(seed=seed), space, device=device,
                                 weights_dir=weights_dir, evaluate_test=False, label=f"{label} seed {seed}")
            value = result.values[0]
            values.append(value if math.isfinite(value) else None)
        except NonFiniteLoss as exc:
            log.info("%s seed %d diverged: %s", label, seed, exc)
            values.append(None)
    return values


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


def _row(values: list[float | None], reference: list[float | None], sign: int) -> dict[str, Any]:
    """Statistics of one config's values against the best config's (same seeds)."""
    ok = [v for v in values if v is not None]
    ref = [v for v in reference if v is not None]
    row: dict[str, Any] = {"values": values, "diverged": len(values) - len(ok)}
    if ok:
        row["mean"], row["std"] = mean_std(ok)
    if len(ok) >= 2 and len(ref) >= 2:
        delta, lo, hi = welch_interval(ok, ref)
        row.update(delta=delta, ci95=[lo, hi])
        if lo > 0 or hi < 0:
            row["verdict"] = "mattered" if sign * delta < 0 else "hurt"
        else:
            row["verdict"] = "noise"
    elif row["diverged"] * 2 >= len(values):
        row["verdict"] = "mattered"  # without it training diverges
    else:
        row["verdict"] = "unknown"
    return row


def ablate(study: optuna.Study, space: SearchSpace, *, seeds: int = 3, budget_epochs: int | None = None,
           trial: FrozenTrial | None = None, only: Sequence[str] | None = None,
           device: str | torch.device | None = None, weights_dir: str | Path | None = None) -> dict[str, Any]:
    """Ablate the best trial's strategies; returns (and stores in the study) the record."""
    if seeds < 2:
        raise UserError("ablation needs at least 2 seeds for a confidence interval")
    trial, config = chosen_config(study, trial, "ablate")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if budget_epochs is not None:
        config.epochs = budget_epochs
    todo = variants(config, space, only)
    if not todo:
        raise UserError(f"trial {trial.number} switches on no strategy to ablate "
                        f"(every param the space names is already at its reference value)")
    seed_list = fresh_seeds(seeds)
    sign = 1 if space.objectives[0].direction == "maximize" else -1
    start = time.perf_counter()
    log.info("ablation of trial %d: best config + %d variant(s) x %d seeds", trial.number, len(todo), seeds)
    reference = values_over_seeds(config, space, seed_list, device=device, weights_dir=weights_dir, label="best config")
    rows = []
    for name, off, variant in todo:
        values = values_over_seeds(variant, space, seed_list, device=device, weights_dir=weights_dir, label=f"{name}={off}")
        row = {"param": name, "best": getattr(config, name), "switched_to": off, **_row(values, reference, sign)}
        rows.append(row)
        log.info("%s %s -> %s: %s", name, choice_label(row["best"]), choice_label(off), row["verdict"])
    ref_ok = [v for v in reference if v is not None]
    record = {
        "trial": trial.number,
        "objective": space.objectives[0].name,
        "direction": space.objectives[0].direction,
        "split": "validation",
        "seeds": seed_list,
        "epochs": config.epochs,
        "confidence": CONFIDENCE,
        "interval": "Welch t-interval of the difference of means (variant - best config)",
        "reference": {"values": reference, "diverged": len(reference) - len(ref_ok),
                      **dict(zip(("mean", "std"), mean_std(ref_ok) if ref_ok else (None, None)))},
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    records.record_ablation(study, record)
    return record


def format_ablation(record: dict[str, Any], width: int = 24) -> str:
    """A table with a bar per strategy: how much the objective moves when it is switched off."""
    ref = record["reference"]
    seeds = record["seeds"]
    lines = [
        f"ablation of trial {record['trial']}: {record['objective']} on the validation split, "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}, the same for every row), {record['epochs']} epochs",
        f"best config re-trained: mean {_num(ref.get('mean'))}, sd {_num(ref.get('std'))} over the seeds"
        + (f"  ({ref['diverged']} diverged)" if ref["diverged"] else ""),
        "",
        f"  {'strategy switched off':<34} {'mean':>7} {'delta':>8}  {'95% CI':<18} verdict",
    ]
    deltas = [abs(r["delta"]) for r in record["rows"] if r.get("delta") is not None]
    scale = max(deltas) if deltas and max(deltas) > 0 else 1.0
    for r in record["rows"]:
        what = f"{r['param']}: {choice_label(r['best'])} -> {choice_label(r['switched_to'])}"
        ci = r.get("ci95")
        ci_text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
        delta = r.get("delta")
        bar = ""
        if delta is not None:
            bar = ("-" if delta < 0 else "+") * max(1, round(width * abs(delta) / scale)) if delta else ""
        note = f" ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(f"  {what:<34} {_num(r.get('mean')):>7} {_signed(delta):>8}  {ci_text:<18} "
                     f"{r['verdict']:<8} {bar}{note}")
    lines += ["", "delta: variant minus best config. mattered: switching it off makes the objective worse and the "
              "95% interval excludes 0; hurt: switching it off helps; noise: the interval includes 0."]
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.4f}"
