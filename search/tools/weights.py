"""``strategy-search weights fetch``: save timm backbones' pretrained weights for offline machines.

On a connected machine, each backbone is created through timm with ``pretrained=True`` (Hugging
Face cache or download) and its state dict saved as ``DIR/NAME.safetensors``: the file trials read
first (see :func:`search.models.backbones.find_weights`), so copying DIR to an air-gapped cluster
and pointing ``weights_dir`` at it is all that cluster needs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

from safetensors.torch import save_file

from search.core.errors import UserError, WeightsError
from search.models.backbones import check_backbone, hub_errors, hub_failure, timm_pretrained_source, weights_root
from search.core.progress import progress

log = logging.getLogger(__name__)

LIST_HINT = ("list the models with weights: python -c "
             "\"import timm; print(timm.list_models('resnet*', pretrained=True))\"")


def _check_writable(root: Path) -> None:
    """Say (one line) why ``root`` cannot be written, trying a file in it or, while it does not exist yet,
    in its nearest existing parent (which must then take the new folder); nothing stays behind."""
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        if not where.is_dir():
            raise NotADirectoryError(20, f"{where} is a file, not a folder")
        with tempfile.NamedTemporaryFile(dir=where, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"weights fetch: cannot write to {root} ({exc.strerror or exc}); choose another -o DIR") \
            from None


def fetch_weights(names: Sequence[str], output: str | Path | None = None, *, force: bool = False) -> list[Path]:
    """Save each timm backbone's pretrained weights as ``OUTPUT/NAME.safetensors``; the written paths.

    ``output`` defaults to the folder trials read when no ``weights_dir`` is given. Every name and
    target is checked before anything is downloaded; an existing file is replaced only with ``force``.
    """
    import timm

    if not names:
        raise UserError("weights fetch: name at least one timm model (e.g. resnet18)")
    root = weights_root(output)
    if root.exists() and not root.is_dir():
        raise UserError(f"weights fetch: {root} is a file, not a folder")
    for name in names:
        if name == "none" or check_backbone(name) is not None:
            raise WeightsError(f"weights fetch: {name!r} is not a timm model; {LIST_HINT}")
        problem = timm_pretrained_source(name)
        if problem is not None:
            raise WeightsError(f"weights fetch: {problem.rstrip('.')}; {LIST_HINT}")
    targets = {name: root / f"{name}.safetensors" for name in dict.fromkeys(names)}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise UserError(f"weights fetch: {', '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}"
                        "; add --force to replace")
    _check_writable(root)  # before any download: a read-only or full folder fails at once
    written = []
    for name, target in progress(targets.items(), desc="weights", unit="model", total=len(targets)):
        log.info("fetching %s through timm", name)
        try:
            model = timm.create_model(name, pretrained=True)
        except hub_errors() as exc:
            log.debug("timm could not load %s", name, exc_info=True)
            raise WeightsError(f"weights fetch {name}: timm could not load its weights: {hub_failure(exc)} "
                               "(run this on a machine online, with HF_HUB_OFFLINE unset)") from None
        # clone: safetensors refuses tensors that share memory (tied weights); each gets its own copy.
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        partial = target.with_name(f".{target.name}.partial")
        try:
            root.mkdir(parents=True, exist_ok=True)
            save_file(state, str(partial), metadata={"timm_model": name})
            os.replace(partial, target)  # a crash never leaves a half-written NAME.safetensors
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise WeightsError(f"weights fetch {name}: cannot write {target} ({exc.strerror or exc})") from None
        log.info("wrote %s (%d tensors)", target, len(state))
        written.append(target)
    return written
