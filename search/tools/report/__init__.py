"""A study report people can look at: one self-contained HTML file (opens offline) and PNGs.

Sections (each ``<section id=...>`` with a stable id and title; every figure's div id is
``fig-<section id>``): the result (best vs the doctor's baseline, what it cost, what to do next,
:mod:`.result`), summary, the leaderboard, optimization history (with the best so far), the Pareto front (several
objectives; pruned trials marked where they were stopped), fANOVA parameter importances, slice and
parallel-coordinate plots, learning curves of the top trials, per-objective curves, the best trial's confusion
matrices, "strategy vs. effect", the ablation and confirmation results (``strategy-search ablate`` /
``confirm``) and the validation/test caveat. Interactive figures are Optuna's
plotly plots (plotly.js is embedded, no CDN); the PNGs are drawn with matplotlib.

Compute once, render twice (as ``optuna.visualization`` and its matplotlib twin do): each
section's content is computed once into plain data (:mod:`.compute`, :mod:`.data`), which the
page renderer (:mod:`.render_html`, plotly) and the PNG renderer (:mod:`.render_png`,
matplotlib) both draw; :mod:`.sections` lists the sections once; :mod:`.build` writes the files.
"""

from search.tools.report.build import Report, Section, build_section, build_sections, write_report
from search.tools.report.compute import TOP_TRIALS, best_so_far, strategy_effect_rows
from search.tools.report.data import SectionData, StudyView
from search.tools.report.sections import SECTION_DEFS, SECTIONS, SectionDef

__all__ = ["Report", "SECTION_DEFS", "SECTIONS", "Section", "SectionData", "SectionDef", "StudyView", "TOP_TRIALS",
           "best_so_far", "build_section", "build_sections", "strategy_effect_rows", "write_report"]
