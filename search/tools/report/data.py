"""The plain data a report section is made of: computed once, then drawn by both renderers.

A section is text blocks (notes, paragraphs, tables) for the page and at most one figure, whose
data is one of the figure types here; :mod:`search.tools.report.render_html` draws it with plotly and
:mod:`search.tools.report.render_png` with matplotlib, from the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.core.spec import SearchSpace
from search import records


@dataclass
class Text:
    """A paragraph; a ``note`` is shown muted (``<p class="note">``)."""

    text: str
    note: bool = True


@dataclass
class Table:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    table_id: str = ""
    show_header: bool = True
    caption: str = ""


@dataclass
class Image:
    """A picture read from elsewhere (a trial's PNG in the artifact store): embedded in the page and
    written beside the section's PNGs as ``name``."""

    png: bytes
    alt: str
    name: str


Block = Union[Text, Table, Image]


@dataclass
class Line:
    """An extra line over a plot: x, y and its legend label."""

    x: list[Any]
    y: list[float]
    label: str


@dataclass
class OptunaPlot:
    """One of Optuna's plots, which Optuna draws twice itself (``optuna.visualization`` and its
    ``matplotlib`` twin): the plot's name, the study and the target; optionally a line on top."""

    name: str  # e.g. plot_slice (the same name in both of Optuna's modules)
    study: optuna.Study
    target: Any
    target_name: str
    fanova_seed: int | None = None  # an importance plot's evaluator: FanovaImportanceEvaluator(seed)
    line: Line | None = None


@dataclass
class Curve:
    trial: int
    name: str  # legend entry on the page
    epochs: list[int]
    train_loss: list[float]
    value: list[float]


@dataclass
class Curves:
    """Learning curves side by side: training loss and ``metric`` per epoch."""

    metric: str
    curves: list[Curve]


@dataclass
class Split:
    name: str
    n: int
    accuracy: float
    confusion: list[list[int]]


@dataclass
class Confusion:
    classes: list[str]
    splits: list[Split]


@dataclass
class Intervals:
    """Points with asymmetric 95% error bars, one row per label (first row on top)."""

    labels: list[str]
    centers: list[float]
    lo: list[float]  # distance below each center
    hi: list[float]  # distance above
    axis: str
    zero_line: bool
    center_name: str | None = None  # legend name of the points (None: no legend entry name)
    extra: list[float] | None = None  # a second marker per row ("single run during the search")


@dataclass
class Slice:
    """One panel of a slice plot: the objective of each trial against one param's value."""

    param: str
    x: list[Any]
    y: list[float]
    trials: list[int]
    categorical: bool = False
    log: bool = False


@dataclass
class Slices:
    """Slice panels wrapped into rows of ``columns`` (Optuna's own slice plot is one row of all params)."""

    metric: str
    panels: list[Slice]
    columns: int = 4

    @property
    def rows(self) -> int:
        return -(-len(self.panels) // self.columns)


@dataclass
class ParetoPoint:
    """One trial on the Pareto plot: its objective values and what it is."""

    trial: int
    values: list[float]  # one per objective: final values, or a pruned trial's at its last epoch
    kind: str  # "front" (the Pareto front `best` shows), "complete", "infeasible" or "pruned"
    label: str  # hover text / table entry, e.g. "trial 7, pruned at epoch 3"


@dataclass
class Pareto:
    """The trials in the plane of the first two objectives; pruned ones where they were stopped."""

    axes: list[str]  # the two objectives' names, with their direction
    points: list[ParetoPoint]
    x_maximized: bool = True  # the first objective's direction: how the front's staircase turns

    @property
    def staircase(self) -> str:
        """plotly's line shape for the front's edge: up (or down) first when x is maximized, across first if not."""
        return "vh" if self.x_maximized else "hv"


@dataclass
class TrialCurve:
    trial: int
    name: str  # legend entry
    kind: str  # as ParetoPoint.kind, or "running"
    steps: list[int]
    values: dict[str, list[float | None]]  # per metric: its value at each step (None: not measured)


@dataclass
class ObjectiveCurves:
    """Each trial's per-epoch values of every objective (and constrained metric) that changes while training."""

    metrics: list[str]
    curves: list[TrialCurve]


Figure = Union[OptunaPlot, Curves, Confusion, Intervals, Slices, Pareto, ObjectiveCurves]


@dataclass
class SectionData:
    """One section's content, as computed: its title, text blocks and figure data (or None)."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    figure: Figure | None = None


class StudyView:
    """The study's trials and the first objective, as every section needs them (read once)."""

    def __init__(self, study: optuna.Study, space: SearchSpace, files: Any = None) -> None:
        self.study = study
        self.space = space
        self.files = files  # the trials' files in the artifact store (search.artifacts.trial_files.TrialFiles)
        self.trials = study.get_trials(deepcopy=False)
        self.complete = [t for t in self.trials if t.state == TrialState.COMPLETE and t.values]
        self.objective = space.objectives[0].name
        self.maximize = space.objectives[0].direction == "maximize"
        self.best = records.best_trial(study)

    def target(self, t: FrozenTrial) -> float:
        return t.values[0]

    def ranked(self) -> list[FrozenTrial]:
        return records.ranked(self.complete, self.maximize)

    def optuna_plot(self, name: str, **kwargs: Any) -> OptunaPlot:
        return OptunaPlot(name, self.study, self.target, self.objective, **kwargs)
