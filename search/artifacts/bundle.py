"""A trained model on disk: weights, architecture, preprocessing, and files to run it without us.

A *core* is what a checkpoint and an export share::

    model.safetensors     the trained weights (state dict)
    model.json            architecture config (the trial's TrialConfig), classes, source trial, metrics
    preprocessing.json    input size, aspect, color space, mean/std, whitening, class names

An export bundle adds ``config.yaml`` (re-trains it), ``model.pt2`` (torch.export), ``model.torchscript.pt``
and ``model.onnx``: ``nn.Sequential(preprocess, model)``, so the preprocessing travels with the network. Nothing here
unpickles: weights are safetensors, metadata is JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from search.core.config import TrialConfig
from search.data.color import COLOR_SPACES, build_preprocess, channels_of
from search.data.preprocess import Preprocess
from search.data.decode import ASPECTS
from search.core.errors import UserError
from search.models.backbones import check_backbone
from search.models import factory  # module attribute lookups: tests spy on create_model
from search.strategies import PARAMS, check_value, inference_model
from search.train.loop import predict

log = logging.getLogger(__name__)

FORMAT = "strategy-search-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
PREPROCESSING_FILE = "preprocessing.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
EXPORTED_FILE = "model.pt2"  # torch.export: torch.export.load(path).module(), no deprecation warning
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
CORE_FILES = (WEIGHTS_FILE, MODEL_FILE, PREPROCESSING_FILE)
MANIFEST_FILE = "bundle.json"  # marks a folder as our bundle and lists its files
# Every name a bundle can hold: only regular files of these names are ever replaced or deleted.
BUNDLE_FILES = (*CORE_FILES, CONFIG_FILE, EXPORTED_FILE, TORCHSCRIPT_FILE, ONNX_FILE, MANIFEST_FILE)
BUNDLE_FORMAT = "strategy-search-bundle"
EXPORT_TOLERANCE = 1e-4  # max |logit difference| accepted between PyTorch and TorchScript/ONNX
ONNX_OPSET = 17


@dataclass
class Bundle:
    """A model ready to predict: network, preprocessing and what is needed to feed it."""

    model: nn.Module
    preprocess: Preprocess
    config: TrialConfig
    classes: list[str]
    input_size: int
    aspect: str
    max_side: int | None  # decoded images are first shrunk to fit this (as the dataset loader does)
    meta: dict[str, Any] = field(default_factory=dict)  # source trial, metrics, export checks

    def preprocessing(self) -> dict[str, Any]:
        d = self.preprocess.describe()
        return {
            "input_size": self.input_size,
            "aspect": self.aspect,
            "max_side": self.max_side,
            "color": d["color"],
            "mean": d["mean"],
            "std": d["std"],
            "whiten": d["whiten"],
            "class_names": list(self.classes),
            "input": f"RGB images (N, 3, {self.input_size}, {self.input_size}): uint8 in [0, 255] or float32 "
                     "in [0, 1] (the ONNX model takes float32 only)",
            "resize": "decode as RGB; shrink to fit max_side (PIL thumbnail); resize to input_size x input_size "
                      "with antialiasing (stretch) or keep the aspect and pad with black (pad)",
            "output": "logits (N, number of classes) in class_names order; softmax gives probabilities",
        }

    def production_module(self) -> nn.Module:
        """``preprocess -> model``, on the CPU, in eval mode: what TorchScript and ONNX files hold."""
        return nn.Sequential(self.preprocess, inference_model(self.config, self.model)).cpu().eval()

    @torch.no_grad()
    def probabilities(self, images: Tensor, device: torch.device | None = None) -> Tensor:
        """Class probabilities for uint8 RGB images already at ``input_size``."""
        device = device or torch.device("cpu")
        self.model.to(device)
        self.preprocess.to(device)
        return predict(inference_model(self.config, self.model), self.preprocess, images, device).softmax(dim=1).cpu()


def from_training(model: nn.Module, preprocess: Preprocess, config: TrialConfig, classes: list[str],
                  input_size: int, max_side: int | None, meta: dict[str, Any] | None = None) -> Bundle:
    """A CPU copy of a freshly trained model (the caller's model stays where it is)."""
    model = copy.deepcopy(model).cpu().eval()
    model = model.to(memory_format=torch.contiguous_format)
    preprocess = copy.deepcopy(preprocess).cpu().eval()
    return Bundle(model, preprocess, config, list(classes), input_size, config.aspect, max_side, dict(meta or {}))


def bundle_from_result(result: Any, config: TrialConfig, dataset: Any, objectives: Any,
                       source: dict[str, Any] | None = None) -> Bundle:
    """The bundle of a :class:`~search.train.loop.TrainResult`, with its metrics and source trial."""
    names = [o.name for o in objectives]
    meta: dict[str, Any] = {
        "source": source or {},
        "dataset": dataset.label,
        "values": {"split": "validation", **dict(zip(names, result.values))},
        "metrics": {"validation": result.val.to_dict(result.classes),
                    "test": result.test.to_dict(result.classes) if result.test is not None else None},
    }
    # Folder images were shrunk to fit cache_max_side when decoded; built-ins were not.
    max_side = dataset.cache_max_side if dataset.path is not None else None
    return from_training(result.model, result.preprocess, config, result.classes, result.input_size, max_side, meta)


# ----------------------------------------------------------------------------- core files


def save_core(bundle: Bundle, directory: str | Path) -> Path:
    """Write weights, architecture and preprocessing into ``directory`` (created if needed)."""
    from safetensors.torch import save_model

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    _write_model_json(bundle, out)
    _write_json(out / PREPROCESSING_FILE, bundle.preprocessing())
    same_mode(out / WEIGHTS_FILE, out / MODEL_FILE)
    return out


def same_mode(path: Path, like: Path) -> None:
    """Give ``path`` the permissions of ``like`` (a file written the ordinary way, under the umask):
    safetensors writes its file 0600, which left one file of a bundle unreadable to the group."""
    os.chmod(path, like.stat().st_mode & 0o777)


def _write_model_json(bundle: Bundle, out: Path) -> None:
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {
            "config": bundle.config.to_dict(),
            "in_channels": channels_of(bundle.config.color),
            "num_classes": len(bundle.classes),
            "input_size": bundle.input_size,
        },
        "classes": list(bundle.classes),
        "torch": torch.__version__,
        **bundle.meta,
    }
    _write_json(out / MODEL_FILE, doc)


