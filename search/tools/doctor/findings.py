"""What the doctor reports: a :class:`Finding` (with the numbers behind it), the :class:`Diagnosis`,
and the thresholds that decide them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from search.core.spec import DatasetSpec, ObjectiveSpec

# Thresholds on the objective's 0..1 scale unless noted. Findings always show the measured numbers,
# so a reader can judge a borderline case themselves.
OVERFIT_GAP = 0.10  # training metric minus validation metric
VAL_LOSS_RISE = 0.10  # validation loss ends this far (relative) above its minimum
LOW_TRAIN = 0.90  # a model that cannot reach this on its own training data is too weak
STILL_RISING = 0.02  # validation metric gain over the last quarter of the epochs
LOSS_SPIKE = 1.5  # an epoch's training loss this many times the previous epoch's
GRAD_EXPLOSION = 10.0  # an epoch's largest gradient norm this many times the median epoch's
IMBALANCE_RATIO = 3.0  # largest class / smallest class (training split)
COLOR_GAIN = 0.03  # rgb must beat gray by this much for color to count as informative
FEW_IMAGES = 100  # training images in the smallest class
OFF_SQUARE = 1.25  # an image is "not square" beyond this aspect ratio
BASELINE_MAX_SIZE = 64  # the quick baseline never trains above this input size
STANDARD_SIZES = (16, 24, 28, 32, 48, 64, 96, 128, 160, 224)


@dataclass
class Finding:
    """One diagnosis: what, the numbers behind it, and the remedies worth searching."""

    kind: str  # overfitting | underfitting | not_converged | unstable | imbalance | color | ...
    summary: str
    evidence: dict[str, Any]
    remedies: list[str] = field(default_factory=list)
    group: str = "training"  # "training" (learning curves) or "data"


@dataclass
class Diagnosis:
    dataset: DatasetSpec
    objective: ObjectiveSpec
    classes: list[str]
    baseline: dict[str, Any]  # config, train/validation values, history, seconds, diverged
    facts: dict[str, Any]
    findings: list[Finding]

    def get(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.label,
            "objective": self.objective.name,
            "classes": self.classes,
            "baseline": self.baseline,
            "facts": self.facts,
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }


def honest_objective(objective: ObjectiveSpec, imbalance: Finding | None, classes: list[str]) -> ObjectiveSpec:
    """The objective to judge by: F1 of the rare class (or macro F1) when accuracy would mislead."""
    if imbalance is None or objective.metric != "accuracy":
        return objective
    if len(classes) == 2:
        return ObjectiveSpec("f1", "binary", imbalance.evidence["minority_class"])
    return ObjectiveSpec("f1", "macro")


def size_ceiling(facts: dict[str, Any]) -> int:
    """The largest standard input size the images (median short side) and the cache both allow."""
    sizes = facts["sizes"]
    return max([s for s in STANDARD_SIZES if s <= min(min(sizes["median"]), sizes["cache_max_side"])]
               or [STANDARD_SIZES[0]])
