"""A study report people can look at: one self-contained HTML file (opens offline) and PNGs.

Sections (each ``<section id=...>`` with a stable id and title; every figure's div id is
``fig-<section id>``): summary, optimisation history (with the best so far), fANOVA parameter importances, slice and
parallel-coordinate plots, learning curves of the top trials, the best trial's confusion
matrices, "strategy vs. effect", the ablation and confirmation results (``strategy-search ablate`` /
``confirm``) and the validation/test caveat. Interactive figures are Optuna's
plotly plots (plotly.js is embedded, no CDN); the PNGs are drawn with matplotlib.
"""

from __future__ import annotations

import contextlib
import html
import logging
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space import SearchSpace, choice_label
from search.constraints import is_feasible
from search.study import records
from search.study.stopping import format_stop, stop_reason
from search.summary import broken_bounds, best_trial, closest_infeasible, format_counts, state_counts

log = logging.getLogger(__name__)

TOP_TRIALS = 5  # learning curves shown side by side
SECTIONS: dict[str, str] = {
    "summary": "Study summary",
    "history": "Optimisation history",
    "importance": "Parameter importances (fANOVA)",
    "slice": "Slice plot",
    "parallel": "Parallel coordinates",
    "learning-curves": "Learning curves of the top trials",
    "confusion": "Confusion matrix of the best trial",
    "strategy-effect": "Strategy vs. effect",
    "ablation": "Ablation: what each strategy was worth",
    "confirmed": "Seed-robust ranking of the top trials",
    "caveat": "Caveat: validation and test scores",
}


@dataclass
class Section:
    id: str
    title: str
    figure: Any = None  # a plotly Figure
    body: str = ""  # HTML: notes and tables
    png: Callable[[Path], None] | None = None  # draws this section's PNG with matplotlib

    def to_html(self) -> str:
        parts = [f'<section id="{self.id}">', f"<h2>{html.escape(self.title)}</h2>"]
        if self.body:
            parts.append(self.body)
        if self.figure is not None:
            self.figure.update_layout(title={"text": html.escape(self.title)})
            parts.append(self.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{self.id}",
                                             default_height="520px"))
        parts.append("</section>")
        return "\n".join(parts)


@dataclass
class Report:
    html: Path
    pngs: list[Path] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


class _Study:
    """The study's trials and the first objective, as every section needs them."""

    def __init__(self, study: optuna.Study, space: SearchSpace) -> None:
        self.study = study
        self.space = space
        self.trials = study.get_trials(deepcopy=False)
        self.complete = [t for t in self.trials if t.state == TrialState.COMPLETE and t.values]
        self.objective = space.objectives[0].name
        self.maximize = space.objectives[0].direction == "maximize"
        self.best = best_trial(study)

    def target(self, t: FrozenTrial) -> float:
        return t.values[0]

    def ranked(self) -> list[FrozenTrial]:
        return records.ranked(self.complete, self.maximize)

    @property
    def plot_kwargs(self) -> dict[str, Any]:
        return {"target": self.target, "target_name": self.objective}


# ----------------------------------------------------------------------------- sections


def _summary(s: _Study) -> Section:
    counts = state_counts(s.trials)
    rows = [("study", s.study.study_name), ("dataset", s.space.dataset.label),
            ("objectives", ", ".join(f"{o.name} ({o.direction}, validation split)" for o in s.space.objectives)),
            ("trials", format_counts(sorted(counts.items())) or "none")]
    stopped = format_stop(stop_reason(s.study))
    if stopped:
        rows.append(("stopped", stopped))
    infeasible = [t for t in s.complete if not is_feasible(t)]
    if s.space.constraints:
        rows.append(("constraints", ", ".join(f"{c.metric} {op} {v:g}" for c in s.space.constraints
                                              for op, v in c.bounds())
                     + f" (validation split): {len(s.complete) - len(infeasible)} of {len(s.complete)} completed "
                       "trials meet them"))
        near = closest_infeasible(s.study)
        if near is not None:
            rows.append(("no feasible trial", f"the closest is trial {near.number}: {broken_bounds(near)}"))
    if s.best is not None:
        values = ", ".join(f"{o.name} {v:.4f}" for o, v in zip(s.space.objectives, s.best.values))
        rows.append(("best trial", f"{s.best.number}: {values}"))
        rows.append(("its params", ", ".join(f"{k}={_short(v)}" for k, v in s.best.params.items()) or "none searched"))
        test = records.metrics(s.best, "test")
        if test:
            rows.append(("its test split", f"accuracy {test['accuracy']:.4f}, f1 (macro) {test['f1_macro']:.4f} "
                                           f"(n={test['n']}; see the caveat)"))
    body = _table(["", ""], rows, show_header=False, table_id="summary-table")
    if infeasible:
        body += _note("INFEASIBLE trials break the constraints: they are never the best, exported or confirmed.")
        body += _table(["trial", s.objective, "breaks"],
                       [(f"{t.number} INFEASIBLE", f"{t.values[0]:.4f}", broken_bounds(t)) for t in infeasible
                        if records.has_violations(t) or t.constraints],
                       table_id="infeasible-table")
    return Section("summary", SECTIONS["summary"], body=body)