def load_core(directory: str | Path) -> Bundle:
    """Rebuild a :class:`Bundle` from its core files (CPU, eval mode)."""
    from safetensors.torch import load_model

    src = Path(directory)
    if not src.is_dir():
        raise UserError(f"{src}: no such directory; create an export with strategy-search export STUDY -o DIR/")
    missing = [name for name in CORE_FILES if not (src / name).is_file()]
    if missing:
        raise UserError(f"{src}: not an exported model (missing {', '.join(missing)}); "
                        "create one with strategy-search export STUDY -o DIR/")
    doc = _read_json(src / MODEL_FILE)
    pre = _read_json(src / PREPROCESSING_FILE)
    config, arch, classes = _check_model_json(src / MODEL_FILE, doc)
    _check_preprocessing(src / PREPROCESSING_FILE, pre, channels_of(config.color))
    in_channels, num_classes, input_size = arch
    # The weights file holds every parameter, so no pretrained file is needed to rebuild it.
    config = config.replace(pretrained=False)
    _check_weight_shapes(src, config, arch)  # before allocating: a forged model.json must not cost GBs
    model = factory.create_model(config, in_channels, num_classes, input_size, None)
    try:
        load_model(model, str(src / WEIGHTS_FILE), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"{src / WEIGHTS_FILE}: weights do not fit the architecture in {MODEL_FILE}: "
                        f"{str(exc).splitlines()[0]}") from None
    preprocess = build_preprocess(pre["color"], pre["mean"], pre["std"], whiten=pre["whiten"])
    meta = {k: v for k, v in doc.items() if k not in ("format", "format_version", "architecture", "classes", "torch")}
    return Bundle(model.eval(), preprocess.eval(), config, classes, input_size, pre["aspect"], pre.get("max_side"),
                  meta)


