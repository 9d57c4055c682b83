"""The report computes each section once and both renderers (plotly page, matplotlib PNG) draw that data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import tiny_space
from search.tools import report
from search.tools.report import render_png
from search.tools.report.data import Confusion, Curves
from search.space.parse import parse_space
from search import records


def _study() -> tuple[optuna.Study, Any]:
    space = parse_space(tiny_space("render", params={"lr": {"float": [0.001, 0.05], "log": True}}))
    study = optuna.create_study(direction="maximize")
    dist = optuna.distributions.FloatDistribution(0.001, 0.05, log=True)
    for i, v in enumerate([0.5, 0.8, 0.7]):
        hist = [{"epoch": e, "train_loss": 1.0 / (e + i + 1), "value": v - 0.1 / e} for e in (1, 2, 3)]
        val = {"n": 10, "accuracy": v, "confusion": [[4, 1], [i, 5 - i]], "per_class": {"cat": {}, "dog": {}}}
        study.add_trial(optuna.create_trial(params={"lr": 0.01 + i / 1000}, distributions={"lr": dist}, values=[v],
                                            user_attrs={records.HISTORY: hist, records.VAL: val}))
    return study, space


def test_every_section_with_a_figure_names_both_renderers() -> None:
    assert list(report.SECTIONS) == [d.id for d in report.SECTION_DEFS]
    study, space = _study()
    view = report.StudyView(study, space)
    for d in report.SECTION_DEFS:
        data = d.compute(view, d.id, d.title)
        assert data.id == d.id and data.title.startswith(d.title)
        if data.figure is not None:
            assert d.plotly is not None and d.png is not None, d.id


@pytest.mark.parametrize("section_id", ["learning-curves", "confusion"])
def test_the_page_and_the_png_draw_the_same_data(section_id: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    study, space = _study()
    sec = report.build_section(section_id, report.StudyView(study, space))
    drawn: list[Any] = []
    monkeypatch.setattr(render_png, "save", lambda fig, path: drawn.append(fig))
    sec.png(tmp_path / "x.png")
    axes = drawn[0].axes
    data = sec.data.figure
    if isinstance(data, Curves):
        assert [c.trial for c in data.curves] == [1, 2, 0]  # best first
        page_values = [list(t.y) for t in sec.figure.data if t.xaxis == "x2"]
        png_values = [list(line.get_ydata()) for line in axes[1].lines]
        assert page_values == png_values == [c.value for c in data.curves]
    else:
        assert isinstance(data, Confusion) and sec.title.endswith("(trial 1)")
        assert [list(map(list, t.z)) for t in sec.figure.data] == [s.confusion for s in data.splits]
        assert [im.get_array().tolist() for ax in axes for im in ax.images] == [s.confusion for s in data.splits]
