"""Diagnose training on a dataset with a quick baseline, and recommend a search space.

:func:`diagnose` trains the default small CNN for a few epochs, reads its learning curves and
the data, and returns :class:`Finding` objects, each with the numbers behind it.
:func:`recommend_space` turns the findings into a commented space file that ``strategy-search
run`` accepts: every param it writes carries a comment saying which finding put it there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from search.config import TrialConfig
from search.strategies import PARAMS, check_value
from search.data.datasets import ImageSet, load_dataset, prepare
from search.enqueue import param_fits
from search.errors import UserError
from search.space import parse_space
from search.spec import DatasetSpec, ObjectiveSpec
from search.train.loop import EpochLog, NonFiniteLoss, TrainResult, evaluate, resolve_device, train
from search.train.metrics import Metrics, objective_value, positive_index

log = logging.getLogger(__name__)

# Thresholds on the objective's 0..1 scale unless noted. Findings always show the measured numbers,
# so a reader can judge a borderline case themselves.
OVERFIT_GAP = 0.10  # training metric minus validation metric
VAL_LOSS_RISE = 0.10  # validation loss ends this far (relative) above its minimum
LOW_TRAIN = 0.90  # a model that cannot reach this on its own training data is too weak
STILL_RISING = 0.02  # validation metric gain over the last quarter of the epochs
LOSS_SPIKE = 1.5  # an epoch's training loss this many times the previous epoch's
GRAD_EXPLOSION = 10.0  # an epoch's largest gradient norm this many times the median epoch's
IMBALANCE_RATIO = 3.0  # largest class / smallest class (training split)
COLOUR_GAIN = 0.03  # rgb must beat gray by this much for colour to count as informative
FEW_IMAGES = 100  # training images in the smallest class
OFF_SQUARE = 1.25  # an image is "not square" beyond this aspect ratio
BASELINE_MAX_SIZE = 64  # the quick baseline never trains above this input size
STANDARD_SIZES = (28, 32, 64, 96, 128, 160, 224)

@dataclass
class Finding:
    """One diagnosis: what, the numbers behind it, and the remedies worth searching."""

    kind: str  # overfitting | underfitting | not_converged | unstable | imbalance | colour | ...
    summary: str
    evidence: dict[str, Any]
    remedies: list[str] = field(default_factory=list)
    group: str = "training"  # "training" (learning curves) or "data"


@dataclass
class Diagnosis:
    dataset: DatasetSpec
    objective: ObjectiveSpec
    classes: list[str]
    baseline: dict[str, Any]  # config, train/validation values, history, seconds, diverged
    facts: dict[str, Any]
    findings: list[Finding]

    def get(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.label,
            "objective": self.objective.name,
            "classes": self.classes,
            "baseline": self.baseline,
            "facts": self.facts,
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }


# ----------------------------------------------------------------------------- diagnosis


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


def diagnose(dataset: DatasetSpec, objective: ObjectiveSpec = ObjectiveSpec(), *, epochs: int = 10,
             overrides: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
             probe_colour: bool = True, weights_dir: str | Path | None = None) -> Diagnosis:
    """Train a quick baseline on ``dataset`` and diagnose its training and its data."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    data = load_dataset(dataset)
    positive_index(objective, data.classes)
    facts = data_facts(data, dataset)
    config = baseline_config(data, epochs, overrides)
    prepared = prepare(dataset, config.input_size, config.aspect, device)
    facts["sizes"]["baseline_input"] = prepared.size

    findings: list[Finding] = []
    run = _train_baseline(config, dataset, objective, device, weights_dir)
    baseline: dict[str, Any] = {"config": run.config.to_dict(), "overrides": dict(overrides or {}),
                                "diverged": run.failures, "seconds": round(run.seconds, 2)}
    if run.failures:
        findings.append(Finding(
            "unstable",
            f"training diverged (non-finite loss) at lr {config.lr:g}"
            + (f"; it trained at lr {run.config.lr:g}" if run.result else "; also at lr / 10"),
            {"diverged": run.failures, "lr": config.lr, "retried_lr": config.lr / 10},
            ["lower learning rates", "learning-rate warm-up", "batch norm", "gradient clipping"],
        ))
    imbalance = _imbalance(data, run.result)
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
        })
        findings.extend(_curve_findings(result.history, train_value, val_value, objective.name, findings))
        if facts["grayscale"]:
            findings.append(Finding(
                "colour", f"images are grayscale (R = G = B in all {facts['n_images']} images): "
                          "one gray channel carries everything", {"grayscale": True},
                ["color: gray (a third of the input, same information)"], group="data"))
        elif probe_colour:
            metric = honest_objective(objective, imbalance, data.classes)
            findings.append(_colour_probe(run.config, dataset, objective, metric, data, device, weights_dir,
                                          prepared, result, baseline))
    elif facts["grayscale"]:
        findings.append(Finding("colour", "images are grayscale", {"grayscale": True}, ["color: gray"], "data"))
    findings.extend(_data_findings(facts, data))
    log.info("doctor: %s", ", ".join(f.kind for f in findings) or "no findings")
    return Diagnosis(dataset, objective, data.classes, baseline, facts, findings)


