"""Shared fixtures: tiny spaces on small built-in data, a clean working directory."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]

# Keep tests on the CPU and quiet about threads: CI has 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Nothing in the tests downloads: timm/huggingface_hub read this when first imported (after this file).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_space(study: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A search space that trains a handful of tiny CNNs on part of digits in seconds."""
    doc: dict[str, Any] = {
        "study": study,
        "objective": "accuracy",
        "dataset": {"name": "digits", "limit": 400},
        "budget": {"n_trials": 4, "max_epochs": 3},
        "sampler": "random",
        "pruner": "none",
        "seed": 0,
        "params": {
            "lr": {"float": [0.001, 0.05], "log": True},
            "batch_size": {"choices": [32, 64]},
            "optimizer": {"choices": ["adamw", "sgd"]},
            "width": 4,
            "depth": 2,
        },
    }
    for key, value in overrides.items():
        doc[key] = value
    return doc


def write_space(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def running_trial(study: str, storage: str, proc: subprocess.Popen[str], *, max_epochs: int,
                  claimed: bool = False, poll: float = 0.05, timeout: float = 120.0) -> FrozenTrial:
    """A RUNNING trial of ``study`` in its first epochs (1 to ``max_epochs`` reported), while ``proc``
    (the command training it) is still alive; with ``claimed``, one whose worker has marked it."""
    from search import records

    sqlite_file = make_url(storage).database if storage.startswith("sqlite") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        trials: list[FrozenTrial] = []
        # Reading a SQLite file that does not exist yet would create it under the command's feet.
        if sqlite_file is None or Path(sqlite_file).exists():
            try:
                trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):
                # Not created yet, or the command is creating the schema right now (both sides insert the
                # alembic version of a new file: this reader may lose the race; the command retries).
                pass
        for t in trials:
            if t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= max_epochs \
                    and (not claimed or records.worker(t) is not None):
                return t
        time.sleep(poll)
    raise AssertionError(f"no trial of {study!r} was seen in its first {max_epochs} epochs")


@pytest.fixture(autouse=True)
def _dataset_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's dataset cache in one session temp folder, never ~/.cache (shared across tests, as on
    a machine: the built-ins are decoded once per session)."""
    root = tmp_path_factory.getbasetemp() / "dataset-cache"
    monkeypatch.setenv("STRATEGY_SEARCH_CACHE", str(root))
    return root


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temp dir so the default sqlite:///studies.db lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRATEGY_SEARCH_STORAGE", raising=False)
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bomb_png(path: Path) -> None:
    """A valid PNG header claiming 20000x20000 pixels: PIL refuses it as a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
