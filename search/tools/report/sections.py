"""The report's sections, listed once: each names its compute function and its two figure renderers.

Order here is the order on the page and in ``Report.sections``; the id is the HTML ``<section id>``,
the figure's div id (``fig-<id>``) and the PNG's name (``<id>.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from search.tools.report import compute, files, pareto, render_html, render_png, result
from search.tools.report.data import SectionData, StudyView


@dataclass(frozen=True)
class SectionDef:
    id: str
    title: str
    compute: Callable[[StudyView, str, str], SectionData]
    plotly: Callable[[Any], Any] | None = None  # figure data -> plotly Figure
    png: Callable[[Any, str, Path], None] | None = None  # (figure data, title, path): draws the PNG


_OPTUNA = {"plotly": render_html.optuna_plot, "png": render_png.optuna_plot}

SECTION_DEFS: tuple[SectionDef, ...] = (
    SectionDef("result", "Result", result.result),
    SectionDef("summary", "Study summary", compute.summary),
    SectionDef("leaderboard", "Leaderboard", result.leaderboard),
    SectionDef("history", "Optimization history", compute.history, **_OPTUNA),
    SectionDef("pareto", "Pareto front", pareto.pareto, render_html.pareto, render_png.pareto),
    SectionDef("importance", "Parameter importances (fANOVA)", compute.importance, **_OPTUNA),
    SectionDef("slice", "Slice plot", result.slices, render_html.slices, render_png.slices),
    SectionDef("parallel", "Parallel coordinates", compute.parallel, **_OPTUNA),
    SectionDef("learning-curves", "Learning curves of the top trials", compute.learning_curves,
               render_html.curves, render_png.curves),
    SectionDef("objective-curves", "Per-objective learning curves", pareto.objective_curves,
               render_html.objective_curves, render_png.objective_curves),
    SectionDef("confusion", "Confusion matrix of the best trial", compute.confusion,
               render_html.confusion, render_png.confusion),
    SectionDef("strategy-effect", "Strategy vs. effect", compute.strategy_effect),
    SectionDef("kept-files", "Kept trials: files and pictures from the artifact store", files.kept_files),
    SectionDef("ablation", "Ablation: what each strategy was worth", compute.ablation,
               render_html.intervals, render_png.intervals),
    SectionDef("confirmed", "Seed-robust ranking of the top trials", compute.confirmed,
               render_html.intervals, render_png.intervals),
    SectionDef("caveat", "Caveat: validation and test scores", compute.caveat),
)

SECTIONS: dict[str, str] = {d.id: d.title for d in SECTION_DEFS}  # id -> title
BY_ID: dict[str, SectionDef] = {d.id: d for d in SECTION_DEFS}