def _history(s: _Study) -> Section:
    sec = Section("history", SECTIONS["history"])
    if not s.complete:
        sec.body = _note("no completed trial yet")
        return sec
    import plotly.graph_objects as go
    from optuna.visualization import matplotlib as mpl_vis
    from optuna.visualization import plot_optimization_history

    # Optuna draws its own best-value line only without a target, which several objectives need:
    # draw it here, on the first objective, in the direction the study optimises it.
    numbers, best = best_so_far(s)
    label = f"best {s.objective} so far"
    if len(s.space.objectives) > 1:
        sec.body = _note(f"the line is the best {s.objective} so far (the first objective); "
                         "the other objectives trade off against it on the Pareto front.")
    sec.figure = plot_optimization_history(s.study, **s.plot_kwargs)
    sec.figure.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name=label,
                                    line={"color": _COLOURS[3], "shape": "hv"}))

    def plot() -> Any:
        ax = mpl_vis.plot_optimization_history(s.study, **s.plot_kwargs)
        ax.plot(numbers, best, color=_COLOURS[3], label=label, drawstyle="steps-post")
        ax.legend()
        return ax

    sec.png = _optuna_png(plot)
    return sec


def best_so_far(s: _Study) -> tuple[list[int], list[float]]:
    """Trial numbers of the completed trials and the best first-objective value up to each."""
    numbers: list[int] = []
    best: list[float] = []
    pick = max if s.maximize else min
    for t in sorted(s.complete, key=lambda t: t.number):
        best.append(pick(best[-1], t.values[0]) if best else t.values[0])
        numbers.append(t.number)
    return numbers, best


