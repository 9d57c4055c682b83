"""Findings -> a space file: a plain document whose every param says which finding put it there.

:func:`recommend_space` decides (the doctor's policy, below); :mod:`search.tools.doctor.emit` writes the
document with its comments; the values offered come from :mod:`search.tools.doctor.remedies`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from search.core.config import TrialConfig
from search.tools.doctor.emit import dump_commented
from search.tools.doctor.findings import COLOR_GAIN, STANDARD_SIZES, Diagnosis, Finding, honest_objective, size_ceiling
from search.tools.doctor.remedies import advised, pick
from search.space.enqueue import param_fits
from search.space.parse import parse_space
from search.space.provenance import MAX_CLASSES
from search.core.spec import DatasetSpec, ObjectiveSpec


def conflicting(d: Diagnosis) -> tuple[list[Finding], list[Finding]]:
    """Findings that pull regularization both ways: (against it, for it); both empty unless both sides exist.

    Underfitting says "no augmentation, no dropout, no decay"; overfitting and small data say
    "augment, regularize". When both sides are present the doctor cannot know which wins.
    """
    against = [f for f in d.findings if f.kind == "underfitting"]
    favor = [f for f in d.findings if f.kind in ("overfitting", "small_data")]
    return (against, favor) if against and favor else ([], [])


def recommend_space(d: Diagnosis, study: str, n_trials: int = 30, *, keep_conflicting: bool = True,
                    enqueue_baseline: bool = True, objective_given: bool = True) -> str:
    """A space file (YAML text) whose choices follow the findings, with a comment on each param.

    When findings conflict (``keep_conflicting``), both remedies stay searchable; a strategy is
    fixed only when every finding points the same way. With ``enqueue_baseline`` the baseline's
    config (as far as it fits the space) runs as the study's first trial, so the search never ends
    worse than the baseline it diagnosed. ``objective_given``: whether the objective was asked for
    (``--objective``) or is the default. The doctor's baseline, findings and reasons go into the
    ``doctor:`` record (:mod:`search.space.provenance`), which the study keeps for its report.
    The text is checked with :func:`search.space.parse.parse_space`.
    """
    params, why, top = _params(d, keep_conflicting)
    imbalance = d.get("imbalance")
    objective_why = ("the objective you asked for (--objective)" if objective_given else
                     "the default objective (doctor --objective changes it, e.g. f1 or precision of one class)")
    if imbalance and d.objective.metric == "accuracy":
        objective_why = (f"imbalanced {imbalance.evidence['ratio']:.1f}:1: accuracy misleads "
                         f"(always {imbalance.evidence['majority_class']!r} scores "
                         f"{imbalance.evidence['majority_class_accuracy']:.3f})")
    doc: dict[str, Any] = {
        "study": study,
        "description": "Search space recommended by strategy-search doctor from a baseline diagnosis.",
        "objective": _objective_doc(honest_objective(d.objective, imbalance, d.classes)),
        "dataset": _dataset_doc(d.dataset, d.facts.get("split_from", {})),
        "budget": {"n_trials": n_trials, "max_epochs": top},
        "sampler": {"name": "tpe", "n_startup_trials": max(1, min(8, n_trials // 3))},
        "pruner": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": max(1, top // 4)},
        "seed": 0,
        "params": params,
    }
    header = [f"Recommended by `strategy-search doctor` for {d.dataset.label}.",
              "Findings: " + ("; ".join(f.kind for f in d.findings) or "none"),
              "Run it: strategy-search run <this file>"]
    comments = {"objective": objective_why, "dataset": _dataset_why(d.dataset, d.facts.get("split_from", {})),
                "doctor": "what the doctor measured (for the report; no trial reads it)"}
    notes = {"params": [
        "underfitting: a pretrained backbone often helps most: e.g. `backbone: {choices: [none,",
        "resnet18]}`, `pretrained: true` (weights from `weights_dir`, else timm / Hugging Face).",
    ]} if d.get("underfitting") else {}
    above: dict[str, list[str]] = {}

    def write() -> str:
        return dump_commented(doc, header=header, comments=comments, above=above, blocks={"params": why},
                              block_notes=notes, nested=("doctor",))

    parsed = parse_space(yaml.safe_load(write()), source="recommended space")  # a bug must not reach the user
    if enqueue_baseline and "train_value" in d.baseline:
        first = baseline_entry(parsed, d.baseline["config"])
        if first:
            doc["enqueue"] = [first]
            above["enqueue"] = ["The baseline the doctor trained runs first (params outside this space are sampled),",
                                "so the search never ends worse than it."]
            parse_space(yaml.safe_load(write()), source="recommended space")
    doc["doctor"] = doctor_record(d, why)
    parse_space(yaml.safe_load(write()), source="recommended space")
    return write()


def doctor_record(d: Diagnosis, why: Mapping[str, str]) -> dict[str, Any]:
    """The ``doctor:`` record (:mod:`search.space.provenance`): the baseline as measured, the findings
    and each param's reason, so the study's report can say what the search gained and why."""
    b = d.baseline
    baseline: dict[str, Any] = {"epochs": int(b["config"].get("epochs") or 0),
                                "seconds": round(float(b.get("seconds", 0.0)), 1),
                                "input_size": int(d.facts["sizes"]["baseline_input"])}
    if "val_value" in b:  # it trained (a baseline that diverged twice has no value)
        baseline.update(value=round(float(b["val_value"]), 6), train_value=round(float(b["train_value"]), 6))
    if b.get("n_params") is not None:
        baseline["n_params"] = int(b["n_params"])
    if b.get("val_confusion") is not None and len(d.classes) <= MAX_CLASSES:
        baseline.update(classes=list(d.classes), val_confusion=[[int(n) for n in row] for row in b["val_confusion"]])
    return {
        "objective": d.objective.name,
        "dataset": d.dataset.label,
        "baseline": baseline,
        "findings": [{"kind": f.kind, "summary": f.summary} for f in d.findings],
        "why": dict(why),
    }


def _params(d: Diagnosis, keep_conflicting: bool) -> tuple[dict[str, Any], dict[str, str], int]:
    """The params document, each param's reason, and the most epochs a trial may train."""
    cfg = TrialConfig.from_dict(d.baseline["config"])
    epochs = int(cfg.epochs or 1)
    over, under = d.get("overfitting"), d.get("underfitting")
    slow, unstable = d.get("not_converged"), d.get("unstable")
    color, size, aspect = d.get("color"), d.get("input_size"), d.get("aspect")
    small = d.get("small_data")
    b = d.baseline
    diverged = "train_value" not in b  # no learning curve to judge fit by
    fit = "" if diverged else f"training {d.objective.name} {b['train_value']:.3f}, validation {b['val_value']:.3f}"
    params: dict[str, Any] = {}
    why: dict[str, str] = {}

    def put(name: str, value: Any, reason: str) -> None:
        params[name] = value
        why[name] = reason

    def choices(param: str, wanted: list[Any] | None = None, **kw: Any) -> dict[str, list[Any]]:
        return {"choices": pick(param, wanted, **kw)}

    # Learning rate, optimizer, batch size, schedule.
    if unstable:
        put("lr", {"float": [_sig(cfg.lr / 100), _sig(cfg.lr / 2)], "log": True},
            f"unstable ({'diverged' if diverged else 'spiky'} at lr {cfg.lr:g}): search lower rates only")
    else:
        put("lr", {"float": [_sig(cfg.lr / 10), _sig(min(1.0, cfg.lr * 10))], "log": True},
            f"{cfg.optimizer} at lr {cfg.lr:g} trained stably: a decade either side")
    put("optimizer", cfg.optimizer, "the baseline's optimizer; the lr range above is sized for it")
    put("batch_size", {"choices": [32, 64, 128]}, "gradient noise vs speed")
    if unstable:
        put("warmup_epochs", {"int": [1, max(1, min(3, epochs))]}, "unstable: warm the learning rate up")
        put("grad_clip", {"choices": [0.0, 1.0]}, "unstable: clip exploding gradient norms")
        put("schedule", choices("schedule", ["constant", "cosine"]), "a decaying rate also calms late training")
    else:
        put("schedule", choices("schedule", ["constant", "cosine"]), "decaying the rate often adds the last points")

    # Epochs: more when underfitting, early stopping when validation loss turned up.
    if under or slow:
        top = 3 * epochs
        put("epochs", {"int": [epochs, top]}, f"more epochs: {(under or slow).summary.split(';')[0]}")
    elif over and over.evidence["val_loss_min_epoch"] < epochs:
        top = epochs
        low = max(1, int(over.evidence["val_loss_min_epoch"]))
        put("epochs", {"int": [low, epochs]}, f"early stopping: validation loss was lowest at epoch {low} of {epochs}")
    else:
        top = epochs
        put("epochs", epochs, "the baseline's epochs" + ("" if diverged else
            ": neither still improving nor overfitting with time"))

    # Regularization follows overfitting; it only hurts an underfitting model. When findings pull
    # both ways (underfitting + small data), both remedies stay choices, including "none" and 0.
    against, favor = conflicting(d) if keep_conflicting else ([], [])
    if against:
        pull = (f"findings conflict: {' + '.join(f.kind for f in against)} ({fit}) says no regularization, "
                f"{' + '.join(f.kind for f in favor)} says regularize; the search decides")
        put("weight_decay", {"float": [0.0, 1e-3]}, f"{pull}: small decays including 0")
        put("dropout", {"float": [0.0, 0.3]}, f"{pull}: dropout from 0")
        put("augment", choices("augment", ["none", "flip", "light", "geometric"]),
            f"{pull}: augmentation sets including none (small data: {favor[-1].summary})")
    elif over:
        put("weight_decay", {"float": [1e-5, 0.1], "log": True}, f"overfitting: {fit}")
        put("dropout", {"float": [0.0, 0.5]}, f"overfitting (gap {over.evidence['gap']:.3f})")
        sets = ["none", "crop", "light", "standard"] + (["heavy"] if min(d.facts["sizes"]["median"]) >= 32 else [])
        per_class = d.facts["train_per_class"].values()
        put("augment", choices("augment", sets), f"overfitting with {min(per_class)} to {max(per_class)} "
            "training images per class: augmentation makes more of them")
        put("label_smoothing", {"float": [0.0, 0.1]}, "overfitting: softer targets, less confident fits")
    elif diverged:
        put("weight_decay", {"float": [1e-6, 1e-3], "log": True}, "the baseline diverged: fit not judged; light decay")
        put("dropout", 0.0, "the baseline diverged: fit not judged")
        put("augment", choices("augment", ["none", "light"]), "the baseline diverged: fit not judged")
    elif under:
        put("weight_decay", 0.0, f"underfitting ({fit}): regularization would make it worse")
        put("dropout", 0.0, "underfitting: no dropout")
        put("augment", "none", "underfitting: augmentation would make fitting harder")
    else:
        put("weight_decay", {"float": [1e-6, 1e-3], "log": True}, f"no overfitting seen ({fit}): light decay only")
        put("dropout", {"float": [0.0, 0.2]}, "no overfitting seen: a little dropout at most")
        put("augment", choices("augment", ["none", "light"] if not small else ["none", "light", "standard"]),
            "no overfitting seen: light augmentation" + (" (few images per class)" if small else ""))

    # Capacity follows underfitting.
    if under:
        put("depth", {"int": [cfg.depth, min(8, cfg.depth + 2)]}, f"underfitting: deeper than the baseline's {cfg.depth}")
        put("width", {"choices": [cfg.width, 2 * cfg.width, 4 * cfg.width]},
            f"underfitting: wider than the baseline's {cfg.width}")
        put("residual", choices("residual"), "underfitting: residual blocks train deeper nets")
    else:
        put("depth", cfg.depth, "the baseline diverged: its depth" if diverged else
            f"the baseline fits its training data ({fit}): capacity is enough")
        put("width", cfg.width, "the baseline's width")
    put("norm", "batchnorm", "unstable: batch norm steadies optimization" if unstable else
        "batch norm, as in the baseline")

    # Input: size, aspect, color.
    sizes = d.facts["sizes"]
    if size:
        ceiling = size_ceiling(d.facts)
        put("input_size", {"choices": [s for s in STANDARD_SIZES if sizes["baseline_input"] <= s <= ceiling]},
            size.summary)
    elif under and min(sizes["median"]) > sizes["baseline_input"]:
        put("input_size", {"choices": [sizes["baseline_input"], min(sizes["median"])]},
            "underfitting: a larger input keeps more detail")
    else:
        put("input_size", sizes["baseline_input"],
            f"images are {sizes['median'][0]}x{sizes['median'][1]} (median): no detail lost at this size")
    if aspect:
        put("aspect", choices("aspect"), aspect.summary)
    if color is None or color.evidence.get("inconclusive") or not color.evidence:
        put("color", choices("color"), (color.summary if color else "color not probed") + ": let the search decide")
    elif color.evidence.get("grayscale"):
        put("color", "gray", color.summary)
    elif color.evidence.get("rgb_minus_gray", 0.0) >= COLOR_GAIN:
        put("color", choices("color", exclude=["gray"]), color.summary)
    else:
        put("color", choices("color", ["rgb", "gray"]), color.summary)

    # Remedies registered with doctor advice (search/strategies/) for the findings present.
    for name, advice in advised(d.kinds(), cfg):
        if name not in params:
            put(name, advice.propose, advice.why)

    for name, value in b.get("overrides", {}).items():
        if name not in params and name != "seed":
            put(name, value, "as set for the baseline (--set)")
    return params, why, top


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


