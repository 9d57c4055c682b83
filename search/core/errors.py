"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave us (a file, a path, a URL, a study name) is wrong."""


class SpaceError(UserError):
    """A search-space file is invalid; the message names the file and the key path."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class DataError(UserError):
    """A dataset path or its contents cannot be used."""


class StorageError(UserError):
    """A storage URL is malformed or its database cannot be reached."""


class WeightsError(UserError):
    """Pretrained weights cannot be found, read or fetched."""
