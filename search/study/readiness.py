"""What is checked about a study's data before its first trial: by ``create`` without torch, by every
worker again once its dataset cache is open.

``create`` validates the space (:func:`search.space.parse.load_space`), then :func:`check_data`: the
dataset's layout and class names (a folder or CSV is scanned, a built-in set's classes are registry
metadata), ``positive_class`` against them, and a warning for a ``weights_dir`` this machine lacks.
Decoding the images into the cache needs torch and happens in each worker before its first trial
(:meth:`search.study.objective.Objective.check_ready`, which ends with the same checks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from search.core.spec import SearchSpace, positive_index
from search.data.sources import dataset_classes
from search.models.backbones import check_weights_dir

log = logging.getLogger(__name__)


def param_values(space: SearchSpace, name: str, default: Any) -> list[Any]:
    """The values a categorical or fixed param takes in ``space`` (``[default]`` when it is not searched)."""
    p = space.param(name)
    if p is None:
        return [default]
    return list(p.choices) if p.kind == "choices" else [p.value]


def check_data(space: SearchSpace, weights_dir: str | Path | None = None,
               classes: Sequence[str] | None = None) -> None:
    """Raise a UserError (DataError) on a dataset or class name the user must fix; warn of a missing
    ``weights_dir``. ``classes``: the opened dataset's, else read without decoding (:func:`dataset_classes`)."""
    classes = dataset_classes(space.dataset) if classes is None else classes
    for spec in space.objectives:
        positive_index(spec, classes)
    # Weights are not required up front: a backbone without a local file loads through timm in
    # its trial (which fails with both ways out if that cannot work either).
    if True in param_values(space, "pretrained", False) and set(param_values(space, "backbone", "none")) - {"none"}:
        warning = check_weights_dir(weights_dir or space.weights_dir)
        if warning:
            log.warning(warning)