@dataclass
class _Run:
    config: TrialConfig
    result: TrainResult | None
    failures: list[str]
    seconds: float


def _train_baseline(config: TrialConfig, dataset: DatasetSpec, objective: ObjectiveSpec, device: torch.device,
                    weights_dir: str | Path | None) -> _Run:
    """Train; after a non-finite loss, try once more at a tenth of the learning rate."""
    failures: list[str] = []
    start = time.perf_counter()
    for attempt in range(2):
        try:
            result = train(config, dataset, (objective,), device=device, weights_dir=weights_dir,
                           evaluate_test=False, label="doctor baseline")
            return _Run(config, result, failures, time.perf_counter() - start)
        except NonFiniteLoss as exc:
            failures.append(f"lr {config.lr:g}: {exc}")
            if attempt == 0:
                config = config.replace(lr=config.lr / 10)
    return _Run(config, None, failures, time.perf_counter() - start)


def _curve_findings(history: list[EpochLog], train_value: float, val_value: float, name: str,
                    earlier: list[Finding]) -> list[Finding]:
    out: list[Finding] = []
    train_loss = [h.train_loss for h in history]
    val_loss = [h.val_loss for h in history]
    values = [h.value for h in history]
    n = len(history)

    # Unstable optimisation: loss jumps between epochs, or a gradient norm far above the usual.
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
            out.append(Finding("unstable", "; ".join(parts), evidence,
                               ["lower learning rates", "learning-rate warm-up", "batch norm", "gradient clipping"]))

    # Overfitting: a large generalisation gap, or validation loss rising while training loss falls.
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


def _imbalance(data: ImageSet, result: TrainResult | None) -> Finding | None:
    counts = data.class_counts("train")
    low, high = min(counts), max(counts)
    ratio = high / max(1, low)
    if ratio < IMBALANCE_RATIO:
        return None
    classes = data.classes
    majority, minority = classes[counts.index(high)], classes[counts.index(low)]
    val_counts = data.class_counts("val")
    majority_accuracy = max(val_counts) / max(1, sum(val_counts))
    summary = (f"classes are imbalanced {ratio:.1f}:1 ({majority} {high} vs {minority} {low} training images); "
               f"always answering {majority!r} already scores accuracy {majority_accuracy:.3f}")
    evidence: dict[str, Any] = {
        "train_counts": dict(zip(classes, counts)), "ratio": round(ratio, 3), "majority_class": majority,
        "minority_class": minority, "majority_class_accuracy": round(majority_accuracy, 4),
    }
    if result is not None:
        recall = dict(zip(classes, (round(r, 4) for r in result.val.per_class()[1])))
        summary += f" (baseline {result.val.accuracy:.3f}, recall of {minority!r} {recall[minority]:.3f})"
        evidence.update(baseline_accuracy=round(result.val.accuracy, 4), val_recall=recall)
    metric = (f"F1 / recall / precision of {minority!r} (average: binary, positive_class: {minority})"
              if len(classes) == 2 else "macro-averaged F1 (every class counts the same)")
    return Finding("imbalance", summary, evidence, [f"accuracy misleads here: judge by {metric}"], group="data")


def honest_objective(objective: ObjectiveSpec, imbalance: Finding | None, classes: list[str]) -> ObjectiveSpec:
    """The objective to judge by: F1 of the rare class (or macro F1) when accuracy would mislead."""
    if imbalance is None or objective.metric != "accuracy":
        return objective
    if len(classes) == 2:
        return ObjectiveSpec("f1", "binary", imbalance.evidence["minority_class"])
    return ObjectiveSpec("f1", "macro")


