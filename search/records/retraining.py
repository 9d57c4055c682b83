"""What ``ablate`` and ``confirm`` store with a study, as typed records with one reader and one writer.

``strategy-search ablate`` stores an :class:`AblationRecord` (study user attr ``ablation``),
``strategy-search confirm`` a :class:`ConfirmationRecord` (``confirmed``), and both store each
finished re-training run as a :class:`RerunEntry` (``reruns``, by run key) so an interrupted command
resumes. :func:`search.records.ablation`, :func:`search.records.confirmed` and
:func:`search.records.reruns` read them; ``record_*`` write them.

Each record's ``to_dict()`` is the JSON-able dict stored in the study and printed by ``--json`` (a
user-facing format: its keys and their order do not change), and ``from_dict()`` reads it back. A
stored record of today's shape reads back and writes out unchanged; one written by an older version
lacks the keys added since (``trial_epochs``, ``resumed_runs``, ``advice``, a confirmation row's
``epochs`` and ``trial_epochs``), which read as their defaults. Keys every version wrote are required:
``from_dict`` raises ``ValueError`` naming the missing one. Keys it does not know (a newer version's)
are ignored.

A plain module: it imports the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "AblationAdvice",
    "AblationReference",
    "AblationRow",
    "AblationRecord",
    "ConfirmationAdvice",
    "ConfirmationRow",
    "ConfirmationRecord",
    "RerunEntry",
]

INTERVAL = "Welch t-interval of the difference of means (variant - best config)"


# ----------------------------------------------------------------------------- reading helpers


def _mapping(stored: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(stored, Mapping):
        raise ValueError(f"{what} is {type(stored).__name__}, not a mapping")
    return stored


def _need(stored: Mapping[str, Any], key: str, what: str) -> Any:
    """A key every version of the record wrote."""
    if key not in stored:
        raise ValueError(f"{what} has no {key!r}")
    return stored[key]


def _values(stored: Any) -> tuple[float | None, ...]:
    """Per-seed values (None where a run diverged)."""
    return tuple(stored or ())


def _pair(stored: Any) -> tuple[float, float] | None:
    """A stored ``[low, high]`` interval (None where there is none)."""
    return None if stored is None else (stored[0], stored[1])


def _list(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else list(pair)


# ----------------------------------------------------------------------------- ablation


@dataclass(frozen=True)
class AblationReference:
    """The best config re-trained over the seeds: per-seed values and their mean and spread."""

    values: tuple[float | None, ...]
    diverged: int
    mean: float | None  # None when every seed diverged
    std: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "diverged": self.diverged, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, stored: Any) -> AblationReference:
        what = "the ablation's reference"
        d = _mapping(stored, what)
        return cls(values=_values(_need(d, "values", what)), diverged=_need(d, "diverged", what),
                   mean=_need(d, "mean", what), std=_need(d, "std", what))


@dataclass(frozen=True)
class AblationRow:
    """One strategy switched off: its values over the seeds and the change against the best config."""

    param: str
    best: Any  # the best config's value
    switched_to: Any  # the strategy's off value
    values: tuple[float | None, ...]
    diverged: int
    verdict: str  # mattered, hurt, noise or unknown
    mean: float | None = None  # None (and not stored) when every seed diverged
    std: float | None = None
    delta: float | None = None  # variant minus best config; None (not stored) with fewer than 2 values a side
    ci95: tuple[float, float] | None = None  # Welch interval of delta, stored with it

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"param": self.param, "best": self.best, "switched_to": self.switched_to,
                               "values": list(self.values), "diverged": self.diverged}
        if self.mean is not None:
            out["mean"], out["std"] = self.mean, self.std
        if self.delta is not None:
            out["delta"], out["ci95"] = self.delta, _list(self.ci95)
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_dict(cls, stored: Any) -> AblationRow:
        what = "an ablation row"
        d = _mapping(stored, what)
        return cls(param=_need(d, "param", what), best=_need(d, "best", what),
                   switched_to=_need(d, "switched_to", what), values=_values(_need(d, "values", what)),
                   diverged=_need(d, "diverged", what), verdict=_need(d, "verdict", what),
                   mean=d.get("mean"), std=d.get("std"), delta=d.get("delta"), ci95=_pair(d.get("ci95")))


@dataclass(frozen=True)
class AblationAdvice:
    """Rows whose intervals are too wide to decide, and the seed count that would decide them."""

    undecided: tuple[str, ...]
    suggested_seeds: int
    tiny: tuple[str, ...]  # rows whose change is noise for practical purposes
    median_half_width: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"undecided": list(self.undecided), "suggested_seeds": self.suggested_seeds, "tiny": list(self.tiny),
                "median_half_width": self.median_half_width, "message": self.message}

    @classmethod
    def from_dict(cls, stored: Any) -> AblationAdvice:
        what = "the ablation's advice"
        d = _mapping(stored, what)
        return cls(undecided=tuple(_need(d, "undecided", what)), suggested_seeds=_need(d, "suggested_seeds", what),
                   tiny=tuple(d.get("tiny") or ()), median_half_width=_need(d, "median_half_width", what),
                   message=_need(d, "message", what))


@dataclass(frozen=True)
class AblationRecord:
    """What ``strategy-search ablate`` found: each strategy of one trial switched off, over the same seeds."""

    trial: int
    objective: str
    direction: str
    seeds: tuple[int, ...]
    epochs: int | None  # per run
    reference: AblationReference
    rows: tuple[AblationRow, ...]
    seconds: float
    split: str = "validation"
    confidence: float = 0.95
    interval: str = INTERVAL
    trial_epochs: int | None = None  # what the trial itself trained (None: a record older than the key)
    resumed_runs: int = 0  # runs read back from the study rather than trained
    advice: AblationAdvice | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "objective": self.objective,
            "direction": self.direction,
            "split": self.split,
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "trial_epochs": self.trial_epochs,
            "confidence": self.confidence,
            "interval": self.interval,
            "reference": self.reference.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "resumed_runs": self.resumed_runs,
            "seconds": self.seconds,
            "advice": None if self.advice is None else self.advice.to_dict(),
        }

    @classmethod
    def from_dict(cls, stored: Any) -> AblationRecord:
        what = "the ablation record"
        d = _mapping(stored, what)
        advice = d.get("advice")
        return cls(trial=_need(d, "trial", what), objective=_need(d, "objective", what),
                   direction=_need(d, "direction", what), split=_need(d, "split", what),
                   seeds=tuple(_need(d, "seeds", what)), epochs=_need(d, "epochs", what),
                   trial_epochs=d.get("trial_epochs"), confidence=_need(d, "confidence", what),
                   interval=_need(d, "interval", what),
                   reference=AblationReference.from_dict(_need(d, "reference", what)),
                   rows=tuple(AblationRow.from_dict(r) for r in _need(d, "rows", what)),
                   resumed_runs=d.get("resumed_runs") or 0, seconds=_need(d, "seconds", what),
                   advice=None if advice is None else AblationAdvice.from_dict(advice))


# ----------------------------------------------------------------------------- confirmation


@dataclass(frozen=True)
class ConfirmationRow:
    """One top trial re-trained over the seeds: its single search run against its mean over the seeds."""

    trial: int
    original: float  # the trial's own (single-run) value of the first objective
    values: tuple[float | None, ...]
    mean: float | None  # None when every seed diverged
    std: float | None
    ci95: tuple[float, float] | None  # t-interval of the mean (None with fewer than 2 values)
    diverged: int
    rank: int  # 1 = the winner
    epochs: int | None = None  # per run (None: a record older than the key)
    trial_epochs: int | None = None  # what the trial itself trained

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "original": self.original, "values": list(self.values), "mean": self.mean,
                "std": self.std, "ci95": _list(self.ci95), "diverged": self.diverged, "epochs": self.epochs,
                "trial_epochs": self.trial_epochs, "rank": self.rank}

    @classmethod
    def from_dict(cls, stored: Any) -> ConfirmationRow:
        what = "a confirmation row"
        d = _mapping(stored, what)
        return cls(trial=_need(d, "trial", what), original=_need(d, "original", what),
                   values=_values(_need(d, "values", what)), mean=_need(d, "mean", what),
                   std=_need(d, "std", what), ci95=_pair(_need(d, "ci95", what)),
                   diverged=_need(d, "diverged", what), epochs=d.get("epochs"), trial_epochs=d.get("trial_epochs"),
                   rank=_need(d, "rank", what))


@dataclass(frozen=True)
class ConfirmationAdvice:
    """The winner's interval overlaps the runner-up's: the seed count that would separate them (None: too
    close to separate with any reasonable count)."""

    suggested_seeds: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"suggested_seeds": self.suggested_seeds, "message": self.message}

    @classmethod
    def from_dict(cls, stored: Any) -> ConfirmationAdvice:
        what = "the confirmation's advice"
        d = _mapping(stored, what)
        return cls(suggested_seeds=d.get("suggested_seeds"), message=_need(d, "message", what))


@dataclass(frozen=True)
class ConfirmationRecord:
    """What ``strategy-search confirm`` found: the top trials ranked by their mean over the same fresh seeds."""

    objective: str
    direction: str
    seeds: tuple[int, ...]
    budget_epochs: int | None  # --budget-epochs (None: each trial's own epochs)
    rows: tuple[ConfirmationRow, ...]  # best mean first
    winner: int
    single_run_best: int
    changed: bool  # the winner is not the single-run best
    seconds: float
    split: str = "validation"
    confidence: float = 0.95
    resumed_runs: int = 0  # runs read back from the study rather than trained
    advice: ConfirmationAdvice | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "direction": self.direction,
            "split": self.split,
            "seeds": list(self.seeds),
            "budget_epochs": self.budget_epochs,
            "confidence": self.confidence,
            "rows": [r.to_dict() for r in self.rows],
            "winner": self.winner,
            "single_run_best": self.single_run_best,
            "changed": self.changed,
            "resumed_runs": self.resumed_runs,
            "seconds": self.seconds,
            "advice": None if self.advice is None else self.advice.to_dict(),
        }

    @classmethod
    def from_dict(cls, stored: Any) -> ConfirmationRecord:
        what = "the confirmation record"
        d = _mapping(stored, what)
        advice = d.get("advice")
        return cls(objective=_need(d, "objective", what), direction=_need(d, "direction", what),
                   split=_need(d, "split", what), seeds=tuple(_need(d, "seeds", what)),
                   budget_epochs=_need(d, "budget_epochs", what), confidence=_need(d, "confidence", what),
                   rows=tuple(ConfirmationRow.from_dict(r) for r in _need(d, "rows", what)),
                   winner=_need(d, "winner", what), single_run_best=_need(d, "single_run_best", what),
                   changed=_need(d, "changed", what), resumed_runs=d.get("resumed_runs") or 0,
                   seconds=_need(d, "seconds", what),
                   advice=None if advice is None else ConfirmationAdvice.from_dict(advice))

    @property
    def candidates(self) -> set[int]:
        """The trials it re-trained."""
        return {r.trial for r in self.rows}


# ----------------------------------------------------------------------------- re-training runs


@dataclass(frozen=True)
class RerunEntry:
    """One finished re-training run (a config with one fresh seed), stored under its run key."""

    value: float | None  # the first objective on the validation split (None: training diverged)
    label: str  # the job it belonged to ("best config", "dropout=0", "trial 7")
    seed: int
    epochs: int
    seconds: float  # its wall time, the evidence for the next estimate

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "label": self.label, "seed": self.seed, "epochs": self.epochs,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, stored: Any) -> RerunEntry:
        what = "a re-training run"
        d = _mapping(stored, what)
        return cls(value=_need(d, "value", what), label=_need(d, "label", what), seed=_need(d, "seed", what),
                   epochs=_need(d, "epochs", what), seconds=_need(d, "seconds", what))

