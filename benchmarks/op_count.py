"""Operators dispatched per training step: the library's ``train()`` vs. a bare loop, on the CPU.

A GPU pays per kernel launch; on ~2 ms steps the launches of per-step bookkeeping decide how far
the library falls behind a bare loop (RESULTS.md section 5). Counting the ATen operators a step
dispatches is a CPU-measurable proxy for those launches, exact and independent of load, so it is
held in CI (``tests/test_op_count.py``: library / bare <= 1.10).

How it counts: a ``TorchDispatchMode`` counts every ATen operator that reaches the dispatcher's
Python mode (after autograd and composite decompositions: the ops that run kernels, plus view
ops, which are counted apart), and a global optimizer step post-hook marks the step boundaries.
Ops per step = the median (and the mean) of the counts between consecutive optimizer steps of one
epoch, the epoch's first and last steps excluded (they carry the epoch's set-up and end); the
target holds for both (the mean includes the CPU's non-finite check every 16 steps).

Both arms train the same model (``create_model``, same seed) on the same batches: the training
split as one in-RAM uint8 tensor, gathered by a shuffled index (the GPU-resident path; the
memory-mapped path gathers in a prefetch thread, whose ops run off the training thread and are
not counted in either arm), converted to float and normalized with the same statistics, AdamW,
batch 32. What the bare loop leaves out on purpose: the library's per-step statistics (loss,
accuracy, gradient norm), the schedule step, the EMA update when ``ema_decay`` is set, and the
non-finite check. The counter runs on the training thread only.

    python -m benchmarks.op_count            # SmallCNN and timm resnet18, with and without EMA
    python -m benchmarks.op_count --tiny
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

TARGET = 1.10
# Ops that only make a new view or read metadata: no kernel runs for them on a GPU.
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "alias", "as_strided", "detach", "expand", "permute", "reshape", "select", "slice",
    "squeeze", "unsqueeze", "t", "transpose", "unbind", "split", "split_with_sizes", "chunk", "_reshape_alias",
    "view_as", "unflatten", "flatten", "lift_fresh", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
    "is_same_size", "_local_scalar_dense",
})


class OpCounter(TorchDispatchMode):
    """Counts ATen operators dispatched on this thread, and notes the count at every optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.kernels = 0
        self.names: Counter[str] = Counter()
        self.marks: list[tuple[int, int]] = []  # (ops, kernel ops) at each optimizer step's end
        self._window: Counter[str] | None = None
        self.windows: list[Counter[str]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        self.count += 1
        if name not in VIEW_OPS:
            self.kernels += 1
        if self._window is not None:
            self._window[name] += 1
        return func(*args, **(kwargs or {}))

    def mark(self, *_: Any) -> None:
        self.marks.append((self.count, self.kernels))
        if self._window is not None:
            self.windows.append(self._window)
        self._window = Counter()

    def per_step(self) -> dict[str, Any]:
        """Median ops (and kernel ops) between consecutive optimizer steps, first and last left out."""
        diffs = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]
        inner = diffs[1:-1] if len(diffs) > 3 else diffs
        if not inner:
            raise RuntimeError("fewer than two optimizer steps were counted")
        window = self.windows[len(self.windows) // 2] if self.windows else Counter()
        return {"ops": statistics.median(d[0] for d in inner), "kernel_ops": statistics.median(d[1] for d in inner),
                "mean_ops": statistics.fmean(d[0] for d in inner), "steps_counted": len(inner), "min_ops": min(d[0] for d in inner), "max_ops": max(d[0] for d in inner),
                "ops_by_name": dict(window.most_common())}


def count_steps(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` (one training run) under the counter; ops per optimizer step."""
    counter = OpCounter()
    handle = register_optimizer_step_post_hook(counter.mark)
    try:
        with counter:
            fn()
    finally:
        handle.remove()
    return counter.per_step()


@dataclass(frozen=True)
class Case:
    name: str
    arch: dict[str, Any]
    input_size: int | None = None
    ema_decay: float = 0.0


def cases(tiny: bool) -> list[Case]:
    small = Case("SmallCNN w32 d3 residual", {"width": 32, "depth": 3, "residual": True})
    resnet = Case("resnet18 (timm, random init), 32 px", {"backbone": "resnet18"}, input_size=32)
    base = [small] if tiny else [small, resnet]
    return [c for b in base for c in (b, replace(b, name=b.name + ", ema 0.99", ema_decay=0.99))]


def in_ram(data: Any) -> Any:
    """The prepared splits as in-RAM tensors (the GPU-resident path's shape: no prefetch thread)."""
    from search.data.datasets import Prepared

    real = lambda x: x.materialize() if hasattr(x, "materialize") else x  # noqa: E731
    return Prepared(real(data.train_x), data.train_y, real(data.val_x), data.val_y, real(data.test_x), data.test_y,
                    data.classes, data.size)


def setup(case: Case, batch: int = 32, limit: int | None = None) -> tuple[Any, Any, Any]:
    from search.core.config import TrialConfig
    from search.core.spec import DatasetSpec
    from search.data.datasets import prepare

    spec = DatasetSpec(name="digits", limit=limit)
    config = TrialConfig(batch_size=batch, epochs=1, seed=0, lr=1e-3, optimizer="adamw", ema_decay=case.ema_decay,
                         input_size=case.input_size, **case.arch)
    data = in_ram(prepare(spec, case.input_size, "stretch", torch.device("cpu")))
    return spec, config, data


def library_run(spec: Any, config: Any, data: Any) -> None:
    from search.train.loop import train

    train(config, spec, device=torch.device("cpu"), data=data, evaluate_test=False)


def bare_run(config: Any, data: Any) -> None:
    """The loop one writes by hand: shuffled gather, normalize, forward, loss, backward, AdamW step."""
    from search.data.color import make_preprocess
    from search.models.factory import create_model

    torch.manual_seed(0)
    pre = make_preprocess("rgb", "dataset", False, data.train_x)
    mean, std = pre.mean, pre.std
    model = create_model(config, 3, len(data.classes), data.size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x_all, y_all = data.train_x, data.train_y
    n, batch = len(y_all), config.batch_size
    model.train()
    order = torch.randperm(n)
    for i in range(0, n - 1, batch):
        idx = order[i : i + batch]
        x = (x_all[idx].float().div(255.0) - mean) / std
        loss = nn.functional.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def measure(case: Case, limit: int | None = None) -> dict[str, Any]:
    spec, config, data = setup(case, limit=limit)
    library_run(spec, config, data)  # warm-up: lazy imports and first-call paths are not a step's work
    lib = count_steps(lambda: library_run(spec, config, data))
    bare = count_steps(lambda: bare_run(config, data))
    extra = Counter(lib.pop("ops_by_name"))
    extra.subtract(Counter(bare.pop("ops_by_name")))
    ratio = lib["ops"] / bare["ops"]
    # The mean counts the CPU's periodic non-finite check too (a few ops every 16 steps).
    mean_ratio = lib["mean_ops"] / bare["mean_ops"]
    return {"case": case.name, "library": lib, "bare": bare, "ratio": ratio, "mean_ratio": mean_ratio,
            "kernel_ratio": lib["kernel_ops"] / bare["kernel_ops"],
            "library_minus_bare_by_op": {k: v for k, v in sorted(extra.items()) if v},
            "meets_target": max(ratio, mean_ratio) <= TARGET}


def main(argv: list[str] | None = None) -> int:
    from benchmarks._common import machine, parser, setup_threads, table, write_result

    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    setup_threads(args.threads)
    info = machine()
    rows = [measure(c, limit=300 if args.tiny else None) for c in cases(args.tiny)]
    print(f"ATen ops per training step (digits, batch 32, AdamW; target library / bare <= {TARGET})")
    print(table(["case", "library ops", "bare ops", "ratio", "mean ratio", "kernel ops lib/bare", "kernel ratio",
                 "target"],
                [(r["case"], r["library"]["ops"], r["bare"]["ops"], r["ratio"], r["mean_ratio"],
                  f"{r['library']['kernel_ops']:g}/{r['bare']['kernel_ops']:g}", r["kernel_ratio"],
                  "met" if r["meets_target"] else "MISSED") for r in rows]))
    for r in rows:
        print(f"{r['case']}: library - bare, by op: {r['library_minus_bare_by_op']}")
    path = write_result(args.out, "op_count", info, {"target": TARGET, "results": rows}, args.tiny)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
