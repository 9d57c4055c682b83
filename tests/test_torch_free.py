"""Validating a space, ``create`` and the strategy catalogue import no torch, torchvision or timm (issue 22).

Each check runs in a fresh interpreter (this one has long imported torch) and reads its ``sys.modules``
after the work is done; the timings are in benchmarks/validate_imports.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, write_space
from search.strategies import PARAMS, Param

HEAVY = ("torch", "torchvision", "timm")
MARK = "@@heavy-modules "
# Runs the CLI (or validates the spaces named on its command line), then prints which heavy modules it imported.
_CLI = f"""
import json, sys
code = 0
try:
    from search.cli import main
    main(sys.argv[1:], prog_name="strategy-search")
except SystemExit as exc:
    code = exc.code or 0
print({MARK!r} + json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
_VALIDATE = f"""
import json, sys
from search.space.parse import load_space
for path in sys.argv[1:]:
    load_space(path)
print({MARK!r} + json.dumps({{"code": 0, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _fresh(code: str, *args: str, cwd: Path) -> tuple[dict[str, Any], str]:
    """Run ``code`` in a new interpreter in ``cwd`` (dataset cache: ``cwd/cache``): its result line, its output."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "STRATEGY_SEARCH_CACHE": str(cwd / "cache")})
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len(MARK):]), proc.stdout + proc.stderr


def _searched(name: str, param: Param) -> Any:
    """A search over (most of) the values ``param`` takes, from its registry entry alone."""
    special: dict[str, Any] = {
        # timm names (read from timm's source, not imported), with a pretrained tag
        "backbone": {"choices": ["none", "resnet18", "resnet18.a1_in1k", "mobilenetv3_small_100"]},
        # sets, op lists, an op with arguments and a custom set
        "augment": {"choices": ["none", "standard", "crop+flip+whiten", "mine", [{"rotate": 20}, "erase"]]},
        "epochs": {"int": [1, 5]},
    }
    if name in special:
        return special[name]
    allowed = param.allowed()
    if allowed is not None:
        return {"choices": allowed}
    if param.kind is bool:
        return {"choices": [False, True]}
    kind = "int" if param.kind is int else "float"
    low = param.default if param.default is not None else param.low
    return {kind: [low, param.high]}


def test_validating_every_shipped_space_and_every_strategy_imports_no_torch(tmp_path: Path) -> None:
    every = {
        "study": "every", "dataset": "shapes", "budget": {"max_epochs": 5},
        "objective": [{"metric": "precision", "average": "binary", "positive_class": "green_circle"}, "latency_ms"],
        "augment_sets": {"mine": ["crop", {"jitter": {"brightness": 0.2}}, "dihedral"]},
        "params": {name: _searched(name, param) for name, param in PARAMS.items()},
    }
    assert set(every["params"]) == set(PARAMS)  # every registered strategy, also ones added later
    shipped = sorted(str(p) for p in (ROOT / "spaces").glob("*.yaml"))
    assert len(shipped) >= 5
    result, _ = _fresh(_VALIDATE, *shipped, str(write_space(tmp_path / "every.yaml", every)), cwd=tmp_path)
    assert result["heavy"] == []


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def test_create_checks_the_data_and_stores_the_study_without_torch(tmp_path: Path) -> None:
    """The shipped transfer space (timm backbones) and a folder dataset judged by precision on one class."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result, out = _fresh(_CLI, "create", str(ROOT / "spaces" / "transfer.yaml"), "--storage", storage, cwd=tmp_path)
    assert result == {"code": 0, "heavy": []} and "study 'transfer' ready" in out

    folder = {"study": "pets", "dataset": str(_photos(tmp_path / "pets")),
              "objective": {"metric": "precision", "average": "binary", "positive_class": "dog"},
              "params": {"lr": {"float": [0.001, 0.1], "log": True}, "color": {"choices": ["rgb", "gray"]}}}
    result, out = _fresh(_CLI, "create", str(write_space(tmp_path / "pets.yaml", folder)), "--storage", storage,
                         cwd=tmp_path)
    assert result == {"code": 0, "heavy": []} and "study 'pets' ready" in out
    assert not (tmp_path / "cache").exists()  # nothing decoded or generated: workers build the cache

    # The data checks still run before the study exists: a class the folder does not have.
    folder = {**folder, "study": "pets2", "objective": {**folder["objective"], "positive_class": "bird"}}
    result, out = _fresh(_CLI, "create", str(write_space(tmp_path / "pets2.yaml", folder)), "--storage", storage,
                         cwd=tmp_path)
    assert result == {"code": 2, "heavy": []}
    assert "positive_class 'bird' is not a class of this dataset; classes: cat, dog" in out


@pytest.mark.parametrize("args", [("strategies",), ("strategies", "--markdown")])
def test_the_strategy_catalogue_imports_no_torch(tmp_path: Path, args: tuple[str, ...]) -> None:
    result, out = _fresh(_CLI, *args, cwd=tmp_path)
    assert result == {"code": 0, "heavy": []} and "autoaugment_policy" in out and "backbone" in out
