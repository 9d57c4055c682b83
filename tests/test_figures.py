"""Every figure quoted in README.md, the docs pages and RESULTS.md's summary comes from a result file
(benchmarks/check_figures.py), and the check itself catches what it should."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.check_figures import backed, check, figures, quoting_pages

MACHINE = {"date": "2026-12-02T10:00:00+00:00", "cpu": "test CPU", "nproc": 2, "torch": "2.14.1", "optuna": "5.1.0"}


def test_every_quoted_figure_is_backed_by_a_result_file() -> None:
    assert check() == []


def _results(tmp_path: Path, **files: dict) -> Path:
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    return tmp_path


def _summary(*rows: str) -> str:
    return "\n".join(["# Results", "", "## Summary", "", "| # | measure | result | | source |",
                      "| --- | --- | --- | --- | --- |", *rows, "", "## 1. Details", "", "| a | b |", "| - | - |"])


def test_figures_are_the_numbers_in_bold() -> None:
    assert figures("cache **2,823**/s; PNG 2,041/s (**0.723x**); **44%** saved; **>= 3.08x**; w64, bf16") == \
        ["2,823", "0.723", "44%", "3.08"]
    assert figures("**missed** at 60 trials") == []


@pytest.mark.parametrize(("figure", "values", "ok"), [
    ("0.92", [0.9214], True), ("0.92", [0.9149], False), ("2,823", [2822.58], True), ("44%", [0.4368], True),
    ("44%", [43.6], True), ("44", [0.44], False), ("3.00", [3.0], True), ("1.10", [1.1049], True),
    ("1.10", [1.106], False), ("56", [56.14], True), ("6.04", [6.953, 5.712, 6.04], True),
])
def test_a_figure_is_backed_when_a_value_rounds_to_it(figure: str, values: list[float], ok: bool) -> None:
    assert backed(figure, values) is ok


def test_the_check_catches_every_kind_of_unbacked_figure(tmp_path: Path) -> None:
    results = _results(tmp_path, good={"machine": MACHINE, "summary": {"ratio": 1.2468, "n": 51}, "raw": [3.71]},
                       bare={"summary": {"ratio": 2.0}},
                       vague={"machine": {**MACHINE, "cpu": None}, "x": 5.0})
    fine = _summary("| 1 | ratio | **1.25x** (**51** epochs) | met | `good.json` |")
    assert check(fine, "", results) == []
    assert check(fine, "README quotes **1.25x**.", results) == []
    problems = check(_summary(
        "| 1 | ratio | **1.25x**; **1.3** | met | `good.json` |",            # 1.3 is in no file
        "| 2 | ratio | **3.71** | met | `good.json#summary` |",               # only under summary
        "| 3 | ratio | **2.0** | met | |",                                    # no source
        "| 4 | ratio | **2.0** | met | `bare.json` |",                         # no machine block
        "| 5 | ratio | **5.0** | met | `vague.json` |",                        # a null field, unexplained
        "| 6 | ratio | **7** | met | `missing.json` |",                        # no such file
        "| 7 | ratio | 9.99 (not bold: a setting) | met | |",
    ), "README says **0.99** without a source.", results)
    text = "\n".join(problems)
    assert "1.3 is in none of good.json" in text and "1.25" not in text.replace("1.25x**; **1.3", "")
    assert "3.71 is in none of good.json#summary" in text
    assert "row '3 | ratio': figures ['2.0'] but no source file" in text
    assert "bare.json: no machine block" in text
    assert "vague.json: machine block has no cpu and no note saying why" in text
    assert "missing.json: not a readable JSON file" in text
    assert "9.99" not in text
    assert "README.md: **0.99** is not a figure of RESULTS.md's summary table" in text
    assert "7 is in none of missing.json" in text
    assert len(problems) == 8, problems
    vague_but_said = _results(tmp_path, vague={"machine": {**MACHINE, "cpu": None, "note": "not recorded"}, "x": 5.0})
    assert check(_summary("| 5 | ratio | **5.0** | met | `vague.json` |"), "", vague_but_said) == []


def test_the_docs_pages_are_checked_too(tmp_path: Path) -> None:
    """A figure in a documentation page must be a summary figure, as one in the README must."""
    pages = quoting_pages()
    assert "README.md" in pages and "docs/how-to/datasets.md" in pages and "docs/index.md" in pages
    results = _results(tmp_path, good={"machine": MACHINE, "summary": {"ratio": 1.2468}})
    fine = _summary("| 1 | ratio | **1.25x** | met | `good.json` |")
    assert check(fine, results_dir=results, pages={"README.md": "", "docs/a.md": "**1.25x** faster"}) == []
    assert check(fine, results_dir=results, pages={"README.md": "", "docs/how-to/a.md": "**2.5x** faster"}) == \
        ["docs/how-to/a.md: **2.5** is not a figure of RESULTS.md's summary table"]
