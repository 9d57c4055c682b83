"""The PNG renderer: the same figure data as the page, drawn with matplotlib (Optuna's plots with
``optuna.visualization.matplotlib``, the twin of what the page shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.tools.report.data import Confusion, Curves, Intervals, ObjectiveCurves, OptunaPlot, Pareto
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
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    f, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, c in enumerate(data.curves):
        color = COLORS[i % len(COLORS)]
        a.plot(c.epochs, c.train_loss, marker="o", color=color, label=f"trial {c.trial}")
        b.plot(c.epochs, c.value, marker="o", color=color, label=f"trial {c.trial}")
    for ax, name in ((a, "training loss"), (b, data.metric)):
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.legend()
    f.suptitle(title)
    save(f, path)


def confusion(data: Confusion, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    classes = data.classes
    f, axes = plt.subplots(1, len(data.splits), figsize=(5.5 * len(data.splits), 5), squeeze=False)
    for ax, s in zip(axes[0], data.splits):
        ax.imshow(s.confusion, cmap="Blues")
        ax.grid(False)
        top = max(max(row) for row in s.confusion) or 1
        for r, row in enumerate(s.confusion):
            for c, n in enumerate(row):
                ax.text(c, r, str(n), ha="center", va="center", fontsize=8, color="white" if n > top / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set(title=f"{s.name} split (n={s.n})", xlabel="predicted", ylabel="true")
    f.suptitle(title)
    save(f, path)


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
