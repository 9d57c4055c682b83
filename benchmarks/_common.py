"""Shared helpers for the benchmark scripts: machine description, JSON output, tables, profiles."""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (what the tests use)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"directory for the JSON result (default {RESULTS})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per process (default 1: steadier on a shared machine)")
    return p


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this checkout first on PYTHONPATH (kept, not replaced,
    so packages installed with ``--target`` stay importable), plus ``extra``."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, **extra}


def setup_threads(n: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)  # inherited by any worker processes we start
    torch.set_num_threads(n)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    """HEAD's short hash, with ``+dirty`` when tracked files differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip()
        return (commit + ("+dirty" if dirty.stdout.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on (recorded beside every result)."""
    import optuna
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
        "command": " ".join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]]),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def write_result(out_dir: Path, name: str, info: dict[str, Any], payload: dict[str, Any], tiny: bool) -> Path:
    """Write ``{name}.json`` (``{name}-tiny.json`` for smoke runs) with the machine description."""
    info = dict(info)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{'-tiny' if tiny else ''}.json"
    path.write_text(json.dumps({"benchmark": name, "tiny": tiny, "machine": info, **payload}, indent=2,
                               default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# Where a training run's time goes: cumulative seconds of these functions under cProfile.
# Keys are (file suffix, function name); nested categories overlap (forward is inside evaluate, ...).
PROFILE_POINTS: dict[str, tuple[str, str]] = {
    "train (whole trial)": ("search/train/loop.py", "train"),
    "prepare (cached data lookup)": ("search/data/datasets.py", "prepare"),
    "make_preprocess (dataset stats)": ("search/data/color.py", "make_preprocess"),
    "create_model": ("search/models/factory.py", "create_model"),
    "augment (BatchAugment)": ("search/data/transforms.py", "__call__"),
    "preprocess forward": ("search/data/color.py", "forward"),
    "model forward (SmallCNN)": ("search/models/cnn.py", "forward"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer step": ("torch/optim/optimizer.py", "wrapper"),
    "clip_grad_norm_ (grad-norm log)": ("torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    "lr scheduler step": ("torch/optim/lr_scheduler.py", "step"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "evaluate (val per epoch + final val/test)": ("search/train/loop.py", "evaluate"),
    "measure_latency": ("search/train/loop.py", "measure_latency"),
}


def profile_call(fn: Callable[[], Any], points: dict[str, tuple[str, str]] | None = None
                 ) -> tuple[Any, dict[str, dict[str, float]]]:
    """Run ``fn`` under cProfile; cumulative CPU seconds and call counts for ``points`` (+ the total).

    The profiler's clock is the process CPU time, so another job on the machine does not inflate it.
    """
    points = points or PROFILE_POINTS
    prof = cProfile.Profile(time.process_time)
    start = time.process_time()
    result = prof.runcall(fn)
    total = time.process_time() - start
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out: dict[str, dict[str, float]] = {"total (profiled CPU)": {"seconds": total, "calls": 1}}
    for label, (suffix, func) in points.items():
        secs, calls = 0.0, 0
        # Same-named nested functions (SmallCNN.forward around ConvBlock.forward, the optimizer's
        # step wrappers) are counted once: the outermost one, which has the largest cumulative time.
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in stats.items():
            if name == func and filename.replace("\\", "/").endswith(suffix) and ct > secs:
                secs, calls = ct, nc
        out[label] = {"seconds": secs, "calls": calls}
    return result, out


def profile_rows(profile: dict[str, dict[str, float]]) -> list[tuple[str, float, int, str]]:
    total = profile["total (profiled CPU)"]["seconds"] or float("nan")
    return [(k, v["seconds"], int(v["calls"]), f"{100 * v['seconds'] / total:.1f}%") for k, v in profile.items()]