def _colour_probe(config: TrialConfig, dataset: DatasetSpec, objective: ObjectiveSpec, metric: ObjectiveSpec,
                  data: ImageSet, device: torch.device, weights_dir: str | Path | None, prepared: Any,
                  rgb: TrainResult, baseline: dict[str, Any]) -> Finding:
    """Train the same baseline on gray images: does colour carry information?

    Judged by ``metric`` (the honest objective), against the score of always answering the
    majority class: when neither run beats it, the probe cannot tell.
    """
    start = time.perf_counter()
    gray_config = config.replace(color="gray")
    try:
        gray = train(gray_config, dataset, (objective,), device=device, weights_dir=weights_dir,
                     evaluate_test=False, label="doctor gray probe", data=prepared)
    except NonFiniteLoss as exc:
        return Finding("colour", f"gray probe diverged ({exc}); colour left to the search", {}, [], "data")
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
                "threshold": COLOUR_GAIN, "seeds": 1}
    head = f"gray-vs-rgb probe: validation {metric.name} rgb {rgb_value:.3f}, gray {gray_value:.3f}"
    if max(rgb_value, gray_value) < chance + COLOUR_GAIN:
        evidence["inconclusive"] = True
        return Finding("colour", f"{head}, neither above always-{classes[majority]!r} ({chance:.3f}): "
                       "the baseline learned too little to tell", evidence,
                       ["let the search compare colour spaces"], "data")
    if gain >= COLOUR_GAIN:
        return Finding("colour", f"{head}: colour is informative (gray loses {gain:.3f})", evidence,
                       ["keep colour: search rgb, hsv, lab"], "data")
    return Finding("colour", f"{head}: colour adds little (one seed; a quick probe)", evidence,
                   ["gray is a third of the input: search gray beside rgb"], "data")


def _data_findings(facts: dict[str, Any], data: ImageSet) -> list[Finding]:
    out: list[Finding] = []
    per_class = facts["train_per_class"]
    fewest = min(per_class, key=per_class.get)
    if per_class[fewest] < FEW_IMAGES:
        out.append(Finding("small_data", f"only {per_class[fewest]} training images in class {fewest!r} "
                           f"(median {statistics.median(per_class.values()):g} per class)",
                           {"train_per_class": per_class, "threshold": FEW_IMAGES},
                           ["augmentation", "a pretrained backbone", "more data"], "data"))
    sizes = facts["sizes"]
    used = sizes["baseline_input"]
    short = min(sizes["median"])
    if short >= 1.5 * used:
        kept = (used / short) ** 2
        out.append(Finding("input_size", f"images are {sizes['median'][0]}x{sizes['median'][1]} (median) but the "
                           f"baseline trained at {used}x{used}: it kept {kept:.0%} of the pixels",
                           {"median": sizes["median"], "baseline_input": used, "pixels_kept": round(kept, 4)},
                           [f"search input_size up to {_size_ceiling(facts)}"], "data"))
    if sizes["share_not_square"] >= 0.2:
        out.append(Finding("aspect", f"{sizes['share_not_square']:.0%} of images are far from square "
                           f"(aspect > {OFF_SQUARE}); median aspect {sizes['median_aspect']:.2f}",
                           {"share_not_square": sizes["share_not_square"], "median_aspect": sizes["median_aspect"]},
                           ["aspect: pad (letterbox) vs stretch"], "data"))
    dup = facts["duplicates"]
    if dup["groups"]:
        out.append(Finding("duplicates", f"{dup['extra_copies']} duplicate image(s) in {dup['groups']} group(s); "
                           f"{dup['across_splits']} group(s) span train and validation/test, "
                           f"{dup['conflicting_labels']} with conflicting labels", dup,
                           ["remove duplicates: copies shared across splits inflate validation and test scores"],
                           "data"))
    if facts["unreadable"]:
        out.append(Finding("corrupt", f"{facts['unreadable']} file(s) could not be decoded and were skipped",
                           {"unreadable": facts["unreadable"]}, ["fix or delete them"], "data"))
    return out


# ----------------------------------------------------------------------------- data facts


