"""Two-objective search efficiency (accuracy vs. params): hypervolume curves, fronts, pruning replays.

Used by ``benchmarks.search_efficiency --pareto``. A run is the dict ``search_efficiency.run_one``
returns: its trials in order, each with its state, its values (completed trials), the epochs it
trained and its per-step values (``intermediate``, as the study recorded them).

* Hypervolume, two ways (both objectives minimized, accuracy as 1 - accuracy with 1 as its reference):
  ``log``: params as log10, reference log10(largest model any run of the dataset built) + 0.1, so
  halving a model counts the same at any size (parameter counts span orders of magnitude);
  ``linear``: params as a fraction of that largest model, reference 1.1: Optuna's convention (raw
  values), where the few-hundred-parameter models that barely learn count for almost nothing.
* Epochs to a target: cumulative epochs (pruned trials count the epochs they ran) until the
  hypervolume of the run's completed trials first reaches it.
* Front kept: each point of a reference front is *kept* by another run when some completed trial of
  that run is at least as accurate with at most as many parameters; otherwise it is lost, by the
  accuracy it gives up at no more parameters.
* Replay: the pruner's decisions on a run without pruning, trial by trial in order, from its recorded
  per-epoch values: which trials it would have stopped (training is deterministic for a given config
  and seed on the CPU, so the same trials would have had the same curves), which points of that run's
  final front it would have lost, and the epochs it would have spent.
* Oracle: a pruner that knows how every trial of a run without pruning ends: it trains in full the
  trials that add hypervolume when they finish (no earlier trial dominates them) and stops every
  other one at its first rung. Its hypervolume after each trial is the run's own, at the fewest epochs
  a rung-based pruner spends while keeping every such trial: how far a rule that reads curves stays
  above it is what its rung decisions cost.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

LOG_MARGIN = 0.1  # the log measure's reference point: log10(largest model) + this
LINEAR_MARGIN = 1.1  # the linear measure's: this times the largest model


class Measure:
    """How a trial's values [accuracy, params] become a point, and the reference point, for one dataset."""

    def __init__(self, name: str, largest: float) -> None:
        if name not in ("log", "linear"):
            raise ValueError(f"unknown measure {name!r}")
        self.name = name
        self.largest = max(1.0, float(largest))
        self.ref = (1.0, math.log10(self.largest) + LOG_MARGIN) if name == "log" else (1.0, LINEAR_MARGIN)

    def point(self, values: Sequence[float]) -> tuple[float, float]:
        params = max(1.0, float(values[1]))
        return 1.0 - float(values[0]), math.log10(params) if self.name == "log" else params / self.largest

    def curve(self, trials: Sequence[dict[str, Any]], alive: Sequence[bool] | None = None,
              epochs: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """(cumulative epochs, hypervolume of the completed trials so far) after each trial, in order.
        ``alive`` / ``epochs`` override which trials completed and what each cost (a replay)."""
        out, total, points = [], 0, []
        for i, t in enumerate(trials):
            total += t["epochs"] if epochs is None else epochs[i]
            done = t["values"] is not None if alive is None else alive[i]
            if done:
                points.append(self.point(t["values"]))
            out.append((total, hypervolume(points, self.ref)))
        return out


def measures(runs: Iterable[dict[str, Any]]) -> list[Measure]:
    """Both measures for one dataset's runs (the largest model any of them built)."""
    largest = max((t["values"][1] for r in runs for t in r["trials"] if t["values"]), default=1.0)
    return [Measure("log", largest), Measure("linear", largest)]


def point(values: Sequence[float]) -> tuple[float, float]:
    """(1 - accuracy, params) of a trial's values [accuracy, params]: how fronts are compared (no scale needed)."""
    return 1.0 - float(values[0]), float(values[1])


def front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (minimized), sorted by the first coordinate; duplicates once."""
    out: list[tuple[float, float]] = []
    for p in sorted(set(points)):
        if not out or p[1] < out[-1][1]:
            out.append(p)
    return out


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The area the points dominate inside the reference box (both coordinates minimized)."""
    inside = front([p for p in points if p[0] < ref[0] and p[1] < ref[1]])
    area = 0.0
    for i, (x, y) in enumerate(inside):
        right = inside[i + 1][0] if i + 1 < len(inside) else ref[0]
        area += (right - x) * (ref[1] - y)
    return area


def epochs_to(curve: Sequence[tuple[int, float]], target: float) -> float:
    return next((float(e) for e, hv in curve if hv >= target - 1e-12), math.inf)


def covers(q: Sequence[float], p: Sequence[float]) -> bool:
    """Whether point ``q`` is at least as good as ``p`` in both (minimized) coordinates, up to float noise."""
    return q[0] <= p[0] + 1e-12 and q[1] <= p[1] + 1e-12


def completed_points(trials: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    return [point(t["values"]) for t in trials if t["values"] is not None]


def front_kept(reference_front: Sequence[tuple[float, float]], other: Sequence[tuple[float, float]]
               ) -> dict[str, Any]:
    """How many points of ``reference_front`` ``other`` keeps (see the module docstring)."""
    lost = []
    for p in reference_front:
        if any(covers(q, p) for q in other):
            continue
        cheaper = [q for q in other if q[1] <= p[1] + 1e-12]
        # Accuracy given up at no more parameters (1.0 when the other run has no model that small).
        gap = min((q[0] - p[0] for q in cheaper), default=1.0)
        lost.append({"accuracy": round(1.0 - p[0], 6), "params": round(p[1]), "accuracy_short_by": round(gap, 6)})
    return {"points": len(reference_front), "lost": len(lost), "lost_points": lost,
            "max_accuracy_short_by": max((x["accuracy_short_by"] for x in lost), default=0.0)}


def replay(trials: Sequence[dict[str, Any]], pruner: Any, objectives: Sequence[str]) -> dict[str, Any]:
    """The decisions ``pruner`` (a ``MultiObjectiveASHA``) would have taken on ``trials`` (a run
    without pruning, one worker, so every earlier trial had finished), from their recorded values."""
    reached: list[int] = []
    vectors: list[dict[int, list[float]]] = []
    alive: list[bool] = []
    for i, t in enumerate(trials):
        columns = t.get("intermediate") or {}
        steps = columns.get("step") or []
        by_step = {s: [columns[n][k] for n in objectives] for k, s in enumerate(steps)
                   if all(columns.get(n) and columns[n][k] is not None for n in objectives)}
        last = t["epochs"]
        stop = None
        if t["values"] is not None:
            for step in range(1, last):
                if step not in by_step or not pruner.is_rung(step):
                    continue
                others = [vectors[j][step] for j in range(i) if reached[j] >= step and step in vectors[j]]
                if pruner.judge(step, by_step[step], others, n_finished=i).prune:
                    stop = step
                    break
        reached.append(stop if stop is not None else last)
        vectors.append(by_step)
        alive.append(t["values"] is not None and stop is None)
    return {"epochs": reached, "alive": alive, "pruned": [t["number"] for t, a, r in zip(trials, alive, reached)
                                                          if not a and t["values"] is not None]}


def oracle(trials: Sequence[dict[str, Any]], first_rung: int = 1) -> dict[str, Any]:
    """The oracle's decisions on a run without pruning (see the module docstring), as :func:`replay` gives them."""
    alive, seen = [], []
    for t in trials:
        p = point(t["values"]) if t["values"] is not None else None
        adds = p is not None and not any(covers(q, p) for q in seen)
        alive.append(adds)
        if p is not None:
            seen.append(p)
    return {"epochs": [t["epochs"] if a else min(first_rung, t["epochs"]) for t, a in zip(trials, alive)],
            "alive": alive}
