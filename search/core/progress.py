"""Progress bars (tqdm) for epochs and trials, shown only when someone is watching.

Bars go to stderr and appear only when stderr is a terminal, so logs, CI and tests stay clean.
``STRATEGY_SEARCH_PROGRESS=1`` forces them on, ``=0`` off.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, TypeVar

from search.core.terminal import printable

T = TypeVar("T")

PROGRESS_ENV = "STRATEGY_SEARCH_PROGRESS"


def enabled() -> bool:
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """``tqdm(iterable)`` when bars are enabled, else ``iterable`` untouched."""
    if not enabled():
        return iterable
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    if isinstance(kwargs.get("desc"), str):  # a dataset's or study's name, from the user's files
        kwargs["desc"] = printable(kwargs["desc"])
    return tqdm(iterable, **kwargs)


class Bar:
    """A bar over a long piece of work, with log lines routed around it; no-op when disabled.

    ``eta=False`` drops tqdm's own rate and remaining time (which extrapolate from the units done
    so far) for callers that estimate the remaining time themselves and show it with :meth:`note`.
    """

    def __init__(self, total: int | None, initial: int = 0, *, desc: str, unit: str, eta: bool = True) -> None:
        self._bar: Any = None
        self._redirect: Any = None
        if not enabled():
            return
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        kwargs: dict[str, Any] = {} if eta else {
            "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"}
        self._bar = tqdm(total=total, initial=min(initial, total or initial), desc=printable(desc), unit=unit,
                         dynamic_ncols=True, **kwargs)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, text: str) -> None:
        """Text after the elapsed time (e.g. ``~12 min left``)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = None


class TrialBar(Bar):
    """A bar over a study's trial budget."""

    def __init__(self, total: int | None, initial: int, study: str) -> None:
        super().__init__(total, initial, desc=f"study {study}", unit="trial", eta=False)


def trial_bar(total: int | None, initial: int, study: str) -> TrialBar:
    return TrialBar(total, initial, study)