def _check_model_json(path: Path, doc: Any) -> tuple[TrialConfig, tuple[int, int, int], list[str]]:
    """Validate model.json (types and bounds) before anything is built from it."""
    def bad(key: str, why: str) -> UserError:
        return UserError(f"{path}: {key}: {why}")

    if not isinstance(doc, dict):
        raise bad("(document)", "expected a JSON object")
    version = doc.get("format_version", 0)
    if doc.get("format") != FORMAT or not isinstance(version, int) or isinstance(version, bool) \
            or version > FORMAT_VERSION:
        raise UserError(f"{path}: unknown model format {doc.get('format')!r} version {version!r}")
    arch = doc.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("config"), dict):
        raise bad("architecture", "expected an object with config, in_channels, num_classes, input_size")
    values = arch["config"]
    for name, value in values.items():
        if name in PARAMS and name not in ("augment", "backbone"):
            problem = check_value(name, value)
            if problem:
                raise bad(f"architecture.config.{name}", problem)
    backbone = values.get("backbone", "none")
    if not isinstance(backbone, str):
        raise bad("architecture.config.backbone", f"expected a model name, got {backbone!r}")
    if backbone != "none":
        problem = check_backbone(backbone)
        if problem:
            raise bad("architecture.config.backbone", problem)
    if not isinstance(values.get("augment", "none"), (str, list)):  # training only; may name the space's own sets
        raise bad("architecture.config.augment", f"expected a name or a list, got {values.get('augment')!r}")
    config = TrialConfig.from_dict(values)
    numbers = []
    for key, low, high in (("in_channels", 1, 3), ("num_classes", 2, 100_000), ("input_size", 4, 1024)):
        value = arch.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"architecture.{key}", f"expected an integer in [{low}, {high}], got {value!r}")
        numbers.append(value)
    if numbers[0] != channels_of(config.color):
        raise bad("architecture.in_channels", f"{numbers[0]} does not match color {config.color!r}")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) != numbers[1]:
        raise bad("classes", f"expected a list of {numbers[1]} class names (architecture.num_classes)")
    return config, (numbers[0], numbers[1], numbers[2]), list(classes)


def _check_preprocessing(path: Path, pre: Any, channels: int) -> None:
    def bad(key: str, why: str) -> UserError:
        return UserError(f"{path}: {key}: {why}")

    if not isinstance(pre, dict):
        raise bad("(document)", "expected a JSON object")
    if pre.get("color") not in COLOR_SPACES:
        raise bad("color", f"expected one of {', '.join(COLOR_SPACES.names())}, got {pre.get('color')!r}")
    if channels_of(pre["color"]) != channels:
        raise bad("color", f"{pre['color']!r} does not match the model's {channels} input channel(s)")
    for key in ("mean", "std"):
        value = pre.get(key)
        if not isinstance(value, list) or len(value) != channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise bad(key, f"expected a list of {channels} finite numbers, got {value!r}")
    if not all(v > 0 for v in pre["std"]):
        raise bad("std", "every value must be > 0")
    if not isinstance(pre.get("whiten"), bool):
        raise bad("whiten", f"expected true or false, got {pre.get('whiten')!r}")
    if pre.get("aspect") not in ASPECTS:
        raise bad("aspect", f"expected one of {', '.join(ASPECTS)}, got {pre.get('aspect')!r}")
    side = pre.get("max_side")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= 16384):
        raise bad("max_side", f"expected null or an integer in [8, 16384], got {side!r}")


def _check_weight_shapes(src: Path, config: TrialConfig, arch: tuple[int, int, int]) -> None:
    """Compare the architecture's parameter shapes (built on the meta device: no memory) with the
    shapes recorded in the weights file's header, so a mismatch is caught before allocating."""
    from safetensors import safe_open

    try:
        with torch.device("meta"):
            skeleton = factory.create_model(config, *arch, None)
    except Exception as exc:  # noqa: BLE001 - some backbones cannot be built on meta; load_model checks them
        log.debug("meta build failed (%s); weight shapes are checked on load", exc)
        return
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    try:
        with safe_open(str(src / WEIGHTS_FILE), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on a corrupt file
        raise UserError(f"{src / WEIGHTS_FILE}: not a readable safetensors file ({str(exc).splitlines()[0]})") \
            from None
    for key, shape in expected.items():
        if found.get(key) != shape:
            raise UserError(f"{src / WEIGHTS_FILE}: weights do not fit the architecture in {MODEL_FILE}: "
                            f"{key} is {found.get(key)} in the file, {shape} in the architecture")


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > 64 << 20:
            raise ValueError("larger than 64 MB")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc})") from None


# ----------------------------------------------------------------------------- runnable files


