"""The strong starting recipe the doctor trains and starts the search from, and the portfolio.

The recipe is a modern small-image recipe, sized to the data, not a weak probe:

* a residual CNN (the built-in ``SmallCNN`` with basic blocks): 3 stages up to 32 px inputs, 4 above,
  width 32 (24 for large inputs, so ~1,000 images still train in about a minute on 2 cores);
* AdamW (decoupled weight decay 0.05) at lr 3e-3 with a linear warm-up and a cosine decay;
* label smoothing 0.1 (airbench uses 0.2 on CIFAR-10; 0.1 is kinder to many-class, small data);
* weight EMA whose horizon is about a tenth of the run (airbench's "lookahead" EMA plays this role);
* translate-style augmentation: random crop of the reflect-padded image (airbench: 2 px at 32 px),
  plus mirror images or all 8 quarter turns and mirrors only where the data's orientation carries
  no label (the doctor's orientation probe decides), with the matching test-time augmentation
  (airbench's TTA level 1 is the mirror);
* enough optimizer steps for small data: epochs sized to ~600 steps (at least 12, at most 60).

What airbench also does and is not adopted: patch-whitening initialization of the first conv and
BatchNorm without affine weights (they need a different model, not a search param), its
per-1024-example hyperparameter scaling (we search the rate instead), and translate TTA.
Source: Keller Jordan, cifar10-airbench (github.com/KellerJordan/cifar10-airbench),
legacy/airbench94.py, ``hyp`` and ``infer``.

The portfolio (``portfolio.yaml`` beside this file) is a few diverse configurations chosen offline
on the task suite by ``python -m benchmarks.portfolio`` (greedy: each entry adds the most to the
suite's best-so-far accuracy). Entries name changes to the recipe; :func:`adapt_entry` fits one to
a space (values clipped into a range, params the space does not search left out, with reasons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping, Sequence

import yaml

from search.space.enqueue import param_fits

STEPS_TARGET = 600  # optimizer steps the recipe aims for
MIN_EPOCHS, MAX_EPOCHS = 12, 60
EMA_HORIZON = 0.1  # the average spans about this share of the run's steps
ORIENTATION_AUGMENT = {"none": "crop", "mirror_free": "light", "no_orientation": "light-dihedral"}
ORIENTATION_TTA = {"none": "none", "mirror_free": "flip", "no_orientation": "dihedral"}


def recipe_epochs(n_train: int, batch_size: int) -> int:
    steps = max(1, math.ceil(n_train / batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(STEPS_TARGET / steps))))


def ema_for(n_train: int, batch_size: int, epochs: int) -> float:
    """An EMA decay whose horizon 1 / (1 - decay) is about a tenth of the run's steps."""
    steps = max(1, math.ceil(n_train / batch_size)) * epochs
    return round(min(0.999, max(0.9, 1 - 1 / max(10.0, EMA_HORIZON * steps))), 3)


def recipe(n_train: int, input_size: int, orientation: str = "none") -> dict[str, Any]:
    """The recipe's params for ``n_train`` training images at ``input_size`` px; ``orientation`` is the
    probe's verdict (``none``: canonical, no flips; ``mirror_free``; ``no_orientation``)."""
    batch = 32 if n_train < 2000 else 64
    epochs = recipe_epochs(n_train, batch)
    return {
        "backbone": "none", "residual": True, "depth": 3 if input_size <= 32 else 4,
        "width": 32 if input_size <= 64 else 24, "norm": "batchnorm", "dropout": 0.0,
        "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "batch_size": batch,
        "schedule": "cosine", "warmup_epochs": max(1, round(epochs / 15)), "epochs": epochs,
        "label_smoothing": 0.1, "ema_decay": ema_for(n_train, batch, epochs),
        "augment": ORIENTATION_AUGMENT[orientation], "tta": ORIENTATION_TTA[orientation],
        "mix": "none", "grad_clip": 0.0,
    }


# ----------------------------------------------------------------------------- portfolio


def portfolio() -> list[dict[str, Any]]:
    """The shipped portfolio: a list of {name, why, params} (params change the recipe)."""
    text = resources.files(__package__).joinpath("portfolio.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    return list(doc["entries"])


@dataclass
class Adapted:
    """One portfolio entry fitted to a space: the params to enqueue and what was changed or left out."""

    name: str
    params: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the whole entry was left out


def adapt_entry(name: str, config: Mapping[str, Any], space: Any, earlier: Sequence[Mapping[str, Any]] = ()
                ) -> Adapted:
    """``config`` (a complete config) as an ``enqueue:`` entry of ``space``: the values of the params it
    searches; a number outside a range is clipped to it, a choice it lacks is left to the sampler;
    params it fixes keep the space's value. Skipped when nothing is left or an earlier entry is the same."""
    out = Adapted(name, {})
    for p in space.params:
        if p.kind == "fixed" or p.name not in config:
            continue
        if not p.active({**config, **out.params}):
            continue
        value = config[p.name]
        problem = param_fits(p, value)
        if problem is None:
            out.params[p.name] = value
        elif p.kind in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
            clipped = min(max(value, p.low), p.high)
            if p.kind == "int":
                clipped = int(round(clipped))
            if param_fits(p, clipped) is None:
                out.params[p.name] = clipped
                out.changes.append(f"{p.name} {value!r} -> {clipped!r} ({problem})")
            else:
                out.changes.append(f"{p.name} {value!r} left to the sampler ({problem})")
        else:
            out.changes.append(f"{p.name} {value!r} left to the sampler ({problem})")
    if not out.params:
        out.skipped = "none of its values is searched by this space"
    else:
        for i, other in enumerate(earlier):
            if dict(other) == out.params:
                out.skipped = f"the same as enqueued entry {i} once fitted to this space"
                break
    return out


def portfolio_configs(base: Mapping[str, Any], entries: Sequence[Mapping[str, Any]] | None = None
                      ) -> list[tuple[str, dict[str, Any]]]:
    """(name, complete config) per portfolio entry: ``base`` (the recipe as the doctor sized it) with
    the entry's changes; an entry's ``epochs_scale`` scales the recipe's epochs."""
    out = []
    for entry in entries if entries is not None else portfolio():
        config = dict(base)
        changes = dict(entry.get("params", {}))
        scale = changes.pop("epochs_scale", None)
        config.update(changes)
        if scale is not None and base.get("epochs"):
            config["epochs"] = max(1, int(round(base["epochs"] * float(scale))))
        if "ema_decay" not in changes and config.get("epochs") and base.get("epochs"):
            # The average's horizon follows the run's length.
            config["ema_decay"] = _rescale_ema(base["ema_decay"], base["epochs"], config["epochs"])
        out.append((str(entry["name"]), config))
    return out


def _rescale_ema(decay: float, epochs: int, new_epochs: int) -> float:
    if not decay:
        return decay
    horizon = 1 / (1 - decay) * new_epochs / epochs
    return round(min(0.999, max(0.9, 1 - 1 / max(10.0, horizon))), 3)
