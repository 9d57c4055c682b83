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
    BASELINE_MAX_SIZE, COLOR_GAIN, GRAD_EXPLOSION, LOSS_SPIKE, LOW_TRAIN, OVERFIT_GAP, STILL_RISING,
    VAL_LOSS_RISE, Diagnosis, Finding, honest_objective,
)
from search.tools.doctor.remedies import pick
from search.core.errors import UserError
from search.strategies import PARAMS, check_value
from search.core.spec import DatasetSpec, ObjectiveSpec
from search.train.loop import EpochLog, NonFiniteLoss, TrainResult, evaluate, resolve_device, train
from search.train.metrics import Metrics, objective_value, positive_index

log = logging.getLogger(__name__)

UNSTABLE_REMEDIES = ["lower learning rates", "learning-rate warm-up", "batch norm", "gradient clipping"]


def baseline_config(data: ImageSet, epochs: int, overrides: Mapping[str, Any] | None = None) -> TrialConfig:
    """The default small CNN with no remedies switched on; ``overrides`` may change any param."""
    native = data.native_size
    size = native if native is not None and native <= BASELINE_MAX_SIZE else BASELINE_MAX_SIZE
    values = TrialConfig(epochs=epochs, seed=0, input_size=size).to_dict()
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


def diagnose(dataset: DatasetSpec, objective: ObjectiveSpec = ObjectiveSpec(), *, epochs: int = 10,
             overrides: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
             probe_color: bool = True, weights_dir: str | Path | None = None) -> Diagnosis:
    """Train a quick baseline on ``dataset`` and diagnose its training and its data."""
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
                                "diverged": run.failures, "seconds": round(run.seconds, 2)}
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
        findings.extend(curve_findings(result.history, train_value, val_value, objective.name, findings))
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


def _train_baseline(config: TrialConfig, dataset: DatasetSpec, objective: ObjectiveSpec, device: torch.device,
                    weights_dir: str | Path | None, prepared: Prepared) -> _Run:
    """Train; after a non-finite loss, try once more at a tenth of the learning rate."""
    failures: list[str] = []
    start = time.perf_counter()
    for attempt in range(2):
        try:
            result = train(config, dataset, (objective,), device=device, weights_dir=weights_dir,
                           evaluate_test=False, label="doctor baseline", data=prepared)
            return _Run(config, result, failures, time.perf_counter() - start)
        except NonFiniteLoss as exc:
            failures.append(f"lr {config.lr:g}: {exc}")
            if attempt == 0:
                config = config.replace(lr=config.lr / 10)
    return _Run(config, None, failures, time.perf_counter() - start)


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
    bad_grads = [i + 1 for i, g in enumerate(grads)
                 if not math.isfinite(g) or (n >= 3 and g > GRAD_EXPLOSION * median_grad)]
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
    loss_rising = best < n - 1 and rise >= VAL_LOSS_RISE and train_loss[-1] < train_loss[best]
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
    gray_config = config.replace(color="gray")
    try:
        gray = train(gray_config, dataset, (objective,), device=device, weights_dir=weights_dir,
                     evaluate_test=False, label="doctor gray probe", data=prepared)
    except NonFiniteLoss as exc:
        return Finding("color", f"gray probe diverged ({exc}); color left to the search", {}, [], "data")
    baseline["gray_probe_seconds"] = round(time.perf_counter() - start, 2)
    classes = data.classes
    rgb_value = objective_value(metric, rgb.val, classes)
    gray_value = objective_value(metric, gray.val, classes)
    val_counts = data.class_counts("val")
    majority = val_counts.index(max(val_counts))
    constant = Metrics(confusion=[[n if j == majority else 0 for j in range(len(classes))] for n in val_counts],
                       loss=math.nan)
    chance = objective_value(metric, constant, classes)
    gain = rgb_value - gray_value
    evidence = {"metric": metric.name, "rgb": round(rgb_value, 4), "gray": round(gray_value, 4),
                "rgb_minus_gray": round(gain, 4), "majority_class_score": round(chance, 4),
                "threshold": COLOR_GAIN, "seeds": 1}
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
