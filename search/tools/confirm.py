"""Seed-robust winners: retrain the top trials over fresh seeds and rank them by their mean.

A search keeps the single best run, and the best of many noisy runs is partly luck.
:func:`confirm` retrains the top trials' configs over the same fresh seeds, ranks them by mean
(spread breaks ties) and stores the result with the study (``search.records.confirmed``);
:func:`search.tools.summary.best_trial` (and so ``best`` and ``export``) then prefer the winner.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from search.tools.ablate import MAX_SUGGESTED_SEEDS, seeds_needed
from search.tools.reruns import Job, Reruns, fresh_seeds
from search.core.errors import UserError
from search.core.spec import SearchSpace
from search.tools.stats import CONFIDENCE, mean_std, t_interval
from search import records
from search.train.loop import resolve_device

log = logging.getLogger(__name__)


def confirm(study: optuna.Study, space: SearchSpace, *, top: int = 5, seeds: int = 3,
            budget_epochs: int | None = None, device: str | torch.device | None = None,
            weights_dir: str | Path | None = None) -> records.ConfirmationRecord:
    """Retrain the ``top`` trials over ``seeds`` fresh seeds; returns (and stores) the ranking.

    Finished runs are stored with the study as they end (:mod:`search.tools.reruns`): after an
    interrupt the same call trains only the runs still missing.
    """
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
    jobs = []
    for t in candidates:
        config = records.trial_config(t)
        assert config is not None  # (top_k kept trials with a config only)
        if budget_epochs is not None:
            config.epochs = budget_epochs
        jobs.append(Job.of_trial(f"trial {t.number}", config, t))
    runs = Reruns(study, space, seed_list, device=device, weights_dir=weights_dir,
                  what=f"confirmation of trials {', '.join(str(t.number) for t in candidates)}")
    plan = runs.start(jobs)
    rows = []
    try:
        for t, job in zip(candidates, jobs):
            values = runs.values(job)
            ok = [v for v in values if v is not None]
            mean, std = mean_std(ok) if ok else (None, None)
            # rank 0 until every row is in: the ranking below numbers them.
            rows.append(records.ConfirmationRow(
                trial=t.number, original=t.values[0], values=tuple(values), mean=mean, std=std,
                ci95=t_interval(ok) if len(ok) >= 2 else None, diverged=len(values) - len(ok), rank=0,
                epochs=int(job.config.epochs or 1),
                trial_epochs=int((records.config_dict(t) or {}).get("epochs") or 1)))
            log.info("trial %d: single run %.4f, mean %s over %d seeds", t.number, t.values[0],
                     "-" if mean is None else f"{mean:.4f}", len(ok))
    finally:
        runs.close()
    # Best mean first; a smaller spread breaks ties; configs that diverged on every seed go last.
    rows.sort(key=lambda r: (r.mean is None, -sign * (r.mean or 0.0), r.std or 0.0, r.trial))
    if rows[0].mean is None:
        raise UserError("every candidate diverged on every seed; nothing to confirm")
    ranked = tuple(replace(r, rank=rank) for rank, r in enumerate(rows, 1))
    record = records.ConfirmationRecord(
        objective=space.objectives[0].name,
        direction=space.objectives[0].direction,
        split="validation",
        seeds=tuple(seed_list),
        budget_epochs=budget_epochs,
        confidence=CONFIDENCE,
        rows=ranked,
        winner=ranked[0].trial,
        single_run_best=candidates[0].number,
        changed=ranked[0].trial != candidates[0].number,
        resumed_runs=plan["done"],
        seconds=round(time.perf_counter() - start, 1),
    )
    record = replace(record, advice=ranking_advice(record))
    records.record_confirmed(study, record)
    return record


def ranking_advice(record: records.ConfirmationRecord) -> records.ConfirmationAdvice | None:
    """When the winner's 95% interval overlaps the runner-up's: the seed count that would separate them."""
    rows = [r for r in record.rows if r.ci95 and r.mean is not None]
    if len(rows) < 2:
        return None
    first, second = rows[0], rows[1]
    assert first.ci95 is not None and second.ci95 is not None and first.mean is not None and second.mean is not None
    if first.ci95[0] > second.ci95[1] or first.ci95[1] < second.ci95[0]:
        return None  # separated
    seeds = len(record.seeds)
    need = seeds_needed(first.values, second.values, first.mean - second.mean)
    if need is None or need > MAX_SUGGESTED_SEEDS:
        return records.ConfirmationAdvice(suggested_seeds=None, message=(
            f"trials {first.trial} and {second.trial} are too close to rank apart with seeds "
            f"(mean {first.mean:.3f} vs {second.mean:.3f}): either is as good; prefer the smaller or faster"))
    if need <= seeds:
        return None
    return records.ConfirmationAdvice(suggested_seeds=need, message=(
        f"the 95% intervals of trials {first.trial} and {second.trial} overlap with {seeds} seeds: "
        f"about {need} seeds would rank them (80% power): --seeds {need}"))


def format_confirmation(record: records.ConfirmationRecord) -> str:
    seeds = record.seeds
    trained = sorted({r.trial_epochs for r in record.rows if r.trial_epochs})
    epochs = (f", {record.budget_epochs} epochs per run (--budget-epochs; the trials trained "
              f"{'/'.join(map(str, trained))})" if record.budget_epochs else ", each trial's own epochs per run")
    lines = [
        f"confirmation: {record.objective} on the validation split over {len(seeds)} fresh seeds "
        f"({seeds[0]}-{seeds[-1]}){epochs}",
        "",
        f"  {'rank':>4}  {'trial':>5}  {'epochs':>6}  {'single run':>10}  {'mean':>6}  {'sd':>6}  95% CI of the mean",
    ]
    for r in record.rows:
        ci = r.ci95
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        mean = "-" if r.mean is None else f"{r.mean:.3f}"
        std = "-" if r.std is None else f"{r.std:.3f}"
        ep = "-" if r.epochs is None else r.epochs
        note = f"  ({r.diverged} diverged)" if r.diverged else ""
        lines.append(f"  {r.rank:>4}  {r.trial:>5}  {ep:>6}  {r.original:>10.3f}  {mean:>6}  {std:>6}  "
                     f"{ci_text}{note}")
    lines.append("")
    if record.changed:
        lines.append(f"winner: trial {record.winner} (the single-run best, trial {record.single_run_best}, "
                     "was partly a lucky seed); `best` and `export` now use the winner")
    else:
        lines.append(f"winner: trial {record.winner}, also the single-run best; `best` and `export` use it")
    if record.advice is not None:
        lines.append(f"warning: {record.advice.message}")
    return "\n".join(lines)


def winner_model_note(study: optuna.Study, space: SearchSpace, record: records.ConfirmationRecord) -> str | None:
    """A line when the confirmed winner keeps no model, so ``export`` would re-train it (else None)."""
    from search.artifacts.trial_files import TrialFiles
    from search.storage import internals

    winner = study.trials[record.winner]
    files = TrialFiles(None, internals.storage_of(study), internals.study_id(study))
    if space.keep == "none" or files.has_model(winner):
        return None
    return (f"trial {winner.number} keeps no model (keep: {space.keep} kept other trials), so export re-trains it; "
            f"keep: top_k with keep_top_k: {len(record.rows)} would have kept every candidate's")