def data_facts(data: ImageSet, spec: DatasetSpec) -> dict[str, Any]:
    """Counts, sizes, aspect ratios, grayscale-ness and duplicates of the images in use.

    All from the dataset cache's build records (per image: original size, grayscale, digest):
    the image files are not read again.
    """
    idx = torch.cat([data.train, data.val, data.test])
    counts = {split: data.class_counts(split) for split in ("train", "val", "test")}
    sizes = _original_sizes(data, idx)
    ws, hs = [w for w, _ in sizes], [h for _, h in sizes]
    aspects = [max(w, h) / max(1, min(w, h)) for w, h in sizes]
    return {
        "n_images": len(idx),
        "splits": {split: len(getattr(data, split)) for split in ("train", "val", "test")},
        "per_class": {c: {s: counts[s][i] for s in counts} for i, c in enumerate(data.classes)},
        "train_per_class": dict(zip(data.classes, counts["train"])),
        "sizes": {
            "min": [min(ws), min(hs)], "median": [int(statistics.median(ws)), int(statistics.median(hs))],
            "max": [max(ws), max(hs)], "uniform": len(set(sizes)) == 1,
            "median_aspect": round(statistics.median(w / max(1, h) for w, h in sizes), 3),
            "share_not_square": round(sum(a > OFF_SQUARE for a in aspects) / len(aspects), 4),
            "cache_max_side": spec.cache_max_side,
        },
        "grayscale": _grayscale(data, idx),
        "duplicates": _duplicates(data),
        "unreadable": int(data.info.get("skipped_images", 0) or 0),
    }


def _original_sizes(data: ImageSet, idx: torch.Tensor) -> list[tuple[int, int]]:
    """(width, height) per image before caching, as the cache build recorded them (no second read)."""
    rows = idx.numpy()
    return list(zip(data.meta["width"][rows].tolist(), data.meta["height"][rows].tolist()))


def _grayscale(data: ImageSet, idx: torch.Tensor) -> bool:
    return bool(data.meta["gray"][idx.numpy()].all())


def _duplicates(data: ImageSet) -> dict[str, Any]:
    """Pixel-identical images at the cached size (digests from the cache build): across splits, labels."""
    groups: dict[int, list[tuple[str, int]]] = {}
    for split in ("train", "val", "test"):
        idx = getattr(data, split)
        for i, digest in zip(idx.tolist(), data.meta["digest"][idx.numpy()].tolist()):
            groups.setdefault(digest, []).append((split, int(data.labels[i])))
    dups = [g for g in groups.values() if len(g) > 1]
    return {
        "groups": len(dups),
        "extra_copies": sum(len(g) - 1 for g in dups),
        "across_splits": sum(1 for g in dups if "train" in {s for s, _ in g} and len({s for s, _ in g}) > 1),
        "conflicting_labels": sum(1 for g in dups if len({y for _, y in g}) > 1),
    }


def _round(values: list[float], digits: int = 4) -> list[float]:
    return [round(v, digits) if math.isfinite(v) else v for v in values]


def _size_ceiling(facts: dict[str, Any]) -> int:
    sizes = facts["sizes"]
    return max([s for s in STANDARD_SIZES if s <= min(min(sizes["median"]), sizes["cache_max_side"])]
               or [STANDARD_SIZES[0]])


# ----------------------------------------------------------------------------- recommended space


def conflicting(d: Diagnosis) -> tuple[list[Finding], list[Finding]]:
    """Findings that pull regularisation both ways: (against it, for it); both empty unless both sides exist.

    Underfitting says "no augmentation, no dropout, no decay"; overfitting and small data say
    "augment, regularise". When both sides are present the doctor cannot know which wins.
    """
    against = [f for f in d.findings if f.kind == "underfitting"]
    favour = [f for f in d.findings if f.kind in ("overfitting", "small_data")]
    return (against, favour) if against and favour else ([], [])


