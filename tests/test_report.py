"""The study report: every named section and figure, offline HTML, PNGs, strategy-vs-effect numbers."""

from __future__ import annotations

import json
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import optuna
from click.testing import CliRunner
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from conftest import tiny_space, write_space
from search.cli import main
from search.tools.report import SECTIONS, write_report
from search.space.parse import parse_space
from search.study.runner import run_trials
from search.study.create import create_study

FIGURES = ("history", "importance", "slice", "parallel", "learning-curves", "confusion")


class _Tables(HTMLParser):
    """Rows of the table with a given id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", self.table_id) in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def _figure_titles(page: str) -> dict[str, str]:
    """div id -> layout title of each embedded plotly figure (decoded from its JSON)."""
    decoder = json.JSONDecoder()
    titles = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        _, end = decoder.raw_decode(page, match.end())  # the traces
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        titles[match.group(1)] = layout.get("title", {}).get("text", "")
    return titles


def test_report_of_a_small_real_study_has_every_section(workdir: Path) -> None:
    doc = tiny_space(
        "report", budget={"n_trials": 5, "max_epochs": 2}, dataset={"name": "digits", "limit": 300},
        params={"lr": {"float": [0.005, 0.05], "log": True}, "optimizer": {"choices": ["adamw", "sgd"]},
                "color": {"choices": ["rgb", "gray"]}, "width": 4},
    )
    space = write_space(workdir / "space.yaml", doc)
    result = CliRunner().invoke(main, ["run", str(space)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["report", "report", "-o", "out/report.html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sections: result, summary, leaderboard, history, pareto, importance" in result.output

    page = (workdir / "out" / "report.html").read_text(encoding="utf-8")
    for section_id, title in SECTIONS.items():
        assert f'<section id="{section_id}">' in page
        assert f"<h2>{title}" in page
    titles = _figure_titles(page)
    for section_id in FIGURES:
        assert titles.get(f"fig-{section_id}", "").startswith(SECTIONS[section_id]), (section_id, titles)
    # Offline: plotly.js is inline, no script is fetched.
    assert get_plotlyjs()[:2000] in page and "<script src=" not in page and "<link" not in page
    assert "holds for that test set only" in page

    study = optuna.load_study(study_name="report", storage="sqlite:///studies.db")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert f"(trial {study.best_trial.number})" in page
    for t in complete[:5]:
        assert f"trial {t.number} (accuracy {t.value:.4f})" in page  # its learning curve

    parser = _Tables("strategy-effect-table")
    parser.feed(page)
    header, *rows = parser.rows
    assert header[:2] == ["param", "choice"]
    assert {(r[0], r[1]) for r in rows} == {("optimizer", "adamw"), ("optimizer", "sgd"), ("color", "rgb"),
                                            ("color", "gray")}
    for param, choice, trials, completed, _, best, median in rows:
        values = [t.value for t in complete if t.params[param] == choice]
        assert int(completed) == len(values)
        assert int(trials) == sum(t.params.get(param) == choice for t in study.trials)
        assert best == (f"{max(values):.4f}" if values else "-")
        assert median == (f"{statistics.median(values):.4f}" if values else "-")

    pngs = workdir / "out" / "report_png"
    for section_id in FIGURES:
        data = (pngs / f"{section_id}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_report_with_one_trial_explains_missing_importances(tmp_path: Path) -> None:
    space = parse_space(tiny_space("one", budget={"n_trials": 1, "max_epochs": 1},
                                   dataset={"name": "digits", "limit": 300}))
    study = create_study(space, optuna.storages.InMemoryStorage())
    run_trials(study, space, device="cpu")
    report = write_report(study, space, tmp_path / "r.html", png=False)
    page = report.html.read_text(encoding="utf-8")
    assert report.sections == list(SECTIONS) and report.pngs == []
    assert "fANOVA importances need at least 2 completed trials" in page
    assert 'id="fig-importance"' not in page
    assert 'id="fig-history"' in page and 'id="fig-confusion"' in page
    assert not (tmp_path / "r_png").exists()
    json.dumps(report.notes)  # notes are plain strings