def to_torchscript(bundle: Bundle) -> torch.jit.ScriptModule:
    """TorchScript of ``preprocess -> model``; takes uint8 or float RGB at the input size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices are not the user's business
        pre = torch.jit.script(bundle.preprocess.cpu().eval())
        # The inference wrappers (e.g. flip TTA) belong in the file: it must give what the bundle predicts.
        net = inference_model(bundle.config, bundle.model.cpu().eval()).eval()
        try:
            scripted: nn.Module = torch.jit.script(net)
        except Exception as exc:  # noqa: BLE001 - TorchScript rejects many valid modules; tracing is the fallback
            log.debug("scripting the network failed (%s); tracing it", str(exc).splitlines()[0] if str(exc) else exc)
            example = bundle.preprocess(_examples(bundle, 2))
            with torch.no_grad():
                scripted = torch.jit.trace(net, example, check_trace=False)
        return torch.jit.script(nn.Sequential(pre, scripted).eval())


def write_torchscript(bundle: Bundle, path: str | Path) -> Path:
    module = to_torchscript(bundle)
    extra = {PREPROCESSING_FILE: json.dumps(bundle.preprocessing())}
    module.save(str(path), _extra_files=extra)
    return Path(path)


def write_exported(bundle: Bundle, path: str | Path) -> Path:
    """``preprocess -> model`` as a torch.export program (``torch.export.load(path).module()``): uint8 RGB
    (N, 3, S, S) in, logits out, any batch size. TorchScript is deprecated in PyTorch (loading it warns);
    this is the format PyTorch recommends instead."""
    module = bundle.production_module()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, (_examples(bundle, 2),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    return Path(path)


def write_onnx(bundle: Bundle, path: str | Path) -> Path:
    """ONNX of ``preprocess -> model``: input ``image`` float32 RGB in [0, 1], output ``logits``."""
    module = bundle.production_module()
    example = _examples(bundle, 2).float().div(255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter works offline with just the onnx package.
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return Path(path)


def _examples(bundle: Bundle, n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, bundle.input_size, bundle.input_size), generator=g, dtype=torch.uint8)


@torch.no_grad()
def check_runnables(bundle: Bundle, directory: str | Path, n: int = 8) -> dict[str, float]:
    """Max |logit difference| of the TorchScript and ONNX files against the PyTorch model."""
    out = Path(directory)
    images = _examples(bundle, n, seed=1)
    reference = bundle.production_module()(images)
    diffs: dict[str, float] = {}
    ts_path = out / TORCHSCRIPT_FILE
    if ts_path.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(ts_path), map_location="cpu")
        diffs["torchscript"] = float((scripted(images) - reference).abs().max())
        diffs["torchscript_float_input"] = float((scripted(images.float().div(255.0)) - reference).abs().max())
    exported_path = out / EXPORTED_FILE
    if exported_path.is_file():
        program = torch.export.load(str(exported_path)).module()
        diffs["torch_export"] = float((program(images) - reference).abs().max())
    onnx_path = out / ONNX_FILE
    if onnx_path.is_file():
        try:
            import onnxruntime
        except ImportError:
            log.debug("onnxruntime is not installed; %s is not checked", ONNX_FILE)
        else:
            session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            logits = session.run(["logits"], {"image": images.float().div(255.0).numpy()})[0]
            diffs["onnx"] = float((torch.from_numpy(logits) - reference).abs().max())
    return diffs


def write_bundle(bundle: Bundle, directory: str | Path, config_doc: dict[str, Any] | None = None,
                 *, onnx: bool = True, force: bool = False) -> dict[str, Any]:
    """Write the full export into ``directory``; returns files written and the export checks.

    The bundle is written into a temporary folder beside ``directory`` and swapped in whole, so
    no file of an earlier bundle survives (a stale ``model.onnx`` after ``--no-onnx``). An existing
    non-empty ``directory`` needs ``force``: a previous bundle (it has ``bundle.json``) is then
    replaced; any other folder gets the bundle's files and keeps its own.
    """
    out = Path(directory)
    mode = check_output(out, force)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_core(bundle, tmp)
        if config_doc is not None:
            write_config(config_doc, tmp / CONFIG_FILE)
        write_torchscript(bundle, tmp / TORCHSCRIPT_FILE)
        notes: list[str] = []
        try:
            write_exported(bundle, tmp / EXPORTED_FILE)
        except Exception as exc:  # noqa: BLE001 - some models do not export; TorchScript already holds them
            (tmp / EXPORTED_FILE).unlink(missing_ok=True)
            notes.append(f"torch.export failed ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); use {TORCHSCRIPT_FILE}")
            log.warning(notes[-1])
        if onnx:
            try:
                write_onnx(bundle, tmp / ONNX_FILE)
            except Exception as exc:  # noqa: BLE001 - ONNX is optional; TorchScript already holds the model
                (tmp / ONNX_FILE).unlink(missing_ok=True)
                notes.append(f"ONNX export failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); use {TORCHSCRIPT_FILE}")
                log.warning(notes[-1])
        diffs = check_runnables(bundle, tmp)
        if (tmp / ONNX_FILE).is_file() and "onnx" not in diffs:
            notes.append(f"{ONNX_FILE} not checked: onnxruntime is not installed (pip install 'strategy-search[onnx]')")
        bad = {k: v for k, v in diffs.items() if not v <= EXPORT_TOLERANCE}
        if bad:
            notes.append("runnable files differ from the PyTorch model: "
                         + ", ".join(f"{k} {v:.2e}" for k, v in bad.items()))
            log.warning(notes[-1])
        bundle.meta["export_checks"] = {"max_abs_logit_diff": diffs, "tolerance": EXPORT_TOLERANCE}
        _write_model_json(bundle, tmp)  # model.json now records the checks
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        _write_json(tmp / MANIFEST_FILE, {"format": BUNDLE_FORMAT, "files": files,
                                          "source": bundle.meta.get("source", {})})
        _swap_in(tmp, out, mode)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"directory": str(out), "files": files, "checks": diffs, "notes": notes}


def check_output(out: Path, force: bool) -> str:
    """How a bundle may be written at ``out``: ``new`` (nothing there), ``replace`` (a previous
    bundle and nothing else, with ``force``) or ``merge`` (an empty folder, or one with other
    files, with ``force``: ours are moved in, theirs stay). Refusals are :class:`UserError`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a directory for the bundle")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write {out}: {parent} is a file, not a directory")
    if not out.is_dir():
        return "new"
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return "merge"  # an empty folder (maybe the working directory) is filled, not replaced
    listed = _bundle_files(out)
    if listed is not None:
        if not force:
            raise UserError(f"{out} already holds an exported bundle; add --force to replace it")
        foreign = [name for name in present if name not in listed and name != MANIFEST_FILE]
        return "merge" if foreign or out.resolve() == Path.cwd().resolve() else "replace"
    if not force:
        raise UserError(f"{out} is not empty and is not an exported bundle ({', '.join(present[:3])}"
                        f"{', ...' if len(present) > 3 else ''}); choose an empty or new directory, "
                        "or add --force to write the bundle's files into it")
    return "merge"


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _bundle_files(directory: Path) -> list[str] | None:
    """The files a bundle in ``directory`` wrote (None: it is not a bundle this tool wrote).

    ``bundle.json`` is only believed when it names nothing but a bundle's own file names, its model
    among them, and each is a regular file there: a forged list (``"files": ["notes.txt", "photos"]``)
    makes the folder someone else's, whose files are never deleted.
    """
    manifest = directory / MANIFEST_FILE
    try:
        if not _regular(manifest) or manifest.stat().st_size > 1 << 20:
            return None
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    files = doc.get("files") if isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f in BUNDLE_FILES for f in files):
        return None
    if MODEL_FILE not in files or not all(_regular(directory / f) for f in files):
        return None
    return files