def recommend_space(d: Diagnosis, study: str, n_trials: int = 30, *, keep_conflicting: bool = True,
                    enqueue_baseline: bool = True) -> str:
    """A space file (YAML text) whose choices follow the findings, with a comment on each param.

    When findings conflict (``keep_conflicting``), both remedies stay searchable; a strategy is
    fixed only when every finding points the same way. With ``enqueue_baseline`` the baseline's
    config (as far as it fits the space) runs as the study's first trial, so the search never ends
    worse than the baseline it diagnosed. The text is checked with :func:`search.space.parse_space`.
    """
    cfg = TrialConfig.from_dict(d.baseline["config"])
    epochs = int(cfg.epochs or 1)
    over, under = d.get("overfitting"), d.get("underfitting")
    slow, unstable = d.get("not_converged"), d.get("unstable")
    imbalance, colour = d.get("imbalance"), d.get("colour")
    size, aspect = d.get("input_size"), d.get("aspect")
    small = d.get("small_data")
    b = d.baseline
    diverged = "train_value" not in b  # no learning curve to judge fit by
    fit = "" if diverged else f"training {d.objective.name} {b['train_value']:.3f}, validation {b['val_value']:.3f}"
    params: list[tuple[str, Any, str]] = []

    def put(name: str, value: Any, why: str) -> None:
        params.append((name, value, why))

    # Learning rate, optimiser, batch size, schedule.
    if unstable:
        put("lr", {"float": [_sig(cfg.lr / 100), _sig(cfg.lr / 2)], "log": True},
            f"unstable ({'diverged' if diverged else 'spiky'} at lr {cfg.lr:g}): search lower rates only")
    else:
        put("lr", {"float": [_sig(cfg.lr / 10), _sig(min(1.0, cfg.lr * 10))], "log": True},
            f"{cfg.optimizer} at lr {cfg.lr:g} trained stably: a decade either side")
    put("optimizer", cfg.optimizer, "the baseline's optimiser; the lr range above is sized for it")
    put("batch_size", {"choices": [32, 64, 128]}, "gradient noise vs speed")
    if unstable:
        put("warmup_epochs", {"int": [1, max(1, min(3, epochs))]}, "unstable: warm the learning rate up")
        put("grad_clip", {"choices": [0.0, 1.0]}, "unstable: clip exploding gradient norms")
        put("schedule", {"choices": ["constant", "cosine"]}, "a decaying rate also calms late training")
    else:
        put("schedule", {"choices": ["constant", "cosine"]}, "decaying the rate often adds the last points")

    # Epochs: more when underfitting, early stopping when validation loss turned up.
    if under or slow:
        top = 3 * epochs
        why = (under or slow).summary.split(";")[0]
        put("epochs", {"int": [epochs, top]}, f"more epochs: {why}")
    elif over and over.evidence["val_loss_min_epoch"] < epochs:
        top = epochs
        low = max(1, int(over.evidence["val_loss_min_epoch"]))
        put("epochs", {"int": [low, epochs]},
            f"early stopping: validation loss was lowest at epoch {low} of {epochs}")
    else:
        top = epochs
        put("epochs", epochs, "the baseline's epochs" + ("" if diverged else
            ": neither still improving nor overfitting with time"))

    # Regularisation follows overfitting; it only hurts an underfitting model. When findings pull
    # both ways (underfitting + small data), both remedies stay choices, including "none" and 0.
    against, favour = conflicting(d) if keep_conflicting else ([], [])
    if against:
        pull = (f"findings conflict: {' + '.join(f.kind for f in against)} ({fit}) says no regularisation, "
                f"{' + '.join(f.kind for f in favour)} says regularise; the search decides")
        put("weight_decay", {"float": [0.0, 1e-3]}, f"{pull}: small decays including 0")
        put("dropout", {"float": [0.0, 0.3]}, f"{pull}: dropout from 0")
        put("augment", {"choices": ["none", "flip", "light", "geometric"]},
            f"{pull}: augmentation sets including none (small data: {favour[-1].summary})")
    elif over:
        put("weight_decay", {"float": [1e-5, 0.1], "log": True}, f"overfitting: {fit}")
        put("dropout", {"float": [0.0, 0.5]}, f"overfitting (gap {over.evidence['gap']:.3f})")
        sets = ["none", "crop", "light", "standard"] + (["heavy"] if min(d.facts["sizes"]["median"]) >= 32 else [])
        per_class = d.facts["train_per_class"].values()
        put("augment", {"choices": sets}, f"overfitting with {min(per_class)} to {max(per_class)} training images "
            "per class: augmentation makes more of them")
        put("label_smoothing", {"float": [0.0, 0.1]}, "overfitting: softer targets, less confident fits")
    elif diverged:
        put("weight_decay", {"float": [1e-6, 1e-3], "log": True}, "the baseline diverged: fit not judged; light decay")
        put("dropout", 0.0, "the baseline diverged: fit not judged")
        put("augment", {"choices": ["none", "light"]}, "the baseline diverged: fit not judged")
    elif under:
        put("weight_decay", 0.0, f"underfitting ({fit}): regularisation would make it worse")
        put("dropout", 0.0, "underfitting: no dropout")
        put("augment", "none", "underfitting: augmentation would make fitting harder")
    else:
        put("weight_decay", {"float": [1e-6, 1e-3], "log": True}, f"no overfitting seen ({fit}): light decay only")
        put("dropout", {"float": [0.0, 0.2]}, "no overfitting seen: a little dropout at most")
        put("augment", {"choices": ["none", "light"] if not small else ["none", "light", "standard"]},
            "no overfitting seen: light augmentation" + (" (few images per class)" if small else ""))

    # Capacity follows underfitting.
    if under:
        put("depth", {"int": [cfg.depth, min(8, cfg.depth + 2)]}, f"underfitting: deeper than the baseline's {cfg.depth}")
        put("width", {"choices": [cfg.width, 2 * cfg.width, 4 * cfg.width]},
            f"underfitting: wider than the baseline's {cfg.width}")
        put("residual", {"choices": [False, True]}, "underfitting: residual blocks train deeper nets")
    else:
        put("depth", cfg.depth, "the baseline diverged: its depth" if diverged else
            f"the baseline fits its training data ({fit}): capacity is enough")
        put("width", cfg.width, "the baseline's width")
    put("norm", "batchnorm", "unstable: batch norm steadies optimisation" if unstable else
        "batch norm, as in the baseline")

    # Input: size, aspect, colour.
    sizes = d.facts["sizes"]
    if size:
        ceiling = _size_ceiling(d.facts)
        choices = [s for s in STANDARD_SIZES if sizes["baseline_input"] <= s <= ceiling]
        put("input_size", {"choices": choices}, size.summary)
    elif under and min(sizes["median"]) > sizes["baseline_input"]:
        put("input_size", {"choices": [sizes["baseline_input"], min(sizes["median"])]},
            "underfitting: a larger input keeps more detail")
    else:
        put("input_size", sizes["baseline_input"],
            f"images are {sizes['median'][0]}x{sizes['median'][1]} (median): no detail lost at this size")
    if aspect:
        put("aspect", {"choices": ["stretch", "pad"]}, aspect.summary)
    if colour is None or colour.evidence.get("inconclusive") or not colour.evidence:
        put("color", {"choices": ["rgb", "gray", "hsv", "lab"]}, (colour.summary if colour else "colour not probed") + ": let the search decide")
    elif colour.evidence.get("grayscale"):
        put("color", "gray", colour.summary)
    elif colour.evidence.get("rgb_minus_gray", 0.0) >= COLOUR_GAIN:
        put("color", {"choices": ["rgb", "hsv", "lab"]}, colour.summary)
    else:
        put("color", {"choices": ["rgb", "gray"]}, colour.summary)

    written = {name for name, _, _ in params}
    for name, value in b.get("overrides", {}).items():
        if name not in written and name != "seed":
            put(name, value, "as set for the baseline (--set)")

    objective = _objective_doc(honest_objective(d.objective, imbalance, d.classes))
    objective_why = "the objective you asked for"
    if imbalance and d.objective.metric == "accuracy":
        objective_why = (f"imbalanced {imbalance.evidence['ratio']:.1f}:1: accuracy misleads "
                         f"(always {imbalance.evidence['majority_class']!r} scores "
                         f"{imbalance.evidence['majority_class_accuracy']:.3f})")

    lines = [
        f"# Recommended by `strategy-search doctor` for {d.dataset.label}.",
        "# Findings: " + ("; ".join(f.kind for f in d.findings) or "none"),
        "# Run it: strategy-search run <this file>",
        f"study: {_flow(study)}",
        f"description: {_flow('Search space recommended by strategy-search doctor from a baseline diagnosis.')}",
        f"objective: {_flow(objective)}  # {objective_why}",
        f"dataset: {_flow(_dataset_doc(d.dataset))}  # the data the doctor examined",
        f"budget: {_flow({'n_trials': n_trials, 'max_epochs': top})}",
        f"sampler: {_flow({'name': 'tpe', 'n_startup_trials': max(1, min(8, n_trials // 3))})}",
        f"pruner: {_flow({'name': 'median', 'n_startup_trials': 5, 'n_warmup_steps': max(1, top // 4)})}",
        "seed: 0",
        "params:",
    ]
    lines += [f"  {name}: {_flow(value)}  # {_one_line(why)}" for name, value, why in params]
    if under:
        lines.append("  # underfitting: a pretrained backbone often helps most. It needs weights on disk (never")
        lines.append("  # downloaded): add `weights_dir: DIR` and e.g. `backbone: {choices: [none, resnet18]}`,")
        lines.append("  # `pretrained: true`.")
    text = "\n".join(lines) + "\n"
    parsed = parse_space(yaml.safe_load(text), source="recommended space")  # a bug here must not reach the user
    if enqueue_baseline and not diverged:
        first = baseline_entry(parsed, b["config"])
        if first:
            text += ("# The baseline the doctor trained runs first (params outside this space are sampled),\n"
                     "# so the search never ends worse than it.\n"
                     f"enqueue: [{_flow(first)}]\n")
            parse_space(yaml.safe_load(text), source="recommended space")
    return text


