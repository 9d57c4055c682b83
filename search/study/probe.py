"""A short probe of a study's trial on one device: peak GPU memory and training images/s.

``worker --gpus ... --per-gpu auto`` starts 1, 2, 4, ... of these at once per GPU
(:mod:`search.study.packing`). Each one trains the probe config (:func:`probe_config`) with the
library's own ``train()`` on the study's dataset, prepared exactly as a trial prepares it (so a
set small enough to live on the GPU is counted in its memory), but for two short epochs of
:data:`STEPS` batches: the first warms up (kernels, allocator, a compile), the second is timed.

    python -m search.study.probe STUDY --go FILE [--steps N] [--device cuda]

The storage URL comes from ``$STRATEGY_SEARCH_STORAGE`` (as for workers). It prints ``ready``
once loaded, starts when FILE exists (so all probes of a level run together) and ends with one
JSON line: ``images``, ``seconds``, ``images_per_s`` and the memory reading, or
``out_of_memory``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Any

STEPS = 30  # timed batches per probe (after as many for warm-up)
MEMORY_PARAMS = ("batch_size", "input_size", "width", "depth")  # larger value: more activation memory


def probe_config(space: Any, trials: list[Any]) -> Any:
    """The config to probe: the hungriest trial a resumed study recorded on a GPU; else one draw
    of the space (seeded) with its largest batch size, input size, width and depth."""
    import optuna

    from search import records
    from search.core.config import TrialConfig

    measured = [(records.gpu_memory(t) or {}).get("peak_mb", 0.0) for t in trials]
    if measured and max(measured) > 0:
        hungriest = trials[measured.index(max(measured))]
        config = records.trial_config(hungriest)
        if config is not None:
            return config
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.seed))
    values = space.sample(draw.ask()).to_dict()
    for name in MEMORY_PARAMS:
        p = space.param(name)
        if p is None or not p.active(values):
            continue
        if p.kind in ("int", "float"):
            values[name] = type(values[name] or p.high)(p.high)
        elif p.kind == "choices":
            numbers = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if numbers:
                values[name] = max(numbers)
    return TrialConfig.from_dict(values)


def cut(data: Any, n: int, n_val: int | None = None) -> Any:
    """The prepared splits with at most ``n`` training and ``n_val`` (default ``n``) validation images (views)."""
    from search.data.datasets import MappedImages, Prepared

    def head(x: Any, k: int) -> Any:
        return MappedImages(x.base, x.index[:k], x.pages) if isinstance(x, MappedImages) else x[:k]

    v = n if n_val is None else n_val
    return Prepared(head(data.train_x, n), data.train_y[:n], head(data.val_x, v), data.val_y[:v],
                    head(data.test_x, 0), data.test_y[:0], data.classes, data.size)


def run_probe(study_name: str, device_name: str, steps: int = STEPS, go: str | None = None) -> dict[str, Any]:
    import torch

    from search.data.datasets import prepare
    from search.storage.backend import open_storage
    from search.study.load import load_study
    from search.study.packing import read_gpu_memory
    from search.train.loop import train

    study, space = load_study(study_name, open_storage(None, heartbeat=False))
    config = probe_config(space, study.get_trials(deepcopy=False))
    device = torch.device(device_name)
    data = prepare(space.dataset, config.input_size, config.aspect, device)
    batch = min(config.batch_size, len(data.train_y))
    n = min(len(data.train_y), steps * batch)
    small = cut(data, n)
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.01)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = train(config.replace(epochs=2), space.dataset, space.objectives, device=device,
                       weights_dir=space.weights_dir, augment_sets=space.augment_sets, evaluate_test=False,
                       data=small, label="probe")
    except torch.cuda.OutOfMemoryError as exc:
        return {"out_of_memory": True, "error": str(exc).splitlines()[0]}
    seconds = result.history[-1].seconds
    reading = read_gpu_memory(device) if device.type == "cuda" else None
    out: dict[str, Any] = {"images": n, "seconds": seconds, "images_per_s": n / seconds if seconds > 0 else math.nan,
                           "config": config.to_dict()}
    if reading is not None:
        out.update(peak_bytes=reading.peak_bytes, other_bytes=reading.other_bytes, total_bytes=reading.total_bytes)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--go", default=None, help="start when this file exists")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run_probe(args.study, args.device, args.steps, args.go)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
