"""timm backbones: pretrained weights from a local file first, else through timm (Hugging Face cache/hub).

Importing this module imports neither torch nor timm: the space validator reads :func:`check_backbone`
(timm's model names, read from its installed source) and :data:`FINETUNE_MODES`; building a model
or reading weights imports them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import logging
import pickle
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from search.core.errors import WeightsError
from search.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
DISCRIMINATIVE_FACTOR = 0.1  # backbone lr = head lr * this
# Read first when no weights_dir is given; `strategy-search weights fetch` writes here by default.
DEFAULT_WEIGHTS_DIR = "~/.cache/strategy-search/weights"
# Wrapper prefixes (DDP, torch.compile) that a saved state dict may carry; timm strips the same.
_PREFIXES = ("module.", "_orig_mod.")
# Keys under which training checkpoints nest the state dict, in timm's order of preference (EMA first).
_NESTED = ("state_dict_ema", "model_ema", "state_dict", "model")


def hub_errors() -> tuple[type[BaseException], ...]:
    """What timm/huggingface_hub raise when weights cannot be fetched: offline, no network, not cached,
    HTTP errors (gated, missing). LocalEntryNotFoundError and OfflineModeIsEnabled are OSErrors;
    EntryNotFoundError and HfHubHTTPError are listed for huggingface_hub versions where they are not."""
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError

    return (OSError, EntryNotFoundError, HfHubHTTPError)


# A model timm lists (``timm.list_models()``) is a function decorated ``@register_model`` in timm/models/.
_REGISTERED = re.compile(r"^@register_model\s*\n\s*def\s+(\w+)\s*\(", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def timm_model_names() -> frozenset[str]:
    """The names ``timm.list_models()`` gives, read from timm's installed source without importing it
    (importing timm imports torch and torchvision: seconds, for a check of a space file's spelling).
    Falls back to importing timm where its source cannot be read (tests/test_backbones.py compares both);
    :func:`check_backbone` asks timm itself before it refuses a name missing here."""
    spec = importlib.util.find_spec("timm")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    names: set[str] = set()
    for folder in folders:
        for path in sorted((Path(folder) / "models").glob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if "@register_model" in text:
                names.update(_REGISTERED.findall(text))
    return frozenset(names) if names else _listed_by_timm()


@functools.lru_cache(maxsize=1)
def _listed_by_timm() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def check_backbone(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"backbone must be a string, got {name!r}"
    arch = name.split(".")[0]
    # A name the source scan missed (a timm release registering models another way) is not refused
    # before timm itself says so: only a wrong name pays for importing timm.
    if name == "none" or arch in timm_model_names() or arch in _listed_by_timm():
        return None
    return f"backbone {name!r} is neither 'none' nor a timm model (see timm.list_models())"


def weights_root(weights_dir: str | Path | None) -> Path:
    """The local weights folder (or file): ``weights_dir`` if given, else :data:`DEFAULT_WEIGHTS_DIR`."""
    return Path(weights_dir if weights_dir is not None else DEFAULT_WEIGHTS_DIR).expanduser()


def check_weights_dir(weights_dir: str | Path | None) -> str | None:
    """A warning when an explicitly given ``weights_dir`` does not exist on this machine, else None.

    Not an error: the space file travels to other machines (where the folder may exist), and
    timm's own loading is the fallback here.
    """
    if weights_dir is None or weights_root(weights_dir).exists():
        return None
    return (f"weights_dir {weights_root(weights_dir)} does not exist on this machine; "
            "pretrained backbones load through timm (Hugging Face cache or download) instead")


def find_weights(backbone: str, weights_dir: str | Path | None) -> Path | None:
    """The local weight file for ``backbone``, or None: DIR/NAME.safetensors|.pth|.pt|.bin,
    DIR/NAME/model.*, or DIR/NAME.<tag>.* (timm's ``resnet18.a1_in1k`` naming); ``weights_dir``
    may also be the file itself. DIR is :func:`weights_root`; a missing DIR holds nothing."""
    root = weights_root(weights_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        return None
    candidates = [root / f"{backbone}{s}" for s in WEIGHT_SUFFIXES]
    candidates += [root / backbone / f"{stem}{s}" for stem in ("model", "pytorch_model") for s in WEIGHT_SUFFIXES]
    for c in candidates:
        if c.is_file():
            return c
    tagged = sorted(p for p in root.glob(f"{backbone}.*") if p.suffix in WEIGHT_SUFFIXES)
    return tagged[0] if tagged else None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, never unpickling code: safetensors, or torch.load(weights_only=True)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise WeightsError(f"cannot read weights {path}: {_unreadable(exc)}; nothing in it was unpickled "
                           "(use .safetensors, or a plain state dict saved with torch.save(model.state_dict()))") \
            from None
    if isinstance(state, dict):
        nested = next((state[k] for k in _NESTED if isinstance(state.get(k), dict)), None)
        state = nested if nested is not None else state
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"weights {path} hold no state dict (a mapping of parameter names to tensors)")
    return {_strip_prefixes(k): v for k, v in state.items()}


def _unreadable(exc: BaseException) -> str:
    """What was wrong with a weights file, in a few words. (PyTorch's own message for a refused pickle
    suggests ``weights_only=False``: never ours to give, it would run the file's code.)"""
    text = str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, EOFError):
        return f"cannot read it ({exc.strerror or text})"
    if isinstance(exc, EOFError) or not text.strip():
        return "the file is empty or cut short"
    if isinstance(exc, SafetensorError):
        return f"not a valid safetensors file ({text.strip().splitlines()[0][:150]})"
    detail = re.search(r"(?:unsupported GLOBAL|Unsupported global:?)\s*(?:GLOBAL\s+)?([\w.]+)", text, re.IGNORECASE)
    if detail:
        return f"it holds Python objects beyond tensors ({detail.group(1)}), which would run code when loaded"
    operand = re.search(r"Unsupported operand [^\n.]*", text)
    if operand or "Weights only load failed" in text:
        why = operand.group(0) if operand else "unreadable pickle data"
        return f"not a PyTorch weights file, or a damaged one ({why})"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "not a PyTorch weights file, or a damaged one (a truncated or corrupted zip archive)"
    return f"not a weights file ({text.strip().splitlines()[0][:150]})"


def _strip_prefixes(key: str) -> str:
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def hub_failure(exc: BaseException) -> str:
    """Why timm could not load pretrained weights, in a few words (for one-line errors)."""
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    if hf_constants.HF_HUB_OFFLINE:  # read from the environment when huggingface_hub is imported
        return "HF_HUB_OFFLINE is set and the Hugging Face cache has no copy"
    if isinstance(exc, LocalEntryNotFoundError):
        return "the Hugging Face hub cannot be reached and its cache has no copy"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:150]}".rstrip(": ")


