"""What a study stores: its attribute keys, and reading them back.

The study's space lives in its user attr ``space`` (so a worker needs only the study's name).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.space import parse_space
from search.spec import SearchSpace
from search.study.storage import open_storage

SPACE_ATTR = "space"


def load_study(name: str, storage: str | BaseStorage | None = None) -> tuple[optuna.Study, SearchSpace]:
    """Load a study and the space stored in it (a worker needs nothing else)."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        known = ", ".join(optuna.get_all_study_names(store)) or "none"
        raise UserError(f"no study named {name!r} in this storage; studies: {known}") from None
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        raise UserError(f"study {name!r} was not created by strategy-search (no stored space)")
    return study, parse_space(stored, source=f"study {name!r}")


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """How many trials are in each state, by state name (COMPLETE, PRUNED, ...)."""
    return dict(Counter(t.state.name for t in trials))


def format_counts(counts: Iterable[tuple[str, int]]) -> str:
    """``complete 3, pruned 1`` from (state name, count) pairs, in the order given."""
    return ", ".join(f"{k.lower()} {v}" for k, v in counts)
