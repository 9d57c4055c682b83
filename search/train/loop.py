"""One trial's training: data -> model -> epochs with validation -> test metrics and costs.

Optuna stays outside: the caller passes ``on_epoch(EpochLog)``, which may raise to prune, and
``on_model(costs)``, told the model's size and latency before the first step (it may raise too).
The same function trains search trials, exported configs and diagnostics.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from search.core.config import TrialConfig
from search.data.color import make_preprocess
from search.data.datasets import Prepared, prepare
from search.data.preprocess import Preprocess
from search.data.transforms import BatchAugment, resolve_augment
from search.models.backbones import freeze_norm_statistics, param_groups
from search.models.factory import count_params, create_model
from search.core.progress import progress
from search.core.spec import DatasetSpec, ObjectiveSpec, SearchSpace
from search.train.batches import batch_slices, iterate_batches
from search.train.loss import CrossEntropy
from search.train.metrics import Metrics, confusion_matrix, objective_value, positive_index
from search.train.stats import NonFiniteLoss, StepStats
from search.strategies import TrialContext, active_hooks, inference_model, input_channels
from search.strategies.optimization import OPTIMIZERS, SCHEDULES

log = logging.getLogger(__name__)

EVAL_BATCH = 512
# On the CPU an evaluation batch's activations live in the worker's own memory: bound them by
# pixels (512 images at 32x32), so 64 px gets 128 images and 224 px 16, not 512 whatever the size.
EVAL_PIXELS_CPU = 512 * 32 * 32
PROGRESS_EVERY = 5.0  # seconds between per-epoch progress lines


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    value: float  # the first objective on the validation split
    lr: float
    seconds: float
    grad_norm_max: float
    # Every objective at this epoch (a cost as measured before training, when ``on_model`` was
    # given), and this epoch's validation metrics: what pruners and constraint judges read; neither
    # is part of the stored history entry.
    values: tuple[float, ...] = field(default=(), repr=False)
    metrics: Metrics | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if k not in ("values", "metrics")}


@dataclass
class TrainResult:
    model: nn.Module
    preprocess: Preprocess
    classes: list[str]
    input_size: int
    history: list[EpochLog]
    val: Metrics
    test: Metrics | None
    values: list[float]  # one per objective, on the validation split
    n_params: int
    epoch_seconds: float
    latency_ms: float
    restored_epoch: int | None = None  # the epoch whose weights were kept (restore_best_epoch), else None
    compile_seconds: float = 0.0  # the first training step's time when the model is compiled (inside epoch 1)


def resolve_device(name: str | None = None) -> torch.device:
    """``cuda`` when available unless ``name`` says otherwise."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from search.core.errors import UserError

        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(model: nn.Module, preprocess: Preprocess, images: Tensor, device: torch.device,
            batch: int | None = None) -> Tensor:
    """Logits (float32) for uint8 RGB images at the model's input size."""
    if batch is None:
        # ``shape``, not ``dim()``: a memory-mapped split answers it without gathering its rows.
        pixels = images.shape[-1] * images.shape[-2] if len(images.shape) == 4 else 1
        batch = EVAL_BATCH if device.type == "cuda" else max(16, min(EVAL_BATCH, EVAL_PIXELS_CPU // pixels))
    model.eval()
    outs = []
    for i in range(0, len(images), batch):
        x = preprocess(images[i : i + batch].to(device))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outs.append(model(x).float())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, preprocess: Preprocess, images: Tensor, labels: Tensor, num_classes: int,
             device: torch.device) -> Metrics:
    logits = predict(model, preprocess, images, device)
    loss = nn.functional.cross_entropy(logits, labels.to(logits.device)).item() if len(labels) else float("nan")
    pred = logits.argmax(dim=1)
    return Metrics(confusion=confusion_matrix(labels.cpu(), pred.cpu(), num_classes), loss=loss)


def measure_latency(model: nn.Module, preprocess: Preprocess, sample: Tensor, device: torch.device,
                    repeats: int = 20) -> float:
    """Milliseconds per single-image forward pass, preprocessing included."""
    x = sample[:1].to(device)
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(preprocess(x))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(preprocess(x))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000.0


def architecture_costs(config: TrialConfig, model: nn.Module, preprocess: Preprocess, sample: Tensor,
                       device: torch.device) -> dict[str, float]:
    """``params`` (of the kept weights) and ``latency_ms`` (with the inference wrappers, e.g. TTA)."""
    return {"params": float(count_params(model)),
            "latency_ms": measure_latency(inference_model(config, model), preprocess, sample, device)}


def train(
    config: TrialConfig,
    dataset: DatasetSpec,
    objectives: Sequence[ObjectiveSpec] = (ObjectiveSpec(),),
    *,
    device: torch.device | None = None,
    weights_dir: str | Path | None = None,
    augment_sets: Mapping[str, Sequence[Any]] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_model: Callable[[Mapping[str, float]], None] | None = None,
    evaluate_test: bool = True,
    label: str = "trial",
    data: Prepared | None = None,
) -> TrainResult:
    """Train one configuration and measure it. Raises :class:`NonFiniteLoss` on NaN/inf loss."""
    device = device or resolve_device()
    seed = 0 if config.seed is None else config.seed
    seed_everything(seed)
    data = data or prepare(dataset, config.input_size, config.aspect, device)
    classes = data.classes
    num_classes = len(classes)
    for spec in objectives:
        positive_index(spec, classes)  # fail before training on a wrong class name
    plan = resolve_augment(config.augment, augment_sets)
    preprocess = make_preprocess(config.color, config.normalize, plan.whiten, data.train_x.cpu()).to(device)
    augment = BatchAugment(plan, data.size)

    n_train = len(data.train_y)
    batch_size = min(config.batch_size, n_train)
    steps = max(1, n_train // batch_size + (1 if n_train % batch_size > 1 else 0))
    epochs = int(config.epochs or 1)
    counts = torch.bincount(data.train_y.cpu(), minlength=num_classes).tolist()
    hooks = active_hooks(config, TrialContext(num_classes, counts, data.size, steps, epochs, device))
    model_kwargs: dict[str, Any] = {}
    for h in hooks:
        model_kwargs.update(h.model_kwargs())
    model = create_model(config, input_channels(config), num_classes, data.size, weights_dir, **model_kwargs)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    known: dict[str, float] | None = None
    if on_model is not None:
        # Size and speed depend on the architecture only: known (and judged) before any training.
        known = architecture_costs(config, model, preprocess, data.val_x, device)
        on_model(known)
    for h in hooks:
        h.start(model)
    # What the training steps call: the model itself, or a compiled wrapper sharing its weights
    # (evaluation, EMA and export keep using the plain module).
    forward = model
    for h in hooks:
        forward = h.train_forward(forward)
    compiled = forward is not model
    if compiled:
        steps = n_train // batch_size  # one static shape: the partial last batch is dropped
    groups = param_groups(model, config.finetune, config.lr) if config.backbone != "none" else \
        [{"params": list(model.parameters()), "lr": config.lr}]
    optimizer = OPTIMIZERS.get(config.optimizer)(groups, config)
    scheduler = SCHEDULES.get(config.schedule)(optimizer, config, steps, epochs)
    weights = next((w for w in (h.class_weights() for h in hooks) if w is not None), None)
    criterion = CrossEntropy(weight=None if weights is None else weights.to(device),
                             label_smoothing=config.label_smoothing)
    params = [p for p in model.parameters() if p.requires_grad]
    compile_seconds = 0.0
    stats = StepStats(len(params), device)
    generator = torch.Generator().manual_seed(seed)
    history: list[EpochLog] = []
    last_progress = started = time.monotonic()
    hinted = False  # the first epoch line says why lines skip epochs
    amp = _autocast(device)  # one context, re-entered every step
    step = 0

    def kept() -> nn.Module:
        """The weights evaluated and kept (e.g. the EMA average), without inference wrappers."""
        current = model
        for h in hooks:
            current = h.eval_model(current)
        return current

    for epoch in progress(range(1, epochs + 1), desc=label, unit="epoch"):
        model.train()
        if config.backbone != "none" and config.finetune == "freeze":
            freeze_norm_statistics(model)
        start = time.perf_counter()
        order = next((o for o in (h.train_order(data.train_y, generator) for h in hooks) if o is not None), None)
        if order is None:
            order = torch.randperm(n_train, generator=generator)
        if data.train_x.device != order.device:
            order = order.to(data.train_x.device)  # a GPU-resident set: one copy per epoch, not one per step
        slices = batch_slices(order, batch_size, steps)
        stats.begin([b for b, _ in slices], [len(idx) for _, idx in slices])
        # Per step: nothing is read back to the host (no synchronization) and the statistics cost
        # four small ops (search.train.stats); they are read once, at the epoch's end.
        batches = iterate_batches(data.train_x, data.train_y, order, batch_size, steps, device, slices)
        for i, (b, xb, yb) in enumerate(batches):
            if plan.random:
                xb = augment(xb)
            for h in hooks:
                xb = h.augment(xb)
            x = preprocess(xb.to(device, non_blocking=True))
            target = yb
            for h in hooks:
                x, target = h.mix(x, target)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            first = compiled and step == 0
            if first:
                compile_start = time.perf_counter()
            with amp:
                logits = forward(x)
                loss = criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Mixed (soft) targets: a prediction counts as right when it names the image's own class (yb).
            stats.record(i, loss, logits, yb, [p.grad for p in params if p.grad is not None])
            if config.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, config.grad_clip, stats.total_norm(i))
            optimizer.step()
            scheduler.step()
            step += 1
            for h in hooks:
                h.after_step(model, step)
            if first:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                compile_seconds = time.perf_counter() - compile_start
            stats.after_step(epoch, i)
        totals = stats.finish(epoch)
        seconds = time.perf_counter() - start
        # Test-time augmentation (2 or 8 passes) only for the last epoch's validation, which is the
        # trial's result; earlier epochs (learning curve, pruning) validate the kept model alone.
        evaluated = inference_model(config, kept()) if epoch == epochs else kept()
        val = evaluate(evaluated, preprocess, data.val_x, data.val_y, num_classes, device)
        costs = known or {"latency_ms": math.nan, "params": count_params(model)}
        values = tuple(objective_value(o, val, classes, costs) for o in objectives)
        value = values[0]
        train_loss = totals.loss
        if not math.isfinite(val.loss):
            raise NonFiniteLoss(f"validation loss became {val.loss} at epoch {epoch}", epoch=epoch)
        entry = EpochLog(epoch, train_loss, totals.accuracy, val.loss, val.accuracy, value,
                         optimizer.param_groups[-1]["lr"], seconds, totals.grad_norm_max, values, val)
        history.append(entry)
        # Epoch lines only for slow trials (>= PROGRESS_EVERY s since the last); -v shows all. A line
        # that follows skipped epochs carries the best so far and the time left, so nothing looks lost.
        level = logging.INFO if time.monotonic() - last_progress >= PROGRESS_EVERY else logging.DEBUG
        if level == logging.INFO:
            last_progress = time.monotonic()
        best_at = max(range(len(history)), key=lambda i: history[i].value if objectives[0].direction == "maximize"
                      else -history[i].value)
        left = (time.monotonic() - started) / epoch * (epochs - epoch)  # wall time: evaluation included
        log.log(level, "%s epoch %d/%d  loss %.4f  val_loss %.4f  val %s %.4f  (%.1fs; best %.4f at epoch %d, "
                "~%.0fs left%s)", label, epoch, epochs, train_loss, val.loss, objectives[0].name, value, seconds,
                history[best_at].value, best_at + 1, left,
                "" if hinted else f"; a line every {PROGRESS_EVERY:.0f}s, -v for every epoch")
        hinted = hinted or level == logging.INFO
        if on_epoch is not None:
            on_epoch(entry)
        # Higher is better; a cost objective (latency) is unknown while training: then the loss judges.
        score = (value if objectives[0].direction == "maximize" else -value) if math.isfinite(value) else -val.loss
        for h in hooks:
            h.epoch_end(kept(), epoch, score, val)

    # What is kept, measured and exported: the evaluated weights (e.g. the EMA average), bare; the
    # inference wrappers (e.g. flip TTA) are put back by whoever evaluates or exports it.
    model = kept()
    restored = None
    for h in hooks:  # e.g. restore_best_epoch: another epoch's weights, with that epoch's evaluation
        back = h.restore(model)
        if back is not None:
            restored, val = back
    final = inference_model(config, model)
    # ``val`` is the evaluation of the weights kept (the last epoch's unless one was restored).
    test = (evaluate(final, preprocess, data.test_x, data.test_y, num_classes, device)
            if evaluate_test and len(data.test_y) else None)
    costs = architecture_costs(config, model, preprocess, data.val_x, device)
    n_params, latency = int(costs["params"]), costs["latency_ms"]
    values = [objective_value(o, val, classes, costs) for o in objectives]
    return TrainResult(
        model=model, preprocess=preprocess, classes=classes, input_size=data.size, history=history, val=val,
        test=test, values=values, n_params=n_params,
        epoch_seconds=sum(h.seconds for h in history) / max(1, len(history)), latency_ms=latency,
        restored_epoch=restored,
        compile_seconds=compile_seconds,
    )


def train_space(config: TrialConfig, space: SearchSpace, *, dataset: DatasetSpec | None = None,
                weights_dir: str | Path | None = None, **kwargs: Any) -> TrainResult:
    """:func:`train` with a space's dataset, objectives, augmentation sets and weights directory."""
    return train(config, dataset or space.dataset, space.objectives, weights_dir=weights_dir or space.weights_dir,
                 augment_sets=space.augment_sets, **kwargs)
