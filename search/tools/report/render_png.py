"""The PNG renderer: the same figure data as the page, drawn with matplotlib (Optuna's plots with
``optuna.visualization.matplotlib``, the twin of what the page shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.artifacts import figures
from search.tools.report.data import Confusion, Curves, Intervals, ObjectiveCurves, OptunaPlot, Pareto, Slices
from search.tools.report.render_html import COLORS, KIND_STYLE, optuna_kwargs

# plotly marker names -> matplotlib's
_MARKERS = {"circle": "o", "circle-open": "o", "diamond-open": "D", "x": "x"}


def optuna_plot(data: OptunaPlot, title: str, path: Path) -> None:
    from optuna.visualization import matplotlib as mpl_vis

    ax = getattr(mpl_vis, data.name)(data.study, **optuna_kwargs(data))
    if data.line is not None:
        ax.plot(data.line.x, data.line.y, color=COLORS[3], label=data.line.label, drawstyle="steps-post")
        ax.legend()
    save(ax.flat[0].figure if hasattr(ax, "flat") else ax.figure, path)


def curves(data: Curves, title: str, path: Path) -> None:
    save(figures.learning_curves([(f"trial {c.trial}", c.epochs, c.train_loss, c.value) for c in data.curves],
                                 data.metric, title), path)


def confusion(data: Confusion, title: str, path: Path) -> None:
    save(figures.confusion(data.classes, [(s.name, s.n, s.confusion) for s in data.splits], title), path)


def intervals(data: Intervals, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(9, 0.5 * len(data.labels) + 1.5))
    ys = list(range(len(data.labels)))
    ax.errorbar(data.centers, ys, xerr=[data.lo, data.hi], fmt="o", capsize=4, label="mean (95% CI)")
    if data.extra is not None:
        ax.plot(data.extra, ys, "x", label="single run during the search")
        ax.legend()
    if data.zero_line:
        ax.axvline(0.0, linestyle="--", color="gray")
    ax.set_yticks(ys, data.labels)
    ax.invert_yaxis()
    ax.set_title(title)
    save(f, path)


def slices(data: Slices, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    cols = min(data.columns, len(data.panels))
    f, axes = plt.subplots(data.rows, cols, figsize=(3.6 * cols, 3.0 * data.rows), squeeze=False, sharey=True)
    last = max((max(p.trials) for p in data.panels if p.trials), default=1)
    for i, ax in enumerate(axes.flat):
        if i >= len(data.panels):
            ax.set_visible(False)
            continue
        p = data.panels[i]
        x = [str(v) for v in p.x] if p.categorical else p.x
        # (vmin below 0: the first trial is light blue, not white)
        ax.scatter(x, p.y, c=p.trials, cmap="Blues", vmin=-0.3 * max(1, last), vmax=max(1, last), edgecolors="grey",
                   linewidths=0.5)
        if p.log:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(p.param)
        if i % cols == 0:
            ax.set_ylabel(data.metric)
    f.suptitle(title)
    f.tight_layout()
    save(f, path)


def pareto(data: Pareto, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(8, 5.5))
    for kind, style in KIND_STYLE.items():
        points = sorted((p for p in data.points if p.kind == kind), key=lambda p: p.values[0])
        if not points:
            continue
        hollow = style["marker"].endswith("-open")
        ax.plot([p.values[0] for p in points], [p.values[1] for p in points], _MARKERS[style["marker"]],
                linestyle="-" if kind == "front" else "none", color=style["color"], label=style["name"],
                markerfacecolor="none" if hollow else style["color"],
                drawstyle="steps-pre" if data.staircase == "vh" else "steps-post")
    ax.set(xlabel=data.axes[0], ylabel=data.axes[1], title=title)
    ax.legend()
    save(f, path)


def objective_curves(data: ObjectiveCurves, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    f, axes = plt.subplots(1, len(data.metrics), figsize=(5.5 * len(data.metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], data.metrics):
        for c in data.curves:
            style = KIND_STYLE.get(c.kind, KIND_STYLE["complete"])
            ys = [float("nan") if v is None else v for v in c.values[metric]]
            ax.plot(c.steps, ys, color=style["color"], linestyle="--" if c.kind == "pruned" else "-",
                    linewidth=2 if c.kind == "front" else 1, marker="o", markersize=3,
                    label=c.name if c.kind == "front" else None)
            if c.kind == "pruned" and c.steps:
                ax.plot(c.steps[-1:], ys[-1:], "x", color=style["color"])
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(c.kind == "front" for c in data.curves):
        axes[0][0].legend(fontsize=8)
    f.suptitle(title, y=1.03)
    save(f, path)


def save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
