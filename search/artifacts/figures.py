"""Learning curves and confusion matrices as matplotlib figures, drawn with its object API.

A kept trial's pictures (uploaded to the artifact store by its worker) and the report's PNGs are
drawn by these two functions. No pyplot: a figure here never touches matplotlib's global state or
a GUI backend, so workers and threads can draw at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def learning_curves(curves: Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[float]]], metric: str,
                    title: str, val_loss: Sequence[float] | None = None) -> Any:
    """A figure: training loss (left) and ``metric`` (right) per epoch; ``curves`` are (label, epochs,
    loss, metric). ``val_loss``: the first curve's validation loss, dashed beside its training loss."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(11, 4)
    a, b = fig.subplots(1, 2)
    for i, (name, epochs, loss, value) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        a.plot(list(epochs), list(loss), marker="o", color=color, label=name)
        b.plot(list(epochs), list(value), marker="o", color=color, label=name)
        if i == 0 and val_loss is not None:
            a.plot(list(epochs), list(val_loss), marker="o", linestyle="--", color=color, label=f"{name} (validation)")
            a.legend()
    for ax, name in ((a, "training loss" if val_loss is None else "loss"), (b, metric)):
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.legend()
    fig.suptitle(title)
    return fig


def confusion(classes: Sequence[str], splits: Sequence[tuple[str, int, Sequence[Sequence[int]]]], title: str) -> Any:
    """A figure: one confusion matrix per split, ``splits`` as (name, n, matrix); rows true, columns predicted."""
    fig = _figure(5.5 * len(splits), 5)
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, (name, n, matrix) in zip(axes[0], splits):
        ax.imshow(matrix, cmap="Blues")
        ax.grid(False)
        top = max((max(row) for row in matrix if row), default=0) or 1
        for r, row in enumerate(matrix):
            for c, count in enumerate(row):
                ax.text(c, r, str(count), ha="center", va="center", fontsize=8,
                        color="white" if count > top / 2 else "black")
        ax.set_xticks(range(len(classes)), list(classes), rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), list(classes))
        ax.set(title=f"{name} split (n={n})", xlabel="predicted", ylabel="true")
    fig.suptitle(title)
    return fig


def save_png(fig: Any, path: str | Path) -> Path:
    fig.savefig(str(path), dpi=100, bbox_inches="tight")
    return Path(path)
