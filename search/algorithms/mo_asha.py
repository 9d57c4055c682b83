"""Multi-objective asynchronous successive halving (MO-ASHA): pruning for studies with several objectives.

A trial's intermediate state is its vector of objectives at a step (epoch): quality metrics per
epoch, costs such as ``params`` and ``latency_ms`` as measured before the first step. At a *rung*
(epoch ``min_resource * reduction_factor**k``), the trial is ranked among every trial that reached
the same epoch by non-dominated sorting; it goes on when it ranks in the top ``1/reduction_factor``
(or, with ``keep_front``, when no trial there dominates it), and is pruned otherwise.

Reference: R. Schmucker, M. Donini, M. B. Zafar, D. Salinas, C. Archambeau (2021), "Multi-objective
Asynchronous Successive Halving", arXiv:2106.12639. Ranking inside a front uses the epsilon-net
order (greedy farthest point, K. L. Clarkson, "Nearest-neighbor searching and metric space
dimensions", 2006), one of the orders the paper compares and the default of its reference
implementation (Syne Tune's ``MOASHA``).

Why this rule rather than a hypervolume-contribution rule:

* It is the successive-halving rule our single-objective ``successive_halving`` and ``hyperband``
  pruners use, with the scalar comparison replaced by Pareto dominance: the rungs, the reduction
  factor and the epochs they cost mean the same thing in both kinds of study.
* Who dominates whom needs no scale and no reference point. A hypervolume contribution needs a
  reference point, which ``latency_ms`` or ``params`` have no natural value for, and it is zero for
  every dominated point, so it ranks nothing beyond the first front. Scales (each objective's range
  among the trials at the rung) only order the points *within* a front.
* It needs no model of the learning curves, so it is as cheap and as robust as ASHA.

``keep_front`` (on by default) departs from the paper in one way: a trial that no trial at its rung
dominates is never pruned, even when the first front holds more than the top ``1/reduction_factor``.
A trial that is best in one objective at a rung (the smallest model, say) usually ends on the final
Pareto front, and pruning it would lose that point; fronts of two or three objectives hold few of
the trials, so this keeps little extra. ``keep_front: 0`` is the paper's rule.

This module is plain arithmetic on value vectors: :meth:`MultiObjectiveASHA.judge` is what the
objective calls with the values it records (``search.study.intermediate``); Optuna itself never asks
this pruner (``Trial.should_prune`` refuses studies with several objectives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import optuna
from optuna.pruners import BasePruner

__all__ = ["MultiObjectiveASHA", "Verdict", "dominates", "fronts", "ranking", "spread_order", "to_minimize"]


def to_minimize(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """``values`` as costs (maximized objectives negated); NaN is the worst value there is."""
    out = []
    for v, d in zip(values, directions):
        v = float(v)
        out.append(math.inf if math.isnan(v) else (-v if d == "maximize" else v))
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether cost vector ``a`` Pareto-dominates ``b``: no worse in any objective, better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Non-dominated sorting of cost vectors: the indices of the first front, then of the next, ..."""
    remaining = list(range(len(points)))
    out: list[list[int]] = []
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        out.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return out


def spread_order(points: Sequence[Sequence[float]], members: Sequence[int]) -> list[int]:
    """``members`` (indices of one front) in epsilon-net order: the best on the first objective,
    then each time the member farthest from those already taken. Distances are measured with each
    objective scaled by its range over all ``points``, so no unit (parameters, milliseconds)
    outweighs another; ties go to the lower index, so the order is reproducible."""
    if len(members) <= 1:
        return list(members)
    dims = len(points[0])
    finite = [[p[d] for p in points if math.isfinite(p[d])] for d in range(dims)]
    spans = [(max(v) - min(v)) if len(v) > 1 else 0.0 for v in finite]

    def scaled(i: int) -> list[float]:
        return [0.0 if not spans[d] or not math.isfinite(points[i][d]) else points[i][d] / spans[d]
                for d in range(dims)]

    coords = {i: scaled(i) for i in members}
    first = min(members, key=lambda i: (points[i][0], i))
    order = [first]
    nearest = {i: math.dist(coords[i], coords[first]) for i in members if i != first}
    while nearest:
        pick = max(nearest, key=lambda i: (nearest[i], -i))
        order.append(pick)
        del nearest[pick]
        for i in nearest:
            nearest[i] = min(nearest[i], math.dist(coords[i], coords[pick]))
    return order