def _swap_in(tmp: Path, out: Path, mode: str) -> None:
    """Put the finished bundle in ``tmp`` at ``out``: whole when ``out`` holds nothing of the user's."""
    if mode in ("new", "replace"):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    # A folder with the user's own files (--force): move ours in, drop a previous bundle's, keep theirs.
    ours = sorted(tmp.iterdir())
    for p in ours:  # every obstacle before anything moves: never half a bundle
        target = out / p.name
        if target.is_dir() and not target.is_symlink():
            raise UserError(f"{target} is a directory; it is in the way of the bundle's {p.name}")
    previous = _bundle_files(out) or []
    new = {p.name for p in ours}
    for name in previous:
        if name not in new and _regular(out / name):
            (out / name).unlink()
    for p in ours:
        os.replace(p, out / p.name)


def check_file_output(path: str | Path, force: bool) -> Path:
    """``path`` as a file we may write: not a directory, under no file, replaced only with ``force``."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a .yaml file name")
    if out.exists() and not force:
        raise UserError(f"{out} exists; add --force to overwrite it")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write {out}: {parent} is a file, not a directory")
    return out


def write_config(doc: dict[str, Any], path: str | Path, *, force: bool = True) -> Path:
    """Write a runnable space file; an existing file is replaced only with ``force``."""
    out = check_file_output(path, force)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    header = "# Exported by strategy-search: run it with `strategy-search run " + out.name + "`\n"
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out