def timm_pretrained_source(name: str) -> str | None:
    """Why timm has no pretrained weights for ``name`` (unknown tag, none published), else None."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as exc:  # an unknown tag: "Invalid pretrained tag (x) for resnet18."
        return str(exc)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return f"timm publishes no pretrained weights for {name!r}"
    return None


def _missing(name: str, weights_dir: str | Path | None, why: str, *, downloadable: bool = True) -> WeightsError:
    """The one-line error naming both ways out: a local file, or timm's download."""
    root = weights_root(weights_dir)
    where = str(root) if root.is_dir() else f"{root} (does not exist)"
    local = f"no pretrained weights for backbone {name!r}: no file in {where}, and timm cannot load them: {why}. "
    if not downloadable:
        return WeightsError(local + f"Put {name}.safetensors in that folder, or use pretrained: false")
    return WeightsError(
        local + f"Either put {name}.safetensors in that folder (`strategy-search weights fetch {name} -o DIR` "
        "on a connected machine writes it), or let timm download it: go online with HF_HUB_OFFLINE unset")


def _overlay(state: dict[str, torch.Tensor], stack: Any) -> dict[str, Any]:
    """timm's pretrained_cfg overlay that loads ``state``: in memory where timm takes a state dict,
    else from a temporary safetensors file (timm reads those with safetensors, never unpickling)."""
    import timm
    from safetensors.torch import save_file

    if "state_dict" in {f.name for f in dataclasses.fields(timm.models.PretrainedCfg)}:
        return {"state_dict": state, "source": ""}
    path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    # source='' stops timm from preferring the hub; 'file' then wins over any URL.
    return {"file": str(path), "source": ""}


def create_backbone(name: str, num_classes: int, in_chans: int, *, pretrained: bool,
                    weights_dir: str | Path | None, dropout: float = 0.0, **extra: Any) -> nn.Module:
    """A timm model with a fresh ``num_classes`` head; pretrained weights come from a local file under
    :func:`weights_root` if there is one, else through timm (Hugging Face cache, or a download)."""
    import timm

    # ``extra``: model arguments from the trial's strategies (e.g. drop_path_rate).
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "drop_rate": dropout, **extra}
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    path = find_weights(name, weights_dir)
    if path is not None:
        log.info("loading %s weights from %s", name, path)
        with contextlib.ExitStack() as stack:
            return timm.create_model(name, pretrained=True,
                                     pretrained_cfg_overlay=_overlay(read_state_dict(path), stack), **kwargs)
    unavailable = timm_pretrained_source(name)
    if unavailable is not None:
        raise _missing(name, weights_dir, unavailable, downloadable=False)
    log.info("no local weights for %s in %s; loading them through timm", name, weights_root(weights_dir))
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except hub_errors() as exc:
        log.debug("timm could not load %s", name, exc_info=True)
        raise _missing(name, weights_dir, hub_failure(exc)) from None


def _head_params(model: nn.Module) -> list[nn.Parameter]:
    from torch import nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []


Groups = list[dict[str, Any]]
# Fine-tuning modes: (body params, head params, lr) -> optimizer param groups (the head trains at lr).
FINETUNE_MODES: Registry[Callable[[list[nn.Parameter], list[nn.Parameter], float], Groups]] = Registry("finetune mode")
FINETUNE_MODES.add("full", lambda body, head, lr: [{"params": body + head, "lr": lr}])


@FINETUNE_MODES.register("freeze")
def _freeze(body: list[nn.Parameter], head: list[nn.Parameter], lr: float) -> Groups:
    for p in body:
        p.requires_grad_(False)
    return [{"params": head, "lr": lr}]


FINETUNE_MODES.add("discriminative_lr",
                   lambda body, head, lr: [{"params": body, "lr": lr * DISCRIMINATIVE_FACTOR}, {"params": head, "lr": lr}])


def param_groups(model: nn.Module, finetune: str, lr: float) -> Groups:
    """Optimizer param groups for a fine-tuning mode (the head always trains at ``lr``)."""
    mode = FINETUNE_MODES.get(finetune)
    head = _head_params(model)
    if not head:  # no separate classifier to tell apart: everything trains
        return [{"params": list(model.parameters()), "lr": lr}]
    head_ids = {id(p) for p in head}
    return mode([p for p in model.parameters() if id(p) not in head_ids], head, lr)


def freeze_norm_statistics(model: nn.Module) -> None:
    """Keep frozen layers' BatchNorm statistics fixed (call after ``model.train()``).

    A frozen backbone should compute the same features at every step; updating its running
    statistics on the new data would shift them under the trained head.
    """
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
