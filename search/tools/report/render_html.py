"""The page's renderer: text blocks as HTML, figure data as interactive plotly figures."""

from __future__ import annotations

import base64
import html
from typing import Any

from search.tools.report.data import (Block, Confusion, Curves, Image, Intervals, ObjectiveCurves, OptunaPlot, Pareto,
                                      Slices, Table, Text)

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def blocks(items: list[Block]) -> str:
    return "".join(text(b) if isinstance(b, Text) else image(b) if isinstance(b, Image) else table(b) for b in items)


def image(block: Image) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    return f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def text(block: Text) -> str:
    return f'<p class="note">{html.escape(block.text)}</p>' if block.note else f"<p>{html.escape(block.text)}</p>"


def table(t: Table) -> str:
    esc = lambda v: html.escape(str(v))  # noqa: E731
    out = [f'<table id="{t.table_id}">' if t.table_id else "<table>"]
    if t.caption:
        out.append(f"<caption>{esc(t.caption)}</caption>")
    if t.show_header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in t.columns) + "</tr>")
    for row in t.rows:
        out.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def optuna_plot(data: OptunaPlot) -> Any:
    import optuna.visualization as vis

    fig = getattr(vis, data.name)(data.study, **optuna_kwargs(data))
    if data.line is not None:
        import plotly.graph_objects as go

        fig.add_trace(go.Scatter(x=data.line.x, y=data.line.y, mode="lines", name=data.line.label,
                                 line={"color": COLORS[3], "shape": "hv"}))
    return fig


def optuna_kwargs(data: OptunaPlot) -> dict[str, Any]:
    """The keyword arguments of Optuna's plot function (the same for its plotly and matplotlib twin)."""
    kwargs: dict[str, Any] = {"target": data.target, "target_name": data.target_name}
    if data.fanova_seed is not None:
        from optuna.importance import FanovaImportanceEvaluator

        kwargs["evaluator"] = FanovaImportanceEvaluator(seed=data.fanova_seed)
    return kwargs


def curves(data: Curves) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", data.metric))
    for i, c in enumerate(data.curves):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=c.epochs, y=c.train_loss, mode="lines+markers", name=c.name,
                                 legendgroup=c.name, line={"color": color}), row=1, col=1)
        fig.add_trace(go.Scatter(x=c.epochs, y=c.value, mode="lines+markers", name=c.name,
                                 legendgroup=c.name, showlegend=False, line={"color": color}), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return fig


def confusion(data: Confusion) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    classes = data.classes
    fig = make_subplots(rows=1, cols=len(data.splits),
                        subplot_titles=[f"{s.name} split (n={s.n}, accuracy {s.accuracy:.4f})" for s in data.splits])
    for i, s in enumerate(data.splits, start=1):
        fig.add_trace(go.Heatmap(z=s.confusion, x=classes, y=classes, colorscale="Blues", showscale=False,
                                 texttemplate="%{z}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="predicted", type="category", row=1, col=i)
        fig.update_yaxes(title_text="true", type="category", autorange="reversed", row=1, col=i)
    return fig


def intervals(data: Intervals) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=data.centers, y=data.labels, mode="markers",
                               error_x={"type": "data", "symmetric": False, "array": data.hi, "arrayminus": data.lo}))
    fig.update_xaxes(title_text=data.axis)
    fig.update_yaxes(autorange="reversed")
    if data.zero_line:
        fig.add_vline(x=0.0, line_dash="dash")
    if data.center_name is not None:
        fig.data[0].name = data.center_name
    if data.extra is not None:
        fig.add_trace(go.Scatter(x=data.extra, y=data.labels, mode="markers", marker_symbol="x",
                                 name="single run during the search"))
    return fig


SLICE_ROW_HEIGHT = 300  # px per row of slice panels


def slices(data: Slices) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = min(data.columns, len(data.panels))
    fig = make_subplots(rows=data.rows, cols=cols, subplot_titles=[p.param for p in data.panels],
                        vertical_spacing=min(0.15, 0.4 / data.rows), horizontal_spacing=0.06)
    last = max((max(p.trials) for p in data.panels if p.trials), default=0)
    for i, p in enumerate(data.panels):
        row, col = i // cols + 1, i % cols + 1
        x = [str(v) for v in p.x] if p.categorical else p.x
        fig.add_trace(go.Scatter(x=x, y=p.y, mode="markers", showlegend=False, name=p.param,
                                 text=[f"trial {n}" for n in p.trials],
                                 hovertemplate=f"%{{text}}<br>{p.param}=%{{x}}<br>{data.metric}=%{{y:.4f}}<extra></extra>",
                                 marker={"color": p.trials, "colorscale": "Blues", "cmin": -0.3 * max(1, last), "cmax": max(1, last),
                                         "line": {"color": "Grey", "width": 0.5},
                                         "showscale": i == 0, "colorbar": {"title": "trial"}}),
                      row=row, col=col)
        fig.update_xaxes(type="category" if p.categorical else ("log" if p.log else "linear"), row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=data.metric, row=row, col=col)
    fig.update_layout(height=max(420, 120 + SLICE_ROW_HEIGHT * data.rows))
    return fig


# How each kind of trial looks on the Pareto plot and the per-objective curves (both renderers).
KIND_STYLE = {
    "front": {"color": COLORS[0], "marker": "circle", "name": "Pareto front"},
    "complete": {"color": "#9a9a9a", "marker": "circle-open", "name": "completed"},
    "infeasible": {"color": "#cccccc", "marker": "diamond-open", "name": "infeasible"},
    "pruned": {"color": COLORS[3], "marker": "x", "name": "pruned (values when stopped)"},
    "running": {"color": COLORS[2], "marker": "circle-open", "name": "running"},
}


def pareto(data: Pareto) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind, style in KIND_STYLE.items():
        points = sorted((p for p in data.points if p.kind == kind), key=lambda p: p.values[0])
        if not points:
            continue
        fig.add_trace(go.Scatter(x=[p.values[0] for p in points], y=[p.values[1] for p in points],
                                 mode="lines+markers" if kind == "front" else "markers", name=style["name"],
                                 text=[p.label for p in points], hovertemplate="%{text}: %{x}, %{y}<extra></extra>",
                                 marker={"symbol": style["marker"], "color": style["color"], "size": 9},
                                 line={"color": style["color"], "shape": data.staircase}))
    fig.update_xaxes(title_text=data.axes[0])
    fig.update_yaxes(title_text=data.axes[1])
    return fig


def objective_curves(data: ObjectiveCurves) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(data.metrics), subplot_titles=data.metrics)
    for c in data.curves:
        style = KIND_STYLE.get(c.kind, KIND_STYLE["complete"])
        for col, metric in enumerate(data.metrics, start=1):
            symbols = ["circle"] * (len(c.steps) - 1) + ["x" if c.kind == "pruned" else "circle"]
            fig.add_trace(go.Scatter(x=c.steps, y=c.values[metric], mode="lines+markers", name=c.name,
                                     legendgroup=c.name, showlegend=col == 1,
                                     line={"color": style["color"], "dash": "dash" if c.kind == "pruned" else "solid",
                                           "width": 2 if c.kind == "front" else 1},
                                     marker={"symbol": symbols, "size": 5}), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    return fig
