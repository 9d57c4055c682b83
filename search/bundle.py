"""A trained model on disk: weights, architecture, preprocessing, and files to run it without us.

A *core* is what a checkpoint and an export share::

    model.safetensors     the trained weights (state dict)
    model.json            architecture config (the trial's TrialConfig), classes, source trial, metrics
    preprocessing.json    input size, aspect, colour space, mean/std, whitening, class names

An export bundle adds ``config.yaml`` (re-trains it), ``model.torchscript.pt`` and ``model.onnx``:
``nn.Sequential(preprocess, model)``, so the preprocessing travels with the network. Nothing here
unpickles: weights are safetensors, metadata is JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from search.config import TrialConfig
from search.data.colour import CHANNELS, Preprocess
from search.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "strategy-search-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
PREPROCESSING_FILE = "preprocessing.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
CORE_FILES = (WEIGHTS_FILE, MODEL_FILE, PREPROCESSING_FILE)
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
        return nn.Sequential(self.preprocess, self.model).cpu().eval()

    @torch.no_grad()
    def probabilities(self, images: Tensor, device: torch.device | None = None) -> Tensor:
        """Class probabilities for uint8 RGB images already at ``input_size``."""
        from search.train.loop import predict

        device = device or torch.device("cpu")
        self.model.to(device)
        self.preprocess.to(device)
        return predict(self.model, self.preprocess, images, device).softmax(dim=1).cpu()


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
    return out


def _write_model_json(bundle: Bundle, out: Path) -> None:
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {
            "config": bundle.config.to_dict(),
            "in_channels": CHANNELS[bundle.config.color],
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

    from search.models.factory import create_model

    src = Path(directory)
    missing = [name for name in CORE_FILES if not (src / name).is_file()]
    if missing:
        raise UserError(f"{src}: not an exported model (missing {', '.join(missing)}); "
                        "create one with strategy-search export STUDY -o DIR/")
    doc = _read_json(src / MODEL_FILE)
    pre = _read_json(src / PREPROCESSING_FILE)
    if doc.get("format") != FORMAT or int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{src / MODEL_FILE}: unknown model format {doc.get('format')!r} "
                        f"version {doc.get('format_version')!r}")
    arch = doc["architecture"]
    config = TrialConfig.from_dict(arch["config"])
    # The weights file holds every parameter, so no pretrained file is needed to rebuild it.
    model = create_model(dataclasses.replace(config, pretrained=False), int(arch["in_channels"]),
                         int(arch["num_classes"]), int(arch["input_size"]), None)
    try:
        load_model(model, str(src / WEIGHTS_FILE), strict=True)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"{src / WEIGHTS_FILE}: weights do not fit the architecture in {MODEL_FILE}: "
                        f"{str(exc).splitlines()[0]}") from None
    preprocess = Preprocess(pre["color"], pre["mean"], pre["std"], whiten=bool(pre["whiten"]))
    meta = {k: v for k, v in doc.items() if k not in ("format", "format_version", "architecture", "classes", "torch")}
    return Bundle(model.eval(), preprocess.eval(), config, list(doc["classes"]), int(arch["input_size"]),
                  pre["aspect"], pre.get("max_side"), meta)


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc})") from None


# ----------------------------------------------------------------------------- runnable files


def to_torchscript(bundle: Bundle) -> torch.jit.ScriptModule:
    """TorchScript of ``preprocess -> model``; takes uint8 or float RGB at the input size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices are not the user's business
        pre = torch.jit.script(bundle.preprocess.cpu().eval())
        net = bundle.model.cpu().eval()
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
    onnx_path = out / ONNX_FILE
    if onnx_path.is_file():
        try:
            import onnxruntime
        except ImportError:
            log.info("onnxruntime is not installed; %s was not checked", ONNX_FILE)
        else:
            session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            logits = session.run(["logits"], {"image": images.float().div(255.0).numpy()})[0]
            diffs["onnx"] = float((torch.from_numpy(logits) - reference).abs().max())
    return diffs


def write_bundle(bundle: Bundle, directory: str | Path, config_doc: dict[str, Any] | None = None,
                 *, onnx: bool = True) -> dict[str, Any]:
    """Write the full export into ``directory``; returns files written and the export checks."""
    from search.export import write_config

    out = Path(directory)
    save_core(bundle, out)
    if config_doc is not None:
        write_config(config_doc, out / CONFIG_FILE)
    write_torchscript(bundle, out / TORCHSCRIPT_FILE)
    notes: list[str] = []
    if onnx:
        try:
            write_onnx(bundle, out / ONNX_FILE)
        except Exception as exc:  # noqa: BLE001 - ONNX is optional; TorchScript already holds the model
            (out / ONNX_FILE).unlink(missing_ok=True)
            notes.append(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"use {TORCHSCRIPT_FILE}")
            log.warning(notes[-1])
    diffs = check_runnables(bundle, out)
    bad = {k: v for k, v in diffs.items() if not v <= EXPORT_TOLERANCE}
    if bad:
        notes.append("runnable files differ from the PyTorch model: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in bad.items()))
        log.warning(notes[-1])
    bundle.meta["export_checks"] = {"max_abs_logit_diff": diffs, "tolerance": EXPORT_TOLERANCE}
    _write_model_json(bundle, out)  # model.json now records the checks
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    return {"directory": str(out), "files": files, "checks": diffs, "notes": notes}
