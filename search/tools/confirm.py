"""Seed-robust winners: retrain the top trials over fresh seeds and rank them by their mean.

A search keeps the single best run, and the best of many noisy runs is partly luck.
:func:`confirm` retrains the top trials' configs over the same fresh seeds, ranks them by mean
(spread breaks ties) and stores the result with the study (``search.records.confirmed``);
:func:`search.tools.summary.best_trial` (and so ``best`` and ``export``) then prefer the winner.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from search.tools.ablate import fresh_seeds, values_over_seeds
from search.core.errors import UserError
from search.core.spec import SearchSpace
from search.tools.stats import CONFIDENCE, mean_std, t_interval
from search import records
from search.train.loop import resolve_device

log = logging.getLogger(__name__)


def confirm(study: optuna.Study, space: SearchSpace, *, top: int = 5, seeds: int = 3,
            budget_epochs: int | None = None, device: str | torch.device | None = None,
            weights_dir: str | Path | None = None) -> dict[str, Any]:
    """Retrain the ``top`` trials over ``seeds`` fresh seeds; returns (and stores) the ranking."""
    if seeds < 2:
        raise UserError("confirm needs at least 2 seeds to measure a spread")
    candidates = records.top_k(study, top, with_config=True)
    if not candidates:
        feasible = " that meets its constraints" if space.constraints else ""
        raise UserError(f"study {study.study_name!r} has no completed trial{feasible} to confirm")
    sign = 1 if space.objectives[0].direction == "maximize" else -1
    device = device if isinstance(device, torch.device) else resolve_device(device)
    seed_list = fresh_seeds(seeds)
    start = time.perf_counter()
    log.info("confirming trials %s over seeds %s", [t.number for t in candidates], seed_list)
    rows = []
    for t in candidates:
        config = records.trial_config(t)
        assert config is not None  # (top_k kept trials with a config only)
        if budget_epochs is not None:
            config.epochs = budget_epochs
        values = values_over_seeds(config, space, seed_list, device=device, weights_dir=weights_dir, label=f"trial {t.number}")
        ok = [v for v in values if v is not None]
        mean, std = mean_std(ok) if ok else (None, None)
        rows.append({"trial": t.number, "original": t.values[0], "values": values, "mean": mean, "std": std,
                     "ci95": list(t_interval(ok)) if len(ok) >= 2 else None, "diverged": len(values) - len(ok)})
        log.info("trial %d: single run %.4f, mean %s over %d seeds", t.number, t.values[0],
                 "-" if mean is None else f"{mean:.4f}", len(ok))
    # Best mean first; a smaller spread breaks ties; configs that diverged on every seed go last.
    rows.sort(key=lambda r: (r["mean"] is None, -sign * (r["mean"] or 0.0), r["std"] or 0.0, r["trial"]))
    if rows[0]["mean"] is None:
        raise UserError("every candidate diverged on every seed; nothing to confirm")
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    record = {
        "objective": space.objectives[0].name,
        "direction": space.objectives[0].direction,
        "split": "validation",
        "seeds": seed_list,
        "budget_epochs": budget_epochs,
        "confidence": CONFIDENCE,
        "rows": rows,
        "winner": rows[0]["trial"],
        "single_run_best": candidates[0].number,
        "changed": rows[0]["trial"] != candidates[0].number,
        "seconds": round(time.perf_counter() - start, 1),
    }
    records.record_confirmed(study, record)
    return record


def format_confirmation(record: dict[str, Any]) -> str:
    seeds = record["seeds"]
    lines = [
        f"confirmation: {record['objective']} on the validation split over {len(seeds)} fresh seeds "
        f"({seeds[0]}-{seeds[-1]})" + (f", {record['budget_epochs']} epochs" if record["budget_epochs"] else ""),
        "",
        f"  {'rank':>4}  {'trial':>5}  {'single run':>10}  {'mean':>7}  {'sd':>7}  95% CI of the mean",
    ]
    for r in record["rows"]:
        ci = r.get("ci95")
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"
        mean = "-" if r["mean"] is None else f"{r['mean']:.4f}"
        std = "-" if r["std"] is None else f"{r['std']:.4f}"
        note = f"  ({r['diverged']} diverged)" if r["diverged"] else ""
        lines.append(f"  {r['rank']:>4}  {r['trial']:>5}  {r['original']:>10.4f}  {mean:>7}  {std:>7}  {ci_text}{note}")
    lines.append("")
    if record["changed"]:
        lines.append(f"winner: trial {record['winner']} (the single-run best, trial {record['single_run_best']}, "
                     "was partly a lucky seed); `best` and `export` now use the winner")
    else:
        lines.append(f"winner: trial {record['winner']}, also the single-run best; `best` and `export` use it")
    return "\n".join(lines)



def winner_model_note(study: optuna.Study, space: SearchSpace, record: dict[str, Any]) -> str | None:
    """A line when the confirmed winner keeps no model, so ``export`` would re-train it (else None)."""
    from search.artifacts.trial_files import TrialFiles
    from search.storage import internals

    winner = study.trials[record["winner"]]
    files = TrialFiles(None, internals.storage_of(study), internals.study_id(study))
    if space.keep == "none" or files.has_model(winner):
        return None
    return (f"trial {winner.number} keeps no model (keep: {space.keep} kept other trials), so export re-trains it; "
            f"keep: top_k with keep_top_k: {len(record['rows'])} would have kept every candidate's")
