"""A time budget as trials, epochs and the pruner's schedule, from the baseline's measured epoch time.

``doctor --budget 15m`` trains the baseline, measures its seconds per epoch and plans the search
so that it ends within the budget: the epochs of a full trial (the recipe's, fewer when the budget
is short: at least MIN_FULL_TRIALS full trials must fit), a Hyperband schedule over those epochs
(min_resource a ninth of them, reduction factor 3: brackets that prune early, and one that never
prunes, so a slow starter under a long cosine schedule still gets its full run in some bracket),
and the number of trials that fill the budget at Hyperband's average cost per trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIN_FULL_TRIALS = 4  # full-length trials that must fit in the budget
MIN_EPOCHS = 6
HYPERBAND_COST = 0.45  # a trial's average share of the full epochs under Hyperband (factor 3, measured ~0.4)
REDUCTION = 3


@dataclass(frozen=True)
class Plan:
    time: float  # seconds the search may take (the budget less what the doctor used)
    epochs: int  # a full trial's epochs (= budget.max_epochs, the pruner's max_resource)
    n_trials: int
    min_resource: int
    epoch_seconds: float
    note: str

    def pruner(self) -> dict[str, Any]:
        return {"name": "hyperband", "min_resource": self.min_resource, "reduction_factor": REDUCTION,
                "sampler_per_bracket": 0}


def plan_budget(budget: float, epoch_seconds: float, epochs: int, spent: float = 0.0,
                first_trials: int = 1) -> Plan:
    """Plan ``budget`` seconds (less ``spent``) for trials of ``epochs`` epochs at ``epoch_seconds`` each;
    ``first_trials`` enqueued trials run first and whole."""
    left = max(0.0, budget - spent)
    per_epoch = max(epoch_seconds, 1e-3)
    fit = int(left / (MIN_FULL_TRIALS * per_epoch))
    full = max(MIN_EPOCHS, min(epochs, fit))
    note = f"{full} epochs per full trial" + ("" if full == epochs else f" (the recipe's {epochs} do not fit "
                                                                       f"{MIN_FULL_TRIALS} times)")
    trial = full * per_epoch
    rest = max(0.0, left - first_trials * trial)
    n_trials = max(first_trials + 1, first_trials + math.floor(rest / (HYPERBAND_COST * trial)))
    return Plan(time=left, epochs=full, n_trials=n_trials, min_resource=max(1, full // REDUCTION ** 2),
                epoch_seconds=per_epoch, note=note)
