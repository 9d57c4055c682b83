"""The orientation probe: does the data have a canonical orientation, or is every turned or mirrored
image as likely (microscopy, textures, aerial patches)?

The trained baseline (which saw no flips or turns) is evaluated on the validation images turned
and mirrored by each element of the dihedral group D4. When the data has no orientation, a turned
validation set is drawn from the same distribution as the original, so any model scores the same
on it (up to noise); when the data is upright (photos, digits, text), the baseline loses accuracy
on the turned images. Mirror images are judged apart: natural photos are usually mirror-free
(a mirrored cat is a cat) though not turn-free; digits and text are neither.

Verdicts (the finding's kind): ``no_orientation`` (all 8 alike: dihedral augmentation and TTA),
``mirror_free`` (the mirror image alike, turns not: flips and flip TTA), ``orientation`` (the
mirror image loses too: no flips), or inconclusive (the baseline learned too little to tell).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from search.data.transforms import dihedral
from search.tools.doctor.findings import Finding

ORIENTATION_TOLERANCE = 0.03  # accuracy a turned view may lose and still count as "the same"
ELEMENTS = {1: "turned 90", 2: "turned 180", 3: "turned 270", 4: "mirrored", 5: "transposed", 6: "flipped upside down",
            7: "anti-transposed"}


def orientation_scores(model: Any, preprocess: Any, images: torch.Tensor, labels: torch.Tensor,
                       device: torch.device) -> dict[int, float]:
    """Validation accuracy of ``model`` on ``images`` transformed by each element k of D4 (0: as they are)."""
    from search.train.loop import predict

    x = images.materialize() if hasattr(images, "materialize") else images  # a memory-mapped split
    y = labels.to("cpu")
    out = {}
    for k in range(8):
        logits = predict(model, preprocess, dihedral(x, k).contiguous(), device)
        out[k] = float((logits.argmax(1).cpu() == y).float().mean()) if len(y) else math.nan
    return out


def orientation_finding(scores: dict[int, float], n_val: int, chance: float) -> Finding:
    """The verdict from the accuracies per element (see the module's docstring)."""
    base = scores[0]
    # The drop a view may show by chance: two standard errors of an accuracy on n_val images, at least
    # ORIENTATION_TOLERANCE (paired views of the same images vary less, so this is conservative).
    tol = max(ORIENTATION_TOLERANCE, 2 * math.sqrt(max(base * (1 - base), 1e-6) / max(1, n_val)))
    drops = {k: round(base - v, 4) for k, v in scores.items() if k}
    evidence: dict[str, Any] = {"accuracy": round(base, 4), "tolerance": round(tol, 4), "chance": round(chance, 4),
                                "drop": {ELEMENTS[k]: d for k, d in drops.items()}}
    worst = max(drops, key=drops.get)
    head = (f"orientation probe: the baseline scores {base:.3f} on the validation images as they are, "
            f"{scores[4]:.3f} mirrored, {scores[6]:.3f} upside down, {scores[1]:.3f} turned 90 degrees")
    if base < chance + 0.1:
        evidence["inconclusive"] = True
        return Finding("orientation", f"{head}: the baseline learned too little to tell", evidence,
                       ["let the search compare flips and quarter turns"], "data")
    if max(drops.values()) <= tol:
        return Finding("no_orientation", f"{head}: no canonical orientation (every turned or mirrored view within "
                       f"{tol:.3f}): the data already comes in every orientation", evidence,
                       ["dihedral augmentation (quarter turns + mirror images)", "dihedral test-time augmentation"],
                       "data")
    if drops[4] <= tol:
        return Finding("mirror_free", f"{head}: mirror images are alike, turned images are not "
                       f"({ELEMENTS[worst]} loses {drops[worst]:.3f})", evidence,
                       ["left-right flips", "flip test-time augmentation", "no quarter turns"], "data")
    return Finding("orientation", f"{head}: canonical orientation (mirrored loses {drops[4]:.3f}, "
                   f"{ELEMENTS[worst]} {drops[worst]:.3f}): no flips or turns", evidence,
                   ["no flips or quarter turns: they change what the image shows"], "data")


def verdict(finding: Finding | None) -> str | None:
    """``no_orientation`` | ``mirror_free`` | ``none`` (canonical), or None when not probed / inconclusive."""
    if finding is None or finding.evidence.get("inconclusive"):
        return None
    return {"no_orientation": "no_orientation", "mirror_free": "mirror_free"}.get(finding.kind, "none")