def baseline_entry(space: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline's values of the params ``space`` searches, where they fit the space."""
    return {p.name: config[p.name] for p in space.params
            if p.kind != "fixed" and p.active(config) and param_fits(p, config[p.name]) is None}


def _objective_doc(o: ObjectiveSpec) -> Any:
    if o.metric == "accuracy":
        return "accuracy"
    doc: dict[str, Any] = {"metric": o.metric, "average": o.average}
    if o.positive_class is not None:
        doc["positive_class"] = o.positive_class
    return doc


def _dataset_doc(spec: DatasetSpec) -> dict[str, Any]:
    if spec.name:
        doc: dict[str, Any] = {"name": spec.name}
    elif spec.csv:
        doc = {"csv": str(Path(spec.csv).resolve())}
        if spec.root:
            doc["root"] = str(Path(spec.root).resolve())
    else:
        doc = {"path": str(Path(str(spec.path)).resolve())}
    doc.update(val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, split_seed=spec.split_seed)
    if spec.limit is not None:
        doc["limit"] = spec.limit
    if spec.cache_max_side != DatasetSpec.cache_max_side:
        doc["cache_max_side"] = spec.cache_max_side
    return doc


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------- report


def format_report(d: Diagnosis) -> str:
    """The diagnosis for a terminal: baseline, learning curves, findings with evidence, data facts."""
    f, b, cfg = d.facts, d.baseline, d.baseline["config"]
    lines = [
        f"doctor: {d.dataset.label}  ({f['n_images']} images, {len(d.classes)} classes; "
        f"train {f['splits']['train']} / validation {f['splits']['val']} / test {f['splits']['test']})",
        f"baseline: small CNN depth {cfg['depth']} width {cfg['width']}, {cfg['optimizer']} lr {cfg['lr']:g}, "
        f"batch {cfg['batch_size']}, {cfg['epochs']} epochs, input {f['sizes']['baseline_input']} px, "
        f"{cfg['color']}, no regularisation  ({b['seconds']:.1f}s)",
    ]
    if "history" in b:
        lines += ["", f"learning curves (objective: {d.objective.name} on validation)",
                  "  epoch  train_loss  val_loss  train_acc  val_acc  val_obj  grad_max"]
        for h in b["history"]:
            lines.append(f"  {h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['val_loss']:>8.4f}  "
                         f"{h['train_accuracy']:>9.3f}  {h['val_accuracy']:>7.3f}  {h['value']:>7.3f}  "
                         f"{h['grad_norm_max']:>8.3g}")
        lines.append(f"  final (eval mode): training {d.objective.name} {b['train_value']:.3f}, "
                     f"validation {b['val_value']:.3f}")
    for group, title in (("training", "training findings"), ("data", "data findings")):
        found = [x for x in d.findings if x.group == group]
        lines += ["", title + ("" if found else ": none")]
        for x in found:
            lines.append(f"  [{x.kind}] {x.summary}")
            if x.remedies:
                lines.append(f"      try: {'; '.join(x.remedies)}")
    counts = ", ".join(f"{c} {n}" for c, n in f["train_per_class"].items())
    s = f["sizes"]
    lines += [
        "", "data facts",
        f"  training images per class: {counts}",
        f"  image sizes (w x h): min {s['min'][0]}x{s['min'][1]}, median {s['median'][0]}x{s['median'][1]}, "
        f"max {s['max'][0]}x{s['max'][1]}; median aspect {s['median_aspect']:.2f}, "
        f"{s['share_not_square']:.0%} far from square",
        f"  grayscale: {'yes' if f['grayscale'] else 'no'}; duplicates: {f['duplicates']['extra_copies']}; "
        f"unreadable files: {f['unreadable']}",
    ]
    return "\n".join(lines)
