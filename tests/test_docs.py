"""The README is a front door into docs/: every relative link in it leads somewhere.

(MkDocs checks the links between docs pages: `mkdocs build --strict` in .ci/run. GitHub renders the
README from the repository, where nothing checks its links but this test.)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """A heading's anchor as MkDocs (Python-Markdown's toc) writes it."""
    from markdown.extensions.toc import slugify

    return slugify(re.sub(r"^#+ ", "", heading).replace("`", ""), "-")


def broken_links(markdown: str, base: Path) -> list[str]:
    """Relative links of ``markdown`` (a file in ``base``) whose file or #anchor does not exist."""
    broken = []
    for _, target in LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (base / path) if path else None
        if file is not None and not file.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor:
            text = file.read_text(encoding="utf-8") if file is not None else markdown
            if anchor not in {_slug(h) for h in re.findall(r"^#{1,6} .*$", text, re.M)}:
                broken.append(f"{target}: no heading #{anchor}")
    return broken


def test_readme_links_lead_to_docs_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [t for _, t in LINK.findall(readme) if not t.startswith("http")]
    assert len([t for t in links if t.startswith("docs/")]) >= 20, "the README should link into docs/"
    assert broken_links(readme, ROOT) == []


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Real section\n", encoding="utf-8")
    text = "[ok](docs/a.md) [ok](docs/a.md#real-section) [gone](docs/b.md) [no](docs/a.md#nope) [web](https://x.org)"
    assert broken_links(text, tmp_path) == ["docs/b.md: no such file", "docs/a.md#nope: no heading #nope"]
