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
from search.core.duration import format_duration
from search.tools.doctor.orientation import verdict
from search.tools.doctor.plan import plan_budget
from search.tools.doctor.recipe import adapt_entry, ema_for, portfolio, portfolio_configs, recipe
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
                    enqueue_baseline: bool = True, budget: float | None = None, spent: float = 0.0,
                    use_portfolio: bool = True, cpu_clock: bool = False,
                    objective_given: bool = True) -> str:
    """A space file (YAML text) whose choices follow the findings, with a comment on each param.

    Ranges are centred on the strong recipe (search.tools.doctor.recipe) the baseline ran. When
    findings conflict (``keep_conflicting``), both remedies stay searchable; a strategy is fixed
    only when every finding points the same way. With ``enqueue_baseline`` the recipe, with the
    flips or quarter turns the orientation probe allows, runs as the study's first trial, then the
    portfolio's entries fitted to the space (``use_portfolio``), so the search starts from strong
    configurations and never ends worse than them. ``budget`` (seconds; ``spent`` of them already
    used by the doctor) sizes trials, epochs and the Hyperband schedule from the baseline's measured
    epoch time (its CPU time with ``cpu_clock``, as benchmarks measure on a shared machine) and
    becomes ``budget.time``. ``objective_given``: whether the objective was asked for
    (``--objective``) or is the default. The doctor's baseline, findings and reasons go into the
    ``doctor:`` record (:mod:`search.space.provenance`), which the study keeps for its report.
    The text is checked with :func:`search.space.parse.parse_space`.
    """
    b = d.baseline
    orientation = verdict(next((f for f in d.findings if f.kind in ORIENTATION_KINDS), None))
    base = TrialConfig.from_dict(b["config"])
    n_train = int(b.get("n_train") or sum(d.facts.get("train_per_class", {}).values()) or 1)
    full = recipe(n_train, int(base.input_size or d.facts["sizes"]["baseline_input"]), orientation or "none")
    epochs = int(full["epochs"])
    entries = [] if not (enqueue_baseline and use_portfolio) else portfolio()
    plan = None
    epoch_seconds = b.get("epoch_cpu_seconds" if cpu_clock else "epoch_seconds")
    if budget is not None and epoch_seconds:
        # The baseline's epoch time is at half the recipe's epochs' batch and size: the same per epoch.
        plan = plan_budget(budget, float(epoch_seconds), epochs, spent, first_trials=1 + len(entries))
        epochs, n_trials = plan.epochs, plan.n_trials
    params, why, top = _params(d, keep_conflicting, epochs, orientation)
    imbalance = d.get("imbalance")
    objective_why = ("the objective you asked for (--objective)" if objective_given else
                     "the default objective (doctor --objective changes it, e.g. f1 or precision of one class)")
    if imbalance and d.objective.metric == "accuracy":
        objective_why = (f"imbalanced {imbalance.evidence['ratio']:.1f}:1: accuracy misleads "
                         f"(always {imbalance.evidence['majority_class']!r} scores "
                         f"{imbalance.evidence['majority_class_accuracy']:.3f})")
    budget_doc: dict[str, Any] = {"n_trials": n_trials, "max_epochs": top}
    if plan is not None:
        budget_doc["time"] = format_duration(max(1.0, plan.time))
    doc: dict[str, Any] = {
        "study": study,
        "description": "Search space recommended by strategy-search doctor from a baseline diagnosis.",
        "objective": _objective_doc(honest_objective(d.objective, imbalance, d.classes)),
        "dataset": _dataset_doc(d.dataset, d.facts.get("split_from", {})),
        "budget": budget_doc,
        "sampler": {"name": "tpe", "n_startup_trials": max(1, min(8, n_trials // 3))},
        # Hyperband over the (fixed) epochs of every trial: rungs compare trials at the same point of
        # the same schedule, and one bracket never prunes, so a slow starter under a long cosine
        # schedule with EMA is not judged by its first epochs alone.
        "pruner": plan.pruner() if plan else {"name": "hyperband", "min_resource": max(1, top // 9),
                                              "reduction_factor": 3, "sampler_per_bracket": 0},
        "seed": 0,
        "params": params,
    }
    header = [f"Recommended by `strategy-search doctor` for {d.dataset.label}.",
              "Findings: " + ("; ".join(f.kind for f in d.findings) or "none"),
              "Run it: strategy-search run <this file>"]
    comments = {"objective": objective_why, "dataset": _dataset_why(d.dataset, d.facts.get("split_from", {})),
                "doctor": "what the doctor measured (for the report; no trial reads it)",
                "pruner": "Hyperband brackets over the same epochs: trials compared at equal schedule progress"}
    if plan is not None:
        comments["budget"] = (f"time budget {format_duration(budget)}"
                              + (f" less {spent:.0f}s the doctor used" if spent else "")
                              + f": {plan.note}, {plan.epoch_seconds:.2f}s per epoch measured")
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
        first_config = _first_config(d, full, epochs)
        first = baseline_entry(parsed, first_config)
        if first:
            queue, lines = [first], []
            for name, config in portfolio_configs(first_config, entries):
                fitted = adapt_entry(name, config, parsed, queue)
                if fitted.skipped:
                    lines.append(f"portfolio entry {name!r} skipped: {fitted.skipped}")
                    continue
                queue.append(fitted.params)
                if fitted.changes:
                    lines.append(f"portfolio entry {name!r} fitted: " + "; ".join(fitted.changes))
            doc["enqueue"] = queue
            above["enqueue"] = ["First the recipe the doctor trained (with the flips or quarter turns its orientation",
                                "probe allows), then the portfolio (search/tools/doctor/portfolio.yaml), so the search",
                                "starts from strong configurations and never ends worse than them.", *lines]
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


ORIENTATION_KINDS = ("no_orientation", "mirror_free", "orientation")


def _first_config(d: Diagnosis, full: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """The diagnosed baseline run whole: the recipe's epochs (or the budget's), the flips its probe allows."""
    config = dict(d.baseline["config"])
    overrides = d.baseline.get("overrides", {})
    for name in ("augment", "tta"):
        if name not in overrides:
            config[name] = full[name]
    config["epochs"] = epochs
    if "ema_decay" not in overrides and config.get("ema_decay"):
        config["ema_decay"] = ema_for(int(d.baseline.get("n_train") or 1), int(config["batch_size"]), epochs)
    if "warmup_epochs" not in overrides:
        config["warmup_epochs"] = max(1, round(epochs / 15))
    return config


def _params(d: Diagnosis, keep_conflicting: bool, epochs: int | None = None, orientation: str | None = None
            ) -> tuple[dict[str, Any], dict[str, str], int]:
    """The params document, each param's reason, and the most epochs a trial may train."""
    cfg = TrialConfig.from_dict(d.baseline["config"])
    top = int(epochs or cfg.epochs or 1)
    over, under = d.get("overfitting"), d.get("underfitting")
    unstable = d.get("unstable")
    color, size, aspect = d.get("color"), d.get("input_size"), d.get("aspect")
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

    # Learning rate, optimizer, batch size, schedule: around the recipe.
    if unstable:
        # The baseline's rate (lowered already when it diverged) stays the top: the first trial runs it.
        put("lr", {"float": [_sig(cfg.lr / 10), _sig(cfg.lr)], "log": True},
            f"unstable ({'diverged' if diverged else 'spiky'} at lr {cfg.lr:g}): search lower rates only")
    else:
        put("lr", {"float": [_sig(cfg.lr / 3), _sig(min(1.0, cfg.lr * 3))], "log": True},
            f"{cfg.optimizer} at lr {cfg.lr:g} trained stably: a factor 3 either side of the recipe's")
    put("optimizer", cfg.optimizer, "the recipe's optimizer; the lr range above is sized for it")
    batch = int(cfg.batch_size)
    put("batch_size", {"choices": sorted({max(8, batch // 2), batch, 2 * batch})}, "gradient noise vs speed, "
        f"around the recipe's {batch}")
    put("schedule", cfg.schedule, "the recipe's warm-up and cosine decay (a long decay adds the last points)")
    if unstable:
        low = max(1, round(top / 15))
        put("warmup_epochs", {"int": [low, max(low + 1, min(top // 3, 3 * low))]}, "unstable: a longer warm-up")
        put("grad_clip", {"choices": [0.0, 1.0]}, "unstable: clips exploding gradient norms")
    else:
        put("warmup_epochs", max(1, round(top / 15)), "the recipe's warm-up (a fifteenth of the epochs)")
    put("epochs", top, f"every trial trains the same {top} epochs (the recipe's for this data"
        f"{' and budget' if epochs and epochs != cfg.epochs else ''}): Hyperband compares them at equal progress")

    # Regularization follows overfitting; it only hurts an underfitting model. When findings pull
    # both ways (underfitting + small data), both remedies stay choices, including "none" and 0.
    aug = {None: ["crop", "light", "light-dihedral"], "none": ["none", "crop"], "mirror_free": ["crop", "light"],
           "no_orientation": ["light", "light-dihedral"]}[orientation]
    against, favor = conflicting(d) if keep_conflicting else ([], [])
    if against:
        pull = (f"findings conflict: {' + '.join(f.kind for f in against)} ({fit}) says no regularization, "
                f"{' + '.join(f.kind for f in favor)} says regularize; the search decides")
        put("weight_decay", {"float": [0.0, 0.1]}, f"{pull}: decays from 0")
        put("dropout", {"float": [0.0, 0.3]}, f"{pull}: dropout from 0")
        put("augment", choices("augment", ["none", *aug]), f"{pull}: augmentation sets including none "
            f"(small data: {favor[-1].summary})")
    elif over:
        put("weight_decay", {"float": [0.01, 0.3], "log": True}, f"overfitting: {fit}")
        put("dropout", {"float": [0.0, 0.3]}, f"overfitting (gap {over.evidence['gap']:.3f})")
        per_class = d.facts["train_per_class"].values()
        put("augment", choices("augment", aug), f"overfitting with {min(per_class)} to {max(per_class)} "
            "training images per class: augmentation makes more of them")
    elif diverged:
        put("weight_decay", {"float": [0.005, 0.1], "log": True}, "the baseline diverged: fit not judged")
        put("dropout", 0.0, "the baseline diverged: fit not judged")
        put("augment", choices("augment", aug), "the baseline diverged: fit not judged")
    elif under:
        put("weight_decay", {"float": [0.0, 0.05]}, f"underfitting ({fit}): little or no decay")
        put("dropout", 0.0, "underfitting: no dropout")
        put("augment", choices("augment", ["none", *aug[:1]]), "underfitting: at most the lightest augmentation")
    else:
        put("weight_decay", {"float": [0.01, 0.2], "log": True}, f"no overfitting seen ({fit}): around the "
            f"recipe's {cfg.weight_decay:g}")
        put("dropout", {"float": [0.0, 0.2]}, "no overfitting seen: a little dropout at most")
        put("augment", choices("augment", aug), "the recipe's augmentation, with or without flips and turns")
    put("label_smoothing", {"float": [0.0, 0.2]}, "softer targets around the recipe's 0.1 (airbench: 0.2)")
    if cfg.ema_decay:
        ema = ema_for(int(b.get("n_train") or 1), int(cfg.batch_size), top)
        put("ema_decay", {"choices": sorted({0.0, ema, _sig(min(0.999, 1 - (1 - ema) / 2))})},
            "weight EMA: off, the recipe's horizon (a tenth of the run) or twice as long")

    # Capacity follows underfitting.
    if under:
        put("depth", {"int": [cfg.depth, min(8, cfg.depth + 1)]}, f"underfitting: deeper than the baseline's {cfg.depth}")
        put("width", {"choices": [cfg.width, 2 * cfg.width]}, f"underfitting: wider than the baseline's {cfg.width}")
    else:
        put("depth", {"choices": [max(1, cfg.depth - 1), cfg.depth]} if not diverged else cfg.depth,
            "the baseline diverged: its depth" if diverged else
            f"the baseline fits its training data ({fit}): its depth or one stage less")
        put("width", {"choices": sorted({max(8, (3 * cfg.width) // 4), cfg.width, (3 * cfg.width) // 2})},
            "around the recipe's width")
    put("residual", cfg.residual, "residual blocks, as in the recipe")
    put("norm", "batchnorm", "unstable: batch norm steadies optimization" if unstable else
        "batch norm, as in the baseline")
    # Test-time augmentation follows the orientation probe (search.tools.doctor.orientation).
    if orientation is None:
        put("tta", choices("tta"), "orientation not probed or inconclusive: the search decides")
    elif orientation == "none":
        put("tta", "none", "canonical orientation: a mirrored or turned view is another image")

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
