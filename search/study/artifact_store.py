"""Opening a study's artifact store: the URL chosen once, at the command's boundary, and checked.

No torch here: the worker launcher opens the store once before it starts any worker.
"""

from __future__ import annotations

import logging
from typing import Any

from search.core.locations import Location, parse_location
from search.storage.backend import beside_storage, is_local_file

log = logging.getLogger(__name__)


def artifacts_location(explicit: str | None, space_url: str | None, storage_url: str | None) -> Location:
    """Where the study's trial files live: ``--artifacts`` (or $STRATEGY_SEARCH_ARTIFACTS, which the
    CLI reads into it), else the space's ``artifacts:`` (``space_url``), else ``artifacts/`` beside a
    SQLite or journal file, else ``./artifacts``."""
    if explicit:
        return parse_location(explicit)
    if space_url:
        return parse_location(space_url, what="the space's artifacts")
    return parse_location(str(beside_storage(storage_url, "artifacts")))


def open_artifacts(explicit: str | None, space_url: str | None, storage_url: str | None, *,
                   create: bool = False) -> Any:
    """The study's artifact store (an Optuna ``ArtifactStore``), opened and checked once.

    ``create``: a worker makes a missing directory. A worker whose storage other machines share
    but whose store is a directory nobody else sees is warned (export elsewhere would re-train).
    """
    from search.artifacts.store import open_store  # optuna.artifacts imports boto3: only when needed

    location = artifacts_location(explicit, space_url, storage_url)
    store = open_store(location, create=create)
    if create and location.scheme == "file" and not explicit and not space_url and not is_local_file(storage_url):
        log.warning("trial files go to %s on this machine only; with workers on several machines give every "
                    "one the same store (--artifacts s3://bucket/prefix, or artifacts: in the space)", location.url)
    return store
