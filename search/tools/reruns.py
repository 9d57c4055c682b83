"""Re-training runs for ``ablate`` and ``confirm``: an estimate up front, one bar with the time left,
and every finished run stored with the study, so an interrupted command resumes where it stopped.

A run is one config trained with one fresh seed. Its key covers everything its value depends on
(the whole config, seed and epochs included, the dataset, the objective and the device type), so a
stored value is reused only for the very same run: ``ablate`` after ``confirm`` (or the other way
round) reuses the best config's runs too. Values are stored in the study's user attr ``reruns``
(:func:`search.records.record_rerun`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
import torch

from search import records
from search.core import progress
from search.core.config import TrialConfig
from search.core.numbers import duration
from search.core.spec import SearchSpace
from search.train.loop import EpochLog, NonFiniteLoss, train_space

log = logging.getLogger(__name__)

SEED_BASE = 10_000  # fresh seeds: search trials use "space seed + trial number"


def fresh_seeds(n: int) -> list[int]:
    """The same ``n`` seeds for every retrained config, so comparisons are paired."""
    return [SEED_BASE + i for i in range(n)]


@dataclass
class Job:
    """One config to train over every seed: its label in logs and the epoch time expected of it."""

    label: str
    config: TrialConfig
    epoch_seconds: float | None = None  # measured in the trial it comes from (None: unknown)
    overhead: float = 0.0  # the rest of that trial's time: data, model, evaluation (seconds per run)

    @classmethod
    def of_trial(cls, label: str, config: TrialConfig, trial: Any) -> "Job":
        """A job whose times come from ``trial``: seconds per epoch, and the rest of its duration."""
        per_epoch = trial.user_attrs.get(records.EPOCH_SECONDS)
        epochs = len(records.history(trial)) or int((records.config_dict(trial) or {}).get("epochs") or 1)
        total = trial.duration.total_seconds() if trial.duration is not None else None
        overhead = max(0.0, total - epochs * per_epoch) if per_epoch and total else 0.0
        return cls(label, config, per_epoch, overhead)

    def seconds(self) -> float | None:
        """Expected seconds of one run (None: no measurement to go by)."""
        if not self.epoch_seconds:
            return None
        return self.overhead + int(self.config.epochs or 1) * self.epoch_seconds


class Reruns:
    """Trains jobs over seeds for one study, reusing and storing finished runs."""

    def __init__(self, study: optuna.Study, space: SearchSpace, seeds: Sequence[int], *, device: torch.device,
                 weights_dir: str | Path | None, what: str) -> None:
        self.study = study
        self.space = space
        self.seeds = list(seeds)
        self.device = device
        self.weights_dir = weights_dir
        self.what = what  # "ablation of trial 7", "confirmation": the bar's name
        self.stored = records.reruns(study)
        self.bar: progress.Bar | None = None
        self.epochs_left = 0
        self.started = 0.0
        self.epochs_done = 0
        self.trained_seconds = 0.0

    def key(self, config: TrialConfig, seed: int) -> str:
        doc = {"config": config.replace(seed=seed).to_dict(), "dataset": self.space.dataset.label,
               "objective": self.space.objectives[0].name, "split": "validation", "device": self.device.type}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def plan(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """Runs to do and already done, epochs and the estimated time (runs x epochs x epoch time)."""
        todo = [(j, s) for j in jobs for s in self.seeds if self.key(j.config, s) not in self.stored]
        epochs = [int(j.config.epochs or 1) for j, _ in todo]
        # Best evidence first: this study's earlier re-training runs (their whole time per epoch), else
        # the trials the jobs come from (their time per epoch plus the rest of their duration).
        earlier = [e for e in self.stored.values() if e.seconds and e.epochs]
        if earlier:
            per_epoch = sum(e.seconds for e in earlier) / sum(e.epochs for e in earlier)
            seconds: float | None = per_epoch * sum(epochs)
            basis = f"{per_epoch:.2g} s per epoch as measured in {len(earlier)} earlier run(s) of this study"
        else:
            known = [j.seconds() for j, _ in todo if j.seconds() is not None]
            seconds = sum(known) / len(known) * len(todo) if known else None  # type: ignore[arg-type]
            times = [j.epoch_seconds for j in jobs if j.epoch_seconds]
            basis = (f"{sum(times) / len(times):.2g} s per epoch and the trial's start-up, as measured in the search"
                     if times else "")
        return {"runs": len(jobs) * len(self.seeds), "done": len(jobs) * len(self.seeds) - len(todo),
                "todo": len(todo), "epochs": sum(epochs), "seconds": seconds, "basis": basis,
                "epochs_per_run": sorted(set(int(j.config.epochs or 1) for j in jobs))}

    def start(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """Log the estimate and open the bar over every epoch still to train."""
        plan = self.plan(jobs)
        log.info(format_plan(plan, len(jobs), len(self.seeds), self.what))
        self.epochs_left = plan["epochs"]
        self.started = time.monotonic()
        if plan["todo"]:
            self.bar = progress.Bar(plan["epochs"], desc=self.what, unit="epochs", eta=False)
            if plan["seconds"]:
                self.bar.note(f"~{duration(plan['seconds'])} left (estimate)")
        self._estimate = plan["seconds"]
        return plan

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _epoch(self, entry: EpochLog) -> None:
        self.epochs_done += 1
        self.trained_seconds += entry.seconds
        self.epochs_left -= 1
        if self.bar is not None:
            self.bar.update()
            # Measured here: the wall time per epoch so far (evaluation included) times the epochs left.
            per_epoch = (time.monotonic() - self.started) / self.epochs_done
            self.bar.note(f"~{duration(per_epoch * max(0, self.epochs_left))} left")

    def values(self, job: Job) -> list[float | None]:
        """The first objective on the validation split, once per seed; None where training diverged."""
        out: list[float | None] = []
        for seed in self.seeds:
            key = self.key(job.config, seed)
            if key in self.stored:
                out.append(self.stored[key].value)
                continue
            epochs = int(job.config.epochs or 1)
            start = time.perf_counter()
            done_before = self.epochs_done
            value: float | None
            try:
                result = train_space(job.config.replace(seed=seed), self.space, device=self.device,
                                     weights_dir=self.weights_dir, evaluate_test=False, on_epoch=self._epoch,
                                     label=f"{job.label} seed {seed}")
                value = result.values[0] if math.isfinite(result.values[0]) else None
            except NonFiniteLoss as exc:
                log.info("%s seed %d diverged: %s", job.label, seed, exc)
                value = None
            # A diverged run ends early: its unused epochs leave the estimate.
            skipped = epochs - (self.epochs_done - done_before)
            self.epochs_left -= max(0, skipped)
            if self.bar is not None and skipped > 0:
                self.bar.update(skipped)
            entry = records.RerunEntry(value=value, label=job.label, seed=seed, epochs=epochs,
                                       seconds=round(time.perf_counter() - start, 2))
            self.stored[key] = entry
            records.record_rerun(self.study, key, entry)  # stored now: an interrupt loses only the run in progress
            out.append(value)
        return out


def format_plan(plan: dict[str, Any], jobs: int, seeds: int, what: str) -> str:
    """``ablation of trial 7: 12 configs x 3 seeds = 36 runs of 23 epochs; 9 done before (resumed); ...``"""
    epochs = "/".join(map(str, plan["epochs_per_run"]))
    text = f"{what}: {jobs} config(s) x {seeds} seeds = {plan['runs']} runs of {epochs} epochs"
    if plan["done"]:
        text += f"; {plan['done']} done before (stored with the study), {plan['todo']} to go"
    if not plan["todo"]:
        return text + "; nothing left to train"
    if plan["seconds"] is not None:
        text += f"; about {duration(plan['seconds'])} ({plan['epochs']} epochs at {plan['basis']})"
    else:
        text += "; no epoch time measured yet: the bar shows the time left after the first epoch"
    return text + ". Ctrl-C keeps the finished runs: the same command resumes"
