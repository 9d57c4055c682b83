"""Build the sections (compute each once, render it for the page) and write the HTML file and PNGs."""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna

from search.tools.report import render_html
from search.tools.report.data import Image, SectionData, StudyView
from search.tools.report.sections import BY_ID, SECTION_DEFS, SectionDef
from search.core.errors import UserError
from search.core.spec import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class Section:
    """A section as rendered: page body and plotly figure, and how to draw its PNG."""

    id: str
    title: str
    figure: Any = None  # a plotly Figure
    body: str = ""  # HTML: notes and tables
    png: Callable[[Path], None] | None = None  # draws this section's PNG with matplotlib
    data: SectionData | None = None  # what both were drawn from

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


def render(definition: SectionDef, data: SectionData) -> Section:
    """``data`` rendered for the page (plotly now) and for a PNG (matplotlib, when drawn)."""
    sec = Section(data.id, data.title, body=render_html.blocks(data.blocks), data=data)
    if data.figure is not None and definition.plotly is not None:
        sec.figure = definition.plotly(data.figure)
    if data.figure is not None and definition.png is not None:
        sec.png = functools.partial(definition.png, data.figure, data.title)
    return sec


def build_section(section_id: str, view: StudyView) -> Section:
    """One section of the report of ``view``'s study, by id."""
    definition = BY_ID[section_id]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return render(definition, definition.compute(view, definition.id, definition.title))


def build_sections(study: optuna.Study, space: SearchSpace, artifacts: Any = None,
                   follow_records: bool = False) -> list[Section]:
    """Every section; ``artifacts`` (an Optuna artifact store) adds the kept trials' files and pictures
    (with ``follow_records``, from the store each trial recorded first: see ``TrialFiles``)."""
    files = None
    if artifacts is not None:
        from search.artifacts.trial_files import TrialFiles
        from search.storage import internals

        files = TrialFiles(artifacts, internals.storage_of(study), internals.study_id(study),
                           follow_records=follow_records)
    view = StudyView(study, space, files)
    return [build_section(d.id, view) for d in SECTION_DEFS]


def check_outputs(path: str | Path, png: bool, force: bool) -> tuple[Path, Path | None]:
    """(the HTML file, the PNG folder or None) the report may write; refused (:class:`UserError`, before
    anything is computed) when that would replace a file or fill a folder of the user's without ``force``."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"-o {out} is a directory; give the report's file name, e.g. {out / 'report.html'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write {out}: {parent} is a file, not a directory")
    if out.exists() and not force:
        raise UserError(f"{out} exists; add --force to overwrite it")
    folder = out.with_name(f"{out.stem}_png") if png else None
    if folder is not None and folder.exists():
        if not folder.is_dir():
            raise UserError(f"{folder} (the report's PNG folder) is a file; move it, or add --no-png")
        if any(folder.iterdir()) and not force:
            raise UserError(f"{folder} (the report's PNG folder) is not empty; add --force to write the report's "
                            "PNGs into it (files of the same name are replaced), or --no-png")
    return out, folder


def write_report(study: optuna.Study, space: SearchSpace, path: str | Path, *, png: bool = True,
                 artifacts: Any = None, follow_records: bool = False, force: bool = False) -> Report:
    """Write ``path`` (HTML) and, with ``png``, ``<stem>_png/<section>.png`` beside it; ``artifacts``
    (the study's artifact store) adds the kept trials' files and pictures.

    An existing file, or a non-empty PNG folder, is written over only with ``force``.
    """
    from plotly.offline import get_plotlyjs

    out, folder = check_outputs(path, png, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = build_sections(study, space, artifacts, follow_records)
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
    if folder is not None:
        _write_pngs(sections, folder, report)
    return report


def _write_pngs(sections: list[Section], folder: Path, report: Report) -> None:
    folder.mkdir(exist_ok=True)
    for sec in sections:
        for block in sec.data.blocks if sec.data is not None else []:
            if isinstance(block, Image):  # already a PNG (a trial's picture from the artifact store)
                (folder / block.name).write_bytes(block.png)
                report.pngs.append(folder / block.name)
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


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
section { margin: 2.5em 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
.note { color: #555; } nav ul { columns: 2; }
caption { text-align: left; font-weight: 600; padding: .6em 0 .3em; }
table { margin: .8em 0; } #result-table td:first-child { font-weight: 600; white-space: nowrap; }
"""