def ranking(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices, best first: front by front, each front in :func:`spread_order`."""
    return [i for front in fronts(points) for i in spread_order(points, front)]


@dataclass(frozen=True)
class Verdict:
    """What the pruner decided for one trial at one step, and why."""

    prune: bool
    step: int
    at_rung: bool = False  # False: not a rung, in warm-up or start-up (nothing was compared)
    n: int = 1  # trials at the rung, this one included
    place: int = 1  # this trial's place in the ranking (1 = best)
    kept: int = 1  # how many places go on
    front: int = 1  # its Pareto rank (1 = no trial at the rung dominates it)
    dominated_by: int = 0  # how many trials at the rung dominate it

    @property
    def reason(self) -> str:
        if not self.at_rung:
            return f"epoch {self.step}: not judged"
        verb = "pruned" if self.prune else "kept"
        return (f"{verb} at epoch {self.step}: dominated by {self.dominated_by} of the {self.n - 1} other trials "
                f"there (Pareto rank {self.front}, place {self.place} of {self.n}; the top {self.kept} go on)")


class MultiObjectiveASHA(BasePruner):
    """MO-ASHA over epochs. Options as the single-objective pruners name them:

    * ``min_resource``: the first rung (epochs every trial gets); rungs at ``min_resource * reduction_factor**k``;
    * ``reduction_factor``: the top ``1/reduction_factor`` at a rung go on;
    * ``n_startup_trials``: no pruning until this many trials have finished (complete or pruned);
    * ``n_warmup_steps``: no pruning before this epoch;
    * ``keep_front``: never prune a trial that no trial at its rung dominates;
    * ``max_resource``: the last epoch; no rung there or after (pruning then saves nothing).
    """

    def __init__(self, directions: Sequence[str], *, min_resource: int = 1, reduction_factor: int = 3,
                 n_startup_trials: int = 0, n_warmup_steps: int = 0, keep_front: bool = True,
                 max_resource: int | None = None) -> None:
        if min_resource < 1:
            raise ValueError(f"min_resource must be >= 1, got {min_resource}")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor}")
        bad = [d for d in directions if d not in ("maximize", "minimize")]
        if bad or not directions:
            raise ValueError(f"directions must be 'maximize' or 'minimize', got {list(directions)}")
        self.directions = tuple(directions)
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.keep_front = keep_front
        self.max_resource = max_resource

    def is_rung(self, step: int) -> bool:
        """Whether ``step`` is a rung (warm-up aside): ``min_resource * reduction_factor**k`` below the last epoch."""
        if step < self.min_resource or (self.max_resource is not None and step >= self.max_resource):
            return False
        rung = self.min_resource
        while rung < step:
            rung *= self.reduction_factor
        return rung == step

    def judge(self, step: int, mine: Sequence[float], others: Sequence[Sequence[float]],
              n_finished: int) -> Verdict:
        """Decide for a trial at ``step`` with objective values ``mine`` (in the study's directions),
        given the values at the same step of every other trial that reached it, and how many trials
        of the study have finished."""
        if step < self.n_warmup_steps or n_finished < self.n_startup_trials or not self.is_rung(step):
            return Verdict(False, step)
        points = [to_minimize(v, self.directions) for v in others] + [to_minimize(mine, self.directions)]
        me = len(points) - 1
        n = len(points)
        sorted_fronts = fronts(points)
        order = [i for f in sorted_fronts for i in spread_order(points, f)]
        place = order.index(me)
        front = next(k for k, f in enumerate(sorted_fronts) if me in f)
        dominated_by = sum(1 for p in points[:-1] if dominates(p, points[me]))
        # Kept: places 0..n/reduction_factor (the first trial at a rung always goes on).
        kept = n // self.reduction_factor + 1
        prune = place >= kept and not (self.keep_front and front == 0)
        return Verdict(prune, step, True, n, place + 1, min(kept, n), front + 1, dominated_by)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Not asked by Optuna: ``Trial.should_prune`` refuses studies with several objectives, so the
        objective calls :meth:`judge` with the values it records."""
        return False
