"""What validating a space file and ``strategy-search create`` cost at start-up, and whether they import torch.

Each measurement is a fresh Python process (``python -X importtime``) of a source tree (``--tree
LABEL=PATH``, repeatable; default this checkout; an export of an older commit gives a before/after):

- ``validate SPACE``: ``from search.space.parse import load_space; load_space(SPACE)``, timed inside the
  process from before the import (interpreter start-up excluded), for every shipped space;
- ``create SPACE``: ``python -m search.cli -q create SPACE --storage sqlite:///...`` timed from outside
  (interpreter start-up included), after one untimed run per tree that builds what a first run builds
  (older trees decode the dataset cache there).

The trees are interleaved within each repetition (the machine's load hits them alike). Reported per
tree and case: the median wall seconds over ``--reps`` runs, the median of ``-X importtime``'s cumulative
seconds summed over top-level imports (these include the interpreter's own start-up imports), and which
of torch / torchvision / timm the process imported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine, parser, table, write_result

HEAVY = ("torch", "torchvision", "timm")
_VALIDATE = """
import json, sys, time
t = time.perf_counter()
from search.space.parse import load_space
load_space(sys.argv[1])
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def import_profile(stderr: str) -> tuple[float, list[str]]:
    """(seconds of imports: ``-X importtime``'s cumulative time of the top-level imports, summed;
    the heavy packages among every module imported) from a process's stderr."""
    total_us = 0
    imported: set[str] = set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        raw = parts[2]
        name = raw.strip()
        imported.add(name.split(".")[0])
        if len(raw) - len(raw.lstrip()) == 1:  # one space after "|": a top-level import
            total_us += int(parts[1])
    return total_us / 1e6, sorted(m for m in HEAVY if m in imported)


def _env(tree: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "STRATEGY_SEARCH_CACHE": str(cache),
            "OMP_NUM_THREADS": "1"}


def validate_once(tree: Path, space: Path, cache: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", _VALIDATE, str(space)], cwd=tree,
                          env=_env(tree, cache), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"validating {space} failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import_s, heavy = import_profile(proc.stderr)
    return {"seconds": out["seconds"], "import_seconds": import_s, "heavy": heavy}


def create_once(tree: Path, space: Path, cache: Path, workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "search.cli", "-q", "create", str(space),
                           "--storage", f"sqlite:///{workdir / 'studies.db'}"], cwd=workdir,
                          env=_env(tree, cache), capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"create {space} failed: {proc.stderr[-2000:]}")
    import_s, heavy = import_profile(proc.stderr)
    return {"seconds": seconds, "import_seconds": import_s, "heavy": heavy}


def summarize(case: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"case": case, "reps": len(runs), "median_seconds": statistics.median(r["seconds"] for r in runs),
            "median_import_seconds": statistics.median(r["import_seconds"] for r in runs),
            "heavy_imports": sorted({m for r in runs for m in r["heavy"]}), "runs": runs}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="a source tree to measure (repeatable; default: this checkout, labelled 'this')")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    trees = {label: Path(path).resolve() for label, path in (t.split("=", 1) for t in args.tree)} or {"this": ROOT}
    reps = 1 if args.tiny else args.reps
    names = sorted(s.name for s in (ROOT / "spaces").glob("*.yaml"))
    if args.tiny:
        names = ["quickstart.yaml"]
    info = machine()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="validate-imports-") as tmp:
        caches = {label: Path(tmp) / label / "cache" for label in trees}
        for label, tree in trees.items():
            (Path(tmp) / label / "warm").mkdir(parents=True)
            create_once(tree, tree / "spaces" / "quickstart.yaml", caches[label], Path(tmp) / label / "warm")
        for i in range(reps):
            for label, tree in trees.items():
                for name in names:
                    runs.setdefault((label, f"validate {name}"), []).append(
                        validate_once(tree, tree / "spaces" / name, caches[label]))
                workdir = Path(tmp) / label / f"create-{i}"
                workdir.mkdir()
                runs.setdefault((label, "create quickstart.yaml"), []).append(
                    create_once(tree, tree / "spaces" / "quickstart.yaml", caches[label], workdir))
    results = [{"tree": label, "path": str(trees[label]), **summarize(case, r)} for (label, case), r in runs.items()]
    print(table(["tree", "case", "median s", "median import s", "imports torch/torchvision/timm"],
                [(r["tree"], r["case"], r["median_seconds"], r["median_import_seconds"],
                  ", ".join(r["heavy_imports"]) or "no") for r in results]))
    path = write_result(args.out, "validate_imports", info, {"results": results}, args.tiny)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
