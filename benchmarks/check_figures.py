"""Every figure quoted is backed by a result file: ``python -m benchmarks.check_figures``.

The rules (tests/test_figures.py runs this in CI):

* RESULTS.md's summary table (the first table under ``## Summary``) has a ``result`` and a
  ``source`` column. A measured figure in ``result`` is written in **bold**; every number in a bold
  span must appear in one of the row's source files: some number there rounds to it at the
  precision shown (``0.92`` matches 0.9214; ``44%`` matches 0.4368 or 43.6; thousands separators
  and signs like ``>=`` or ``x`` around it are ignored). Non-bold numbers are settings and counts.
* ``source`` names files of ``benchmarks/results/`` in backticks: ``name.json``, or
  ``name.json#key.key`` to match only under that part of the file (for big files, where a short
  figure could match some unrelated number by chance). A row whose result has no bold figure
  needs no source; one with a bold figure needs at least one.
* Every source file has a ``machine`` block with ``date``, ``cpu``, ``nproc``, ``torch`` and
  ``optuna``; a field the run did not record may be null only when ``machine.note`` says why.
* README.md and the documentation pages (``docs/**/*.md``) write their measured figures in bold
  too, and each must be one of the summary's bold figures (the README and the docs quote RESULTS,
  RESULTS quotes the files).

A new summary row needs only its JSON (with the machine block that ``benchmarks._common.machine``
writes) named in ``source``, and its figures in bold.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MACHINE_KEYS = ("date", "cpu", "nproc", "torch", "optuna")

BOLD = re.compile(r"\*\*(.+?)\*\*")
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)")
SOURCE = re.compile(r"`([^`]+?\.json)(?:#([^`]+))?`")


def figures(text: str) -> list[str]:
    """The numbers in the bold spans of ``text``, as written (``1,399``, ``0.92``, ``44%``)."""
    out = []
    for span in BOLD.findall(text):
        out += [m.group(0) for m in NUMBER.finditer(span)]
    return out


def _numbers(node: Any) -> Iterator[float]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _numbers(value)
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
        yield float(node)


def backed(figure: str, values: list[float]) -> bool:
    """Whether some value rounds to ``figure`` at the precision it is written with."""
    percent = figure.endswith("%")
    text = figure.rstrip("%").replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    target = float(text)
    for v in values:
        for scaled in ((v, v * 100) if percent else (v,)):
            if abs(round(scaled, decimals) - target) < 10 ** -(decimals + 6):
                return True
    return False


def summary_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table under ``## Summary``."""
    section = markdown.split("\n## Summary", 1)
    if len(section) < 2:
        raise ValueError("RESULTS.md has no '## Summary' section")
    lines = section[1].split("\n## ", 1)[0].splitlines()
    table = [line for line in lines if line.lstrip().startswith("|")]
    if len(table) < 3:
        raise ValueError("the summary has no table")
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    return [h.lower() for h in split(table[0])], [split(line) for line in table[2:]]


def _load(name: str, cache: dict[str, Any], problems: list[str], results_dir: Path) -> Any:
    if name not in cache:
        path = results_dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: not a readable JSON file in benchmarks/results ({exc})")
            data = None
        if data is not None:
            machine = data.get("machine") if isinstance(data, dict) else None
            if not isinstance(machine, dict):
                problems.append(f"{name}: no machine block")
            else:
                missing = [k for k in MACHINE_KEYS if k not in machine]
                unexplained = [k for k in MACHINE_KEYS if k in machine and machine[k] is None]
                if missing:
                    problems.append(f"{name}: machine block lacks {', '.join(missing)}")
                if unexplained and not machine.get("note"):
                    problems.append(f"{name}: machine block has no {', '.join(unexplained)} and no note saying why")
        cache[name] = data
    return cache[name]


def _part(data: Any, path: str | None) -> Any:
    for key in (path.split(".") if path else []):
        if isinstance(data, list) and key.isdigit():
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            raise KeyError(key)
    return data


def quoting_pages() -> dict[str, str]:
    """README.md and every documentation page, by path from the repository root: the text that quotes figures."""
    pages = {"README.md": README.read_text(encoding="utf-8")}
    for path in sorted(DOCS.rglob("*.md")):
        pages[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return pages


def check(results_md: str | None = None, readme: str | None = None, results_dir: Path = RESULTS_DIR,
          pages: dict[str, str] | None = None) -> list[str]:
    """Every problem found (empty: every quoted figure is backed). The arguments replace RESULTS.md's
    text, the quoting pages (``readme``: README.md's text alone; ``pages``: path -> text) and the
    results folder (for tests)."""
    problems: list[str] = []
    markdown = RESULTS_MD.read_text(encoding="utf-8") if results_md is None else results_md
    header, rows = summary_rows(markdown)
    for col in ("result", "source"):
        if col not in header:
            return [f"RESULTS.md summary table has no {col!r} column (columns: {header})"]
    result_at, source_at = header.index("result"), header.index("source")
    cache: dict[str, Any] = {}
    summary_figures: set[str] = set()
    for row in rows:
        label = " | ".join(row[: result_at])[:80]
        result = row[result_at] if result_at < len(row) else ""
        sources = SOURCE.findall(row[source_at]) if source_at < len(row) else []
        wanted = figures(result)
        summary_figures.update(f.replace(",", "") for f in wanted)
        if wanted and not sources:
            problems.append(f"summary row '{label}': figures {wanted} but no source file")
            continue
        values: list[float] = []
        for name, part in sources:
            data = _load(name, cache, problems, results_dir)
            if data is None:
                continue
            try:
                values += list(_numbers(_part(data, part)))
            except (KeyError, IndexError):
                problems.append(f"summary row '{label}': {name} has no part {part!r}")
        for figure in wanted:
            if not backed(figure, values):
                where = ", ".join(f"{n}#{p}" if p else n for n, p in sources)
                problems.append(f"summary row '{label}': {figure} is in none of {where}")
    if pages is None:
        pages = quoting_pages() if readme is None else {"README.md": readme}
    for name, text in pages.items():
        for figure in figures(text):
            if figure.replace(",", "") not in summary_figures:
                problems.append(f"{name}: **{figure}** is not a figure of RESULTS.md's summary table")
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print("every figure in RESULTS.md's summary, README.md and docs/ is backed by benchmarks/results/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
