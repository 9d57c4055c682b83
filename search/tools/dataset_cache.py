"""``strategy-search cache``: build or check dataset cache entries ahead of a run, list and clear them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from search.data import cache
from search.data.datasets import clear_cache, load_dataset, source_for
from search.core.errors import UserError
from search.space.parse import parse_space
from search.strategies import PARAMS

log = logging.getLogger(__name__)


def _spec(dataset: Mapping[str, Any]) -> Any:
    return parse_space({"study": "cache", "dataset": dict(dataset)}, source="cache options",
                       base_dir=Path.cwd()).dataset


def _ints(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--input-size {text!r}: expected sizes like 64 or 64,128") from None
    low, high = PARAMS["input_size"].low, PARAMS["input_size"].high  # what a space may search
    if not sizes or any(s < low or s > high for s in sizes):
        raise UserError(f"--input-size {text!r}: sizes must be between {low:g} and {high:g} (as input_size in a "
                        "space file)")
    return list(sizes)


def build_or_check(dataset: Mapping[str, Any], sizes: str | None, aspects: str,
                   cache_dir: str | None = None, verify: bool = False) -> list[dict[str, Any]]:
    """Open (building where missing or damaged) each (size, aspect) entry, full checksum included.

    ``verify`` also decodes every image again and compares its pixels with the entry's (an image
    edited behind a restored size and mtime); an entry that differs is rebuilt.
    """
    spec = _spec(dataset)
    wanted = [a.strip() for a in aspects.split(",") if a.strip()]
    bad = [a for a in wanted if a not in ("stretch", "pad")]
    if bad or not wanted:
        raise UserError(f"--aspect {aspects!r}: allowed stretch, pad")
    source = source_for(spec)
    rows = []
    for size in _ints(sizes):
        for aspect in wanted:
            start = time.perf_counter()
            entry = cache.open_entry(source, size, aspect, cache_dir, full_check=True)
            state, changed = "built" if entry.built else "ok", []
            if verify and not entry.built:
                changed = cache.verify(entry, source)
                state = "verified"
                if changed:
                    cache.discard(entry)
                    clear_cache()
                    log.warning("%s: %d image(s) changed since the cache was built (%s%s); rebuilding it",
                                source.label, len(changed), ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "")
                    entry = cache.open_entry(source, size, aspect, cache_dir, full_check=True)
                    state = "rebuilt"
            load_dataset(spec, size, aspect, cache_dir)  # the same checks a run makes (classes, splits)
            m = entry.manifest
            rows.append({"dataset": source.label, "size": entry.size, "aspect": aspect, "images": m["shape"][0],
                         "skipped": m["skipped"], "bytes": m["bytes"], "path": str(entry.path),
                         "state": state, "changed": len(changed), "seconds": time.perf_counter() - start})
    return rows


def listing(cache_dir: str | None = None) -> list[dict[str, Any]]:
    return cache.list_entries(cache_dir)


def format_listing(rows: list[dict[str, Any]], cache_dir: str | None = None) -> str:
    root = cache.checked_root(cache_dir)
    if not rows:
        return f"dataset cache {root}: empty"
    lines = [f"dataset cache {root}: {sum(r['bytes'] for r in rows) / 1e6:.1f} MB"]
    for r in rows:
        parts = ", ".join(f"{e['size']}px {e['aspect']} ({e['images']} images)" for e in r["entries"])
        lines.append(f"  {r['bytes'] / 1e6:>10.1f} MB  {r['dataset']}  {parts or 'no complete entry'}")
    return "\n".join(lines)


def clear_entries(cache_dir: str | None, dataset: Mapping[str, Any] | None) -> tuple[int, str]:
    """Delete all entries, or one dataset's; (bytes freed, what was cleared)."""
    if dataset is None:
        return cache.clear(cache_dir), f"all datasets in {cache.checked_root(cache_dir)}"
    source = source_for(_spec(dataset))
    return cache.clear(cache_dir, source.slug), source.label