def _importance(s: _Study) -> Section:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    sec = Section("importance", SECTIONS["importance"])
    varied = [p.name for p in s.space.params if p.kind != "fixed"]
    if len(s.complete) < 2 or not varied:
        why = "fewer than 2 completed trials" if len(s.complete) < 2 else "no searched params"
        sec.body = _note(f"fANOVA importances need at least 2 completed trials with searched params ({why}).")
        return sec
    try:
        importances = get_param_importances(s.study, evaluator=FanovaImportanceEvaluator(seed=0), target=s.target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        sec.body = _note(f"fANOVA importances could not be computed: {exc}")
        return sec
    if not importances:
        sec.body = _note("fANOVA found no param that varies across the completed trials.")
        return sec
    from optuna.visualization import matplotlib as mpl_vis
    from optuna.visualization import plot_param_importances

    sec.body = _note(f"fANOVA over {len(s.complete)} completed trials (target: {s.objective}); only params "
                     "present in every completed trial take part. Few trials make these estimates rough.")
    sec.figure = plot_param_importances(s.study, evaluator=FanovaImportanceEvaluator(seed=0), **s.plot_kwargs)
    sec.png = _optuna_png(lambda: mpl_vis.plot_param_importances(
        s.study, evaluator=FanovaImportanceEvaluator(seed=0), **s.plot_kwargs))
    return sec


def _param_plot(s: _Study, section_id: str, plot_name: str) -> Section:
    """An Optuna param plot (plotly for the page, matplotlib for the PNG) once params were searched."""
    sec = Section(section_id, SECTIONS[section_id])
    if not s.complete or not s.complete[0].params:
        sec.body = _note("no completed trial with searched params yet")
        return sec
    import optuna.visualization as vis
    from optuna.visualization import matplotlib as mpl_vis

    sec.figure = getattr(vis, plot_name)(s.study, **s.plot_kwargs)
    sec.png = _optuna_png(lambda: getattr(mpl_vis, plot_name)(s.study, **s.plot_kwargs))
    return sec


def _slice(s: _Study) -> Section:
    return _param_plot(s, "slice", "plot_slice")


def _parallel(s: _Study) -> Section:
    return _param_plot(s, "parallel", "plot_parallel_coordinate")


def _learning_curves(s: _Study) -> Section:
    sec = Section("learning-curves", SECTIONS["learning-curves"])
    top = [t for t in s.ranked() if records.history(t)][:TOP_TRIALS]
    if not top:
        sec.body = _note("no completed trial with a training history yet")
        return sec
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metric = f"validation {s.objective}"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", metric))
    for i, t in enumerate(top):
        hist = records.history(t)
        epochs = [h["epoch"] for h in hist]
        name = f"trial {t.number} ({s.objective} {t.values[0]:.4f})"
        colour = _COLOURS[i % len(_COLOURS)]
        fig.add_trace(go.Scatter(x=epochs, y=[h["train_loss"] for h in hist], mode="lines+markers", name=name,
                                 legendgroup=name, line={"color": colour}), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=[h["value"] for h in hist], mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=False, line={"color": colour}), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    sec.body = _note(f"the {len(top)} best completed trials by {metric}; per-epoch values as recorded during the search.")
    sec.figure = fig

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        f, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        for i, t in enumerate(top):
            hist = records.history(t)
            epochs = [h["epoch"] for h in hist]
            label = f"trial {t.number}"
            a.plot(epochs, [h["train_loss"] for h in hist], marker="o", color=_COLOURS[i % len(_COLOURS)], label=label)
            b.plot(epochs, [h["value"] for h in hist], marker="o", color=_COLOURS[i % len(_COLOURS)], label=label)
        from matplotlib.ticker import MaxNLocator

        for ax, title in ((a, "training loss"), (b, metric)):
            ax.set(title=title, xlabel="epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        b.legend()
        f.suptitle(SECTIONS["learning-curves"])
        _save(f, path)

    sec.png = draw
    return sec


def _confusion(s: _Study) -> Section:
    sec = Section("confusion", SECTIONS["confusion"])
    best = s.best
    splits = [(name, records.metrics(best, name)) for name in ("validation", "test")] if best is not None else []
    splits = [(name, m) for name, m in splits if m and m.get("confusion")]
    if not splits:
        sec.body = _note("no completed trial with metrics yet")
        return sec
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sec.title = f"{SECTIONS['confusion']} (trial {best.number})"
    classes = list(splits[0][1]["per_class"])
    fig = make_subplots(rows=1, cols=len(splits),
                        subplot_titles=[f"{n} split (n={m['n']}, accuracy {m['accuracy']:.4f})" for n, m in splits])
    for i, (_, m) in enumerate(splits, start=1):
        fig.add_trace(go.Heatmap(z=m["confusion"], x=classes, y=classes, colorscale="Blues", showscale=False,
                                 texttemplate="%{z}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="predicted", type="category", row=1, col=i)
        fig.update_yaxes(title_text="true", type="category", autorange="reversed", row=1, col=i)
    sec.body = _note("rows: true class, columns: predicted class.")
    sec.figure = fig

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        f, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 5), squeeze=False)
        for ax, (name, m) in zip(axes[0], splits):
            ax.imshow(m["confusion"], cmap="Blues")
            ax.grid(False)
            top = max(max(row) for row in m["confusion"]) or 1
            for r, row in enumerate(m["confusion"]):
                for c, n in enumerate(row):
                    ax.text(c, r, str(n), ha="center", va="center", fontsize=8,
                            color="white" if n > top / 2 else "black")
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
            ax.set_yticks(range(len(classes)), classes)
            ax.set(title=f"{name} split (n={m['n']})", xlabel="predicted", ylabel="true")
        f.suptitle(sec.title)
        _save(f, path)

    sec.png = draw
    return sec


def strategy_effect(s: _Study) -> list[dict[str, Any]]:
    """For each categorical param and each of its choices: trials, best and median objective."""
    rows: list[dict[str, Any]] = []
    for p in s.space.params:
        if p.kind != "choices":
            continue
        for choice in p.choices:
            label = choice_label(choice)
            used = [t for t in s.trials if p.name in t.params and t.params[p.name] == label]
            values = [t.values[0] for t in used if t.state == TrialState.COMPLETE and t.values]
            pick = max if s.maximize else min
            rows.append({
                "param": p.name, "choice": str(label), "trials": len(used), "complete": len(values),
                "pruned_or_failed": sum(t.state in (TrialState.PRUNED, TrialState.FAIL) for t in used),
                "best": pick(values) if values else None,
                "median": statistics.median(values) if values else None,
            })
    return rows


def _strategy_effect(s: _Study) -> Section:
    sec = Section("strategy-effect", SECTIONS["strategy-effect"])
    rows = strategy_effect(s)
    if not rows:
        sec.body = _note("the space has no categorical strategy choice ({choices: [...]})")
        return sec
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table = _table(["param", "choice", "trials", "completed", "pruned/failed", f"best {s.objective}",
                    f"median {s.objective}"],
                   [(r["param"], r["choice"], r["trials"], r["complete"], r["pruned_or_failed"], fmt(r["best"]),
                     fmt(r["median"])) for r in rows], table_id="strategy-effect-table")
    sec.body = _note(f"for each categorical choice, the best and median validation {s.objective} of the completed "
                     "trials that used it. Choices share trials with every other param, so read this as "
                     "association, not a controlled comparison.") + table
    return sec


def _caveat(s: _Study) -> Section:
    test = records.metrics(s.best, "test") if s.best is not None else None
    text = ("Objective values are measured on the validation split, which was used to select the best "
            "trial, so they are optimistic. ")
    if test:
        text += (f"The best trial's test accuracy ({test['accuracy']:.4f} on n={test['n']} images) was never used "
                 "for selection, but it holds for that test set only: ")
    else:
        text += "Test metrics, where recorded, were never used for selection, but they hold for that test set only: "
    text += "other data (other cameras, lighting, class balance, time) can score differently."
    return Section("caveat", SECTIONS["caveat"], body=f"<p>{html.escape(text)}</p>")


def _interval_chart(labels: list[str], centres: list[float], intervals: list[list[float] | None],
                    axis: str) -> tuple[Any, list[float], list[float]]:
    """Horizontal points with 95% error bars (plotly for the page, matplotlib for the PNG)."""
    import plotly.graph_objects as go

    lo = [c - i[0] if i else 0.0 for c, i in zip(centres, intervals)]
    hi = [i[1] - c if i else 0.0 for c, i in zip(centres, intervals)]
    fig = go.Figure(go.Scatter(x=centres, y=labels, mode="markers",
                               error_x={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    fig.update_xaxes(title_text=axis)
    fig.update_yaxes(autorange="reversed")
    return fig, lo, hi


def _ablation(s: _Study) -> Section:
    sec = Section("ablation", SECTIONS["ablation"])
    record = records.ablation(s.study)
    rows = [r for r in (record or {}).get("rows", []) if r.get("delta") is not None]
    if not rows:
        sec.body = _note(f"no ablation stored; run: strategy-search ablate {s.study.study_name}")
        return sec
    labels = [f"{r['param']}: {choice_label(r['best'])} -> {choice_label(r['switched_to'])}" for r in rows]
    deltas = [r["delta"] for r in rows]
    fig, lo, hi = _interval_chart(labels, deltas, [r.get("ci95") for r in rows],
                                  f"change in validation {record['objective']} (variant - best config)")
    fig.add_vline(x=0.0, line_dash="dash")
    sec.figure = fig
    sec.body = _note(f"trial {record['trial']} re-trained with each strategy switched off, over {len(record['seeds'])} "
                     f"seeds; bars are {record['interval']} at {record['confidence']:.0%}. A bar that does not "
                     "cross 0 marks a strategy that really mattered.") + _table(
        ["strategy switched off", "delta", "95% CI", "verdict"],
        [(lab, f"{r['delta']:+.4f}", f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]", r.get("verdict", "-"))
         for lab, r in zip(labels, rows)], table_id="ablation-table")
    sec.png = _errorbar_png(labels, deltas, lo, hi, SECTIONS["ablation"], zero_line=True)
    return sec


def _confirmed(s: _Study) -> Section:
    sec = Section("confirmed", SECTIONS["confirmed"])
    record = records.confirmed(s.study)
    rows = [r for r in (record or {}).get("rows", []) if r.get("mean") is not None]
    if not rows:
        sec.body = _note(f"no confirmation stored; run: strategy-search confirm {s.study.study_name}")
        return sec
    labels = [f"#{r['rank']} trial {r['trial']}" for r in rows]
    means = [r["mean"] for r in rows]
    fig, lo, hi = _interval_chart(labels, means, [r.get("ci95") for r in rows],
                                  f"validation {record['objective']}: mean over {len(record['seeds'])} fresh seeds")
    import plotly.graph_objects as go

    fig.data[0].name = "mean over seeds (95% CI)"
    fig.add_trace(go.Scatter(x=[r["original"] for r in rows], y=labels, mode="markers", marker_symbol="x",
                             name="single run during the search"))
    sec.figure = fig
    sec.body = _note(f"winner: trial {record['winner']}" + (
        f" (the single-run best was trial {record['single_run_best']})" if record.get("changed") else ""))
    sec.png = _errorbar_png(labels, means, lo, hi, SECTIONS["confirmed"], zero_line=False,
                            extra=[r["original"] for r in rows])
    return sec


def _errorbar_png(labels: list[str], centres: list[float], lo: list[float], hi: list[float], title: str, *,
                  zero_line: bool, extra: list[float] | None = None) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        f, ax = plt.subplots(figsize=(9, 0.5 * len(labels) + 1.5))
        ys = list(range(len(labels)))
        ax.errorbar(centres, ys, xerr=[lo, hi], fmt="o", capsize=4, label="mean (95% CI)")
        if extra is not None:
            ax.plot(extra, ys, "x", label="single run during the search")
            ax.legend()
        if zero_line:
            ax.axvline(0.0, linestyle="--", color="gray")
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        ax.set_title(title)
        _save(f, path)

    return draw


BUILDERS = (_summary, _history, _importance, _slice, _parallel, _learning_curves, _confusion, _strategy_effect,
            _ablation, _confirmed, _caveat)


# ----------------------------------------------------------------------------- output


def build_sections(study: optuna.Study, space: SearchSpace) -> list[Section]:
    s = _Study(study, space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return [build(s) for build in BUILDERS]


def write_report(study: optuna.Study, space: SearchSpace, path: str | Path, *, png: bool = True) -> Report:
    """Write ``path`` (HTML) and, with ``png``, ``<stem>_png/<section>.png`` beside it."""
    from plotly.offline import get_plotlyjs

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = build_sections(study, space)
    title = f"strategy-search report: {study.study_name}"
    doc = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav><ul>" + "".join(f'<li><a href="#{sec.id}">{html.escape(sec.title)}</a></li>' for sec in sections)
        + "</ul></nav>",
        *(sec.to_html() for sec in sections),
        "</body></html>",
    ])
    out.write_text(doc, encoding="utf-8")
    report = Report(out, sections=[sec.id for sec in sections])
    if png:
        folder = out.with_name(f"{out.stem}_png")
        folder.mkdir(exist_ok=True)
        for sec in sections:
            if sec.png is None:
                continue
            target = folder / f"{sec.id}.png"
            try:
                with warnings.catch_warnings(), _quiet("matplotlib.category"):
                    warnings.simplefilter("ignore")
                    # Numeric-looking choices (batch_size 32, 64) are categories on purpose: Optuna's
                    # plots pass them as strings, and matplotlib notes that on every axis.
                    sec.png(target)
            except Exception as exc:  # noqa: BLE001 - a PNG that cannot be drawn must not lose the HTML report
                report.notes.append(f"{target.name}: not drawn ({type(exc).__name__}: {exc})")
                log.warning(report.notes[-1])
            else:
                report.pngs.append(target)
    return report


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Drop ``logger``'s records below WARNING for a while."""
    target = logging.getLogger(logger)
    previous = target.level
    target.setLevel(logging.WARNING)
    try:
        yield
    finally:
        target.setLevel(previous)


def _optuna_png(plot: Callable[[], Any]) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        ax = plot()
        fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
        _save(fig, path)

    return draw


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(columns: list[str], rows: list[tuple[Any, ...]], *, show_header: bool = True, table_id: str = "") -> str:
    esc = lambda v: html.escape(str(v))  # noqa: E731
    out = [f'<table id="{table_id}">' if table_id else "<table>"]
    if show_header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in columns) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
section { margin: 2.5em 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
.note { color: #555; } nav ul { columns: 2; }
"""