def _dataset_why(spec: DatasetSpec, split_from: Mapping[str, str]) -> str:
    """The dataset's comment: which splits are the dataset's own and which are carved from train."""
    own = [s for s in ("val", "test") if split_from.get(s) == "folder"]
    carved = [s for s in ("val", "test") if s not in own]
    where = "val/ and test/ folders" if spec.csv is None else "split column"
    if not own:
        return "the data the doctor examined; validation and test are carved from train (val_fraction, " \
               "test_fraction, split_seed)"
    named = " and ".join("validation" if s == "val" else s for s in own)
    text = f"the data the doctor examined; its own {named} split{'s' if len(own) > 1 else ''} " \
           f"({where}) {'are' if len(own) > 1 else 'is'} used, so no {'/'.join(f'{s}_fraction' for s in own)}"
    if carved:
        text += f"; {'validation' if carved[0] == 'val' else 'test'} is carved from train ({carved[0]}_fraction)"
    return text


def _dataset_doc(spec: DatasetSpec, split_from: Mapping[str, str] | None = None) -> dict[str, Any]:
    if spec.name:
        doc: dict[str, Any] = {"name": spec.name}
    elif spec.csv:
        doc = {"csv": str(Path(spec.csv).resolve())}
        if spec.root:
            doc["root"] = str(Path(spec.root).resolve())
    else:
        doc = {"path": str(Path(str(spec.path)).resolve())}
    # A split the dataset brings (val/, test/ folders or a CSV's split column) takes no fraction.
    own = {s for s, where in (split_from or {}).items() if where == "folder"}
    if "val" not in own:
        doc["val_fraction"] = spec.val_fraction
    if "test" not in own:
        doc["test_fraction"] = spec.test_fraction
    if own != {"val", "test"}:
        doc["split_seed"] = spec.split_seed
    if spec.limit is not None:
        doc["limit"] = spec.limit
    if spec.cache_max_side != DatasetSpec.cache_max_side:
        doc["cache_max_side"] = spec.cache_max_side
    return doc


def _sig(x: float) -> float:
    return float(f"{x:.3g}")
