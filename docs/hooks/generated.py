"""MkDocs hook: pages generated from the code, so they cannot go stale.

A page writes a marker on a line of its own and the build replaces it:

- ``<!-- generated: strategies -->``: the strategy catalogue, from the registry
  (``strategy-search strategies --markdown``).
- ``<!-- generated: optuna-internals -->``: the table of Optuna internals in
  ``search/storage/__init__.py``'s docstring.
- ``<!-- generated: results-summary -->``: the summary table of ``benchmarks/RESULTS.md``.

An unknown marker fails the build (``mkdocs build --strict`` in CI).
"""

from __future__ import annotations

import re

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


def _strategies() -> str:
    from search.tools.catalogue import catalogue, format_catalogue

    return format_catalogue(catalogue(), markdown=True)


def _optuna_internals() -> str:
    import search.storage

    doc = search.storage.__doc__ or ""
    table = [line for line in doc.splitlines() if line.startswith("|")]
    if not table:
        raise ValueError("search/storage/__init__.py's docstring has no table of Optuna internals")
    return "\n".join(table)


def _results_summary() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    after = text[text.index("## Summary"):].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    end = next((i for i in range(start, len(after)) if not after[i].startswith("|")), len(after))
    return "\n".join(after[start:end])


GENERATORS = {"strategies": _strategies, "optuna-internals": _optuna_internals, "results-summary": _results_summary}


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs' hook signature)
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: unknown generated block {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(fill, markdown)
