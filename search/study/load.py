"""Opening a study of ours: the study and the space stored in it (a worker needs nothing else)."""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage

from search import records
from search.core.errors import UserError
from search.space.parse import parse_space
from search.core.spec import SearchSpace
from search.storage.backend import open_storage


def load_study(name: str, storage: str | BaseStorage | None = None) -> tuple[optuna.Study, SearchSpace]:
    """Load a study and the space stored in it (a worker needs nothing else)."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        known = ", ".join(optuna.get_all_study_names(store)) or "none"
        raise UserError(f"no study named {name!r} in this storage; studies: {known}") from None
    stored = records.stored_space(study)
    if stored is None:
        raise UserError(f"study {name!r} was not created by strategy-search (no stored space), or its creation "
                        "was interrupted: `strategy-search create SPACE` finishes it")
    return study, parse_space(stored, source=f"study {name!r}")
