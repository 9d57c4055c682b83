"""The diagnosis: train a quick baseline once, read its learning curves, probe color, add the data facts.

The dataset is loaded once, at the size the baseline trains at; the data facts and every training
run here read that one loaded set (and the cache's per-image records), not the image files again.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from search.core.config import TrialConfig
from search.data.datasets import ImageSet, Prepared, load_dataset, native_size, prepare
from search.tools.doctor.data_facts import data_facts, data_findings, imbalance_finding
from search.tools.doctor.findings import (
    BASELINE_MAX_SIZE, COLOR_GAIN, GRAD_EXPLOSION, LOSS_SPIKE, LOW_TRAIN, OVERFIT_GAP, STANDARD_SIZES, STILL_RISING,
    VAL_LOSS_RISE, Diagnosis, Finding, honest_objective,
)
from search.tools.doctor.orientation import orientation_finding, orientation_scores
from search.tools.doctor.recipe import recipe
from search.tools.doctor.remedies import pick
from search.core.errors import UserError
from search.strategies import PARAMS, check_value
from search.core.spec import DatasetSpec, ObjectiveSpec
from search.train.loop import EpochLog, NonFiniteLoss, TrainResult, evaluate, resolve_device, train
from search.train.metrics import Metrics, objective_value, positive_index

log = logging.getLogger(__name__)

UNSTABLE_REMEDIES = ["lower learning rates", "learning-rate warm-up", "batch norm", "gradient clipping"]


def baseline_size(data: ImageSet) -> int:
    """The images' own square side up to BASELINE_MAX_SIZE; for mixed sizes, the largest standard size
    at most their median short side (at least the smallest standard size), up to BASELINE_MAX_SIZE."""
    native = data.native_size
    if native is not None:
        return min(native, BASELINE_MAX_SIZE)
    idx = torch.cat([data.train, data.val, data.test]).numpy()
    short = float(statistics.median(min(w, h) for w, h in zip(data.meta["width"][idx].tolist(),
                                                               data.meta["height"][idx].tolist())))
    fitting = [s for s in STANDARD_SIZES if s <= min(short, BASELINE_MAX_SIZE)]
    return max(fitting) if fitting else STANDARD_SIZES[0]


def baseline_config(data: ImageSet, epochs: int | None = None, overrides: Mapping[str, Any] | None = None,
                    size: int | None = None) -> TrialConfig:
    """The strong recipe (search.tools.doctor.recipe) sized to the data, with no flips or turns (the
    orientation probe decides those) and half the recipe's epochs (at least 8) unless ``epochs`` is
    given: a quick run of the recipe to diagnose. ``overrides`` may change any param."""
    size = size or baseline_size(data)
    values = TrialConfig(seed=0, input_size=size).to_dict()
    values.update(recipe(len(data.train), size, "none"))
    values["epochs"] = epochs or max(8, values["epochs"] // 2)
    values["warmup_epochs"] = max(1, round(values["epochs"] / 15))
    for name, value in (overrides or {}).items():
        if name not in PARAMS:
            raise UserError(f"baseline override {name!r}: unknown param; allowed: {', '.join(PARAMS)}")
        problem = check_value(name, value)
        if problem:
            raise UserError(f"baseline override {name}={value!r}: {problem}")
        values[name] = value
    return TrialConfig.from_dict(values)


def load_for_baseline(dataset: DatasetSpec) -> tuple[ImageSet, int | None]:
    """The dataset at the size the baseline trains at (its own square side up to BASELINE_MAX_SIZE,
    else BASELINE_MAX_SIZE), decoded once; returns it with the cache size key it was loaded at."""
    side = native_size(dataset)  # file headers only
    key = None if side is not None and side <= BASELINE_MAX_SIZE else BASELINE_MAX_SIZE
    return load_dataset(dataset, key), key


def diagnose(dataset: DatasetSpec, objective: ObjectiveSpec = ObjectiveSpec(), *, epochs: int | None = None,
             overrides: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
             probe_color: bool = True, probe_orientation: bool = True,
             weights_dir: str | Path | None = None) -> Diagnosis:
    """Train a quick run of the strong recipe on ``dataset`` and diagnose its training and its data.

    ``epochs``: the baseline's (default: half the recipe's). The gray probe trains a third of them."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    data, key = load_for_baseline(dataset)
    positive_index(objective, data.classes)
    facts = data_facts(data, dataset)
    config = baseline_config(data, epochs, overrides)
    # The loaded set serves the baseline unless --set changed its size or aspect.
    same = config.input_size == int(data.images.shape[-1]) and config.aspect == "stretch"
    prepared = prepare(dataset, key if same else config.input_size, config.aspect, device)
    facts["sizes"]["baseline_input"] = prepared.size

    findings: list[Finding] = []
    run = _train_baseline(config, dataset, objective, device, weights_dir, prepared)
    baseline: dict[str, Any] = {"config": run.config.to_dict(), "overrides": dict(overrides or {}),
                                "diverged": run.failures, "seconds": round(run.seconds, 2),
                                "cpu_seconds": round(run.cpu_seconds, 2), "n_train": len(data.train)}
    if run.failures:
        findings.append(Finding(
            "unstable",
            f"training diverged (non-finite loss) at lr {config.lr:g}"
            + (f"; it trained at lr {run.config.lr:g}" if run.result else "; also at lr / 10"),
            {"diverged": run.failures, "lr": config.lr, "retried_lr": config.lr / 10},
            list(UNSTABLE_REMEDIES),
        ))
    imbalance = imbalance_finding(data, run.result)
    if imbalance:
        findings.append(imbalance)
    if run.result is not None:
        result = run.result
        train_metrics = evaluate(result.model, result.preprocess, prepared.train_x, prepared.train_y,
                                 len(data.classes), device)
        train_value = objective_value(objective, train_metrics, data.classes)
        val_value = result.values[0]
        baseline.update({
            "train_value": train_value, "val_value": val_value, "n_params": result.n_params,
            "history": [h.to_dict() for h in result.history],
            "val_recall": dict(zip(data.classes, result.val.per_class()[1])),
            "val_confusion": result.val.confusion,
        })
        baseline["epoch_seconds"] = round(run.seconds / max(1, len(result.history)), 4)
        baseline["epoch_cpu_seconds"] = round(run.cpu_seconds / max(1, len(result.history)), 4)
        findings.extend(curve_findings(result.history, train_value, val_value, objective.name, findings))
        if probe_orientation:
            findings.append(_orientation_probe(result, prepared, data, device))
        if facts["grayscale"]:
            findings.append(Finding(
                "color", f"images are grayscale (R = G = B in all {facts['n_images']} images): "
                          "one gray channel carries everything", {"grayscale": True},
                ["color: gray (a third of the input, same information)"], group="data"))
        elif probe_color:
            metric = honest_objective(objective, imbalance, data.classes)
            findings.append(_color_probe(run.config, dataset, objective, metric, data, device, weights_dir,
                                          prepared, result, baseline))
    elif facts["grayscale"]:
        findings.append(Finding("color", "images are grayscale", {"grayscale": True}, ["color: gray"], "data"))
    findings.extend(data_findings(facts))
    log.info("doctor: %s", ", ".join(f.kind for f in findings) or "no findings")
    return Diagnosis(dataset, objective, data.classes, baseline, facts, findings)


