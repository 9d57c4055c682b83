"""Re-train one fixed configuration (an exported ``config.yaml``) and compare with its source trial.

Same config, same seed, same data split: on the CPU the validation score equals the trial's
(within :data:`CPU_TOLERANCE`). On a GPU, bf16 autocast and non-deterministic cuDNN kernels
make runs differ slightly; :data:`GPU_TOLERANCE` is the accepted difference there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from search.artifacts.bundle import bundle_from_result, check_output, write_bundle
from search.core.config import TrialConfig
from search.data.datasets import Prepared, cat_images, prepare
from search.core.errors import UserError
from search.space.parse import load_space
from search.core.spec import DatasetSpec, SearchSpace
from search.train.loop import TrainResult, resolve_device, train_space

log = logging.getLogger(__name__)

CPU_TOLERANCE = 1e-6
GPU_TOLERANCE = 0.02  # an objective in [0, 1]; a stated allowance, not a guarantee
UNREPRODUCIBLE = ("latency_ms",)  # measured on this machine, not a property of the training run


@dataclass
class Comparison:
    """One objective: the source trial's recorded value and this run's."""

    name: str
    source: float
    value: float
    tolerance: float | None  # None: not expected to match (a timing)

    @property
    def diff(self) -> float:
        return abs(self.value - self.source)

    @property
    def matches(self) -> bool | None:
        return None if self.tolerance is None else self.diff <= self.tolerance


@dataclass
class Retrained:
    space: SearchSpace
    config: TrialConfig
    dataset: DatasetSpec
    result: TrainResult
    device: torch.device
    full: bool
    seconds: float
    comparisons: list[Comparison] = field(default_factory=list)
    written: dict[str, Any] | None = None  # the bundle written with ``output`` (files, notes)

    @property
    def reproduced(self) -> bool | None:
        """True/False when the source trial's values were compared, None when there was nothing to compare."""
        checked = [c.matches for c in self.comparisons if c.matches is not None]
        if not checked:
            return None
        return all(checked)


def fixed_config(space: SearchSpace) -> TrialConfig:
    """The one config a space with only fixed params describes."""
    free = [p.name for p in space.params if p.kind != "fixed"]
    if free:
        raise UserError(f"{space.source}: params {', '.join(free)} are searched, not fixed; train needs one "
                        "configuration (export one with strategy-search export STUDY -o DIR/)")
    config = space.sample(None)  # fixed params never consult the trial
    if config.seed is None:
        config.seed = space.seed
    return config


def with_data(space: SearchSpace, data_dir: str | Path | None) -> DatasetSpec:
    """The space's dataset, or the folder ``data_dir`` split the same way."""
    if data_dir is None:
        return space.dataset
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"--data {data_dir}: not a directory (expected DIR/<class>/<images>)")
    return dataclasses.replace(space.dataset, name=None, path=str(path.resolve()))


def train_and_val(data: Prepared) -> Prepared:
    """Training split extended by the validation split (``--full``); val stays for reporting only."""
    return dataclasses.replace(data, train_x=cat_images(data.train_x, data.val_x),
                               train_y=torch.cat([data.train_y, data.val_y]))


def retrain(config_path: str | Path, *, data_dir: str | Path | None = None, full: bool = False,
            device: str | None = None, weights_dir: str | None = None, output: str | Path | None = None,
            onnx: bool = True, force: bool = False) -> Retrained:
    """Train the configuration in ``config_path`` and compare with ``source.values`` when present.

    With ``output``, the trained model is written there as an export bundle (``force`` replaces an
    existing one; that is checked before training, so a refusal costs nothing).
    """
    if output is not None:
        check_output(Path(output), force)
    space = load_space(config_path)
    config = fixed_config(space)
    dataset = with_data(space, data_dir)
    dev = resolve_device(device)
    data = prepare(dataset, config.input_size, config.aspect, dev)
    if full:
        data = train_and_val(data)
    start = time.perf_counter()
    result = train_space(config, space, dataset=dataset, device=dev, weights_dir=weights_dir, label=space.study,
                         data=data)
    out = Retrained(space, config, dataset, result, dev, full, time.perf_counter() - start)
    source = space.raw.get("source") or {}
    recorded = source.get("values") or {}
    if data_dir is None and not full:  # other data or more of it: nothing to compare with
        tolerance = CPU_TOLERANCE if dev.type == "cpu" else GPU_TOLERANCE
        for spec, value in zip(space.objectives, result.values):
            if isinstance(recorded.get(spec.name), (int, float)) and math.isfinite(recorded[spec.name]):
                tol = None if spec.name in UNREPRODUCIBLE else tolerance
                out.comparisons.append(Comparison(spec.name, float(recorded[spec.name]), float(value), tol))
    if output is not None:
        doc = dict(space.raw)
        if data_dir is not None:
            doc["dataset"] = {**(doc["dataset"] if isinstance(doc.get("dataset"), dict) else {}), "path": dataset.path}
            doc["dataset"].pop("name", None)
        bundle = bundle_from_result(result, config, dataset, space.objectives,
                                    {**source, "config": str(config_path), "train_and_val": full})
        out.written = write_bundle(bundle, output, doc, onnx=onnx, force=force)
    return out