@dataclass
class _Run:
    config: TrialConfig
    result: TrainResult | None
    failures: list[str]
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time (the time budget's measure where the machine is shared)


def _orientation_probe(result: TrainResult, prepared: Prepared, data: ImageSet, device: torch.device) -> Finding:
    """The trained baseline on the validation images turned and mirrored (search.tools.doctor.orientation)."""
    start = time.perf_counter()
    scores = orientation_scores(result.model, result.preprocess, prepared.val_x, prepared.val_y, device)
    val_counts = data.class_counts("val")
    finding = orientation_finding(scores, len(prepared.val_y), max(val_counts) / max(1, sum(val_counts)))
    finding.evidence["seconds"] = round(time.perf_counter() - start, 2)
    return finding


def _train_baseline(config: TrialConfig, dataset: DatasetSpec, objective: ObjectiveSpec, device: torch.device,
                    weights_dir: str | Path | None, prepared: Prepared) -> _Run:
    """Train; after a non-finite loss, try once more at a tenth of the learning rate."""
    failures: list[str] = []
    start, cpu = time.perf_counter(), time.process_time()
    for attempt in range(2):
        try:
            result = train(config, dataset, (objective,), device=device, weights_dir=weights_dir,
                           evaluate_test=False, label="doctor baseline", data=prepared)
            return _Run(config, result, failures, time.perf_counter() - start, time.process_time() - cpu)
        except NonFiniteLoss as exc:
            failures.append(f"lr {config.lr:g}: {exc}")
            if attempt == 0:
                config = config.replace(lr=config.lr / 10)
    return _Run(config, None, failures, time.perf_counter() - start, time.process_time() - cpu)


def curve_findings(history: list[EpochLog], train_value: float, val_value: float, name: str,
                   earlier: list[Finding]) -> list[Finding]:
    """Unstable, overfitting, underfitting or not-converged, from the baseline's learning curves.

    An ``unstable`` finding already in ``earlier`` (divergence) gets the curve evidence added instead.
    """
    out: list[Finding] = []
    train_loss = [h.train_loss for h in history]
    val_loss = [h.val_loss for h in history]
    values = [h.value for h in history]
    n = len(history)

    # Unstable optimization: loss jumps between epochs, or a gradient norm far above the usual.
    spikes = [i + 1 for i in range(1, n) if train_loss[i] > LOSS_SPIKE * train_loss[i - 1]]
    grads = [h.grad_norm_max for h in history]
    median_grad = statistics.median(grads)
    # The first epoch is left out of the comparison: from random weights its gradients are large in
    # every healthy run (it is still judged for non-finite values).
    bad_grads = [i + 1 for i, g in enumerate(grads)
                 if not math.isfinite(g) or (n >= 3 and i > 0 and g > GRAD_EXPLOSION * median_grad)]
    if spikes or bad_grads:
        evidence = {"loss_spike_epochs": spikes, "train_loss": _round(train_loss),
                    "grad_norm_max": _round(grads), "grad_norm_median": round(median_grad, 4)}
        parts = []
        if spikes:
            parts.append("training loss jumped " + ", ".join(
                f"{train_loss[e - 2]:.3f} -> {train_loss[e - 1]:.3f} (epoch {e})" for e in spikes))
        if bad_grads:
            parts.append("gradient norm " + ", ".join(f"{grads[e - 1]:.3g} at epoch {e}" for e in bad_grads)
                         + f" vs median {median_grad:.3g}")
        previous = next((f for f in earlier if f.kind == "unstable"), None)
        if previous is not None:
            previous.evidence.update(evidence)
            previous.summary += "; " + "; ".join(parts)
        else:
            out.append(Finding("unstable", "; ".join(parts), evidence, list(UNSTABLE_REMEDIES)))

    # Overfitting: a large generalization gap, or validation loss rising while training loss falls.
    gap = train_value - val_value
    best = min(range(n), key=lambda i: val_loss[i])
    rise = val_loss[-1] / val_loss[best] - 1.0 if val_loss[best] > 0 else 0.0
    # A rising validation loss counts only when the metric fell too: with label smoothing and EMA the
    # loss drifts up a little while a model that is right on every image stays right.
    loss_rising = (best < n - 1 and rise >= VAL_LOSS_RISE and train_loss[-1] < train_loss[best]
                   and values[-1] < max(values) - 0.01)
    if gap >= OVERFIT_GAP or loss_rising:
        summary = f"training {name} {train_value:.3f} vs validation {val_value:.3f} (gap {gap:.3f})"
        if loss_rising:
            summary += (f"; validation loss rose {rise:+.0%} from {val_loss[best]:.3f} (epoch {best + 1}) to "
                        f"{val_loss[-1]:.3f} while training loss fell {train_loss[best]:.3f} -> {train_loss[-1]:.3f}")
        out.append(Finding("overfitting", summary, {
            "train": round(train_value, 4), "validation": round(val_value, 4), "gap": round(gap, 4),
            "gap_threshold": OVERFIT_GAP, "val_loss_min": round(val_loss[best], 4), "val_loss_min_epoch": best + 1,
            "val_loss_last": round(val_loss[-1], 4), "val_loss_rise": round(rise, 4),
        }, ["weight decay", "dropout", "augmentation", "label smoothing", "fewer epochs (early stopping)",
            "more data"]))

    # Underfitting: the model does not fit its own training data; not converged: still improving.
    k = max(1, n // 4)
    gain = values[-1] - max(values[:-k]) if n > k else 0.0
    rising = gain >= STILL_RISING and values[-1] >= max(values)
    fell = (train_loss[-2] - train_loss[-1]) / train_loss[-2] if n > 1 and train_loss[-2] > 0 else 0.0
    evidence = {"train": round(train_value, 4), "low_threshold": LOW_TRAIN, "val_curve": _round(values),
                "val_gain_last_epochs": round(gain, 4), "last_epochs": k, "train_loss_drop_last_epoch": round(fell, 4)}
    trend = f"validation {name} still rising (+{gain:.3f} over the last {k} epoch(s))"
    if train_value < LOW_TRAIN:
        summary = f"training {name} only {train_value:.3f} (< {LOW_TRAIN}): the model does not fit its own training data"
        out.append(Finding("underfitting", summary + (f"; {trend}" if rising else ""), evidence,
                           ["more capacity (depth, width, residual blocks)", "more epochs", "a pretrained backbone",
                            "a larger input size", "a higher learning rate"]))
    elif rising:
        out.append(Finding("not_converged", trend + f" and training loss fell {fell:.0%} in the last epoch",
                           evidence, ["more epochs", "a learning-rate schedule"]))
    return out


def _color_probe(config: TrialConfig, dataset: DatasetSpec, objective: ObjectiveSpec, metric: ObjectiveSpec,
                  data: ImageSet, device: torch.device, weights_dir: str | Path | None, prepared: Prepared,
                  rgb: TrainResult, baseline: dict[str, Any]) -> Finding:
    """Train the same baseline on gray images: does color carry information?

    Judged by ``metric`` (the honest objective), against the score of always answering the
    majority class: when neither run beats it, the probe cannot tell.
    """
    start = time.perf_counter()
    # A third of the baseline's epochs (its own schedule), judged against the rgb run's validation
    # score at that epoch: a quick probe, which leans towards "color adds little" (the rgb run is
    # mid-schedule then), so the search still compares gray and rgb when in doubt.
    epochs = int(config.epochs or 1)
    short = max(min(epochs, 4), epochs // 3)
    gray_config = config.replace(color="gray", epochs=short)
    try:
        gray = train(gray_config, dataset, (objective,), device=device, weights_dir=weights_dir,
                     evaluate_test=False, label="doctor gray probe", data=prepared)
    except NonFiniteLoss as exc:
        return Finding("color", f"gray probe diverged ({exc}); color left to the search", {}, [], "data")
    baseline["gray_probe_seconds"] = round(time.perf_counter() - start, 2)
    classes = data.classes
    rgb_value = objective_value(metric, rgb.val, classes)
    if short < epochs:
        at = rgb.history[short - 1]
        rgb_value = at.value if metric == objective else at.val_accuracy if metric.metric == "accuracy" else rgb_value
    gray_value = objective_value(metric, gray.val, classes)
    val_counts = data.class_counts("val")
    majority = val_counts.index(max(val_counts))
    constant = Metrics(confusion=[[n if j == majority else 0 for j in range(len(classes))] for n in val_counts],
                       loss=math.nan)
    chance = objective_value(metric, constant, classes)
    gain = rgb_value - gray_value
    evidence = {"metric": metric.name, "rgb": round(rgb_value, 4), "gray": round(gray_value, 4),
                "rgb_minus_gray": round(gain, 4), "majority_class_score": round(chance, 4),
                "threshold": COLOR_GAIN, "seeds": 1, "epochs": short}
    head = f"gray-vs-rgb probe: validation {metric.name} rgb {rgb_value:.3f}, gray {gray_value:.3f}"
    if max(rgb_value, gray_value) < chance + COLOR_GAIN:
        evidence["inconclusive"] = True
        return Finding("color", f"{head}, neither above always-{classes[majority]!r} ({chance:.3f}): "
                       "the baseline learned too little to tell", evidence,
                       ["let the search compare color spaces"], "data")
    if gain >= COLOR_GAIN:
        return Finding("color", f"{head}: color is informative (gray loses {gain:.3f})", evidence,
                       [f"keep color: search {', '.join(pick('color', exclude=['gray']))}"], "data")
    return Finding("color", f"{head}: color adds little (one seed; a quick probe)", evidence,
                   ["gray is a third of the input: search gray beside rgb"], "data")


def _round(values: list[float], digits: int = 4) -> list[float]:
    return [round(v, digits) if math.isfinite(v) else v for v in values]
