"""Search-space files: YAML -> validated, typed :class:`SearchSpace`.

Everything is checked before any trial starts. Each problem raises :class:`SpaceError`
naming the file, the key path (``params.dropout.float``) and what is allowed.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from search.space.constraints import parse_constraints
from search.data.builtin import BUILTIN_DATASETS
from search.data.jpeg_cache import FORMATS as CACHE_FORMATS
from search.data.transforms import AUGMENT_SETS, check_augment
from search.space.enqueue import parse_enqueue
from search.core.duration import parse_duration
from search.core.errors import SpaceError, UserError
from search.core.locations import parse_location
from search.algorithms.pruners import PRUNERS, default_pruner
from search.algorithms.samplers import SAMPLERS
from search.core.spec import (  # noqa: F401 - the parsed types, re-exported for callers of load_space
    AVERAGES, MINIMIZED_METRICS, OBJECTIVE_METRICS, Budget, Component, Condition, DatasetSpec, ObjectiveSpec,
    ParamSpec, SearchSpace, choice_label,
)
from search.space.provenance import check_doctor
from search.strategies import PARAMS, check_value

TOP_KEYS = (
    "study", "description", "objective", "dataset", "budget", "sampler", "pruner", "seed",
    "weights_dir", "augment_sets", "keep", "keep_top_k", "params", "source", "constraints", "enqueue",
    "doctor",
    "artifacts",
)
KEEP_MODES = ("best", "top_k", "none")
# Study names appear in file and folder names (export, report): letters, digits, _ . + - only, not starting with a dot.
STUDY_NAME = re.compile(r"\w[\w.+-]{0,127}")
STUDY_NAME_HELP = "1-128 letters, digits, _ . + - (not starting with . or -)"
# A document may expand (through YAML aliases) to at most this many nodes per byte of file, or
# MIN_EXPANSION_LIMIT nodes, whichever is more: an alias bomb is rejected before it is built.
EXPANSION_PER_BYTE = 10
MIN_EXPANSION_LIMIT = 20_000
MAX_DEPTH = 64  # nesting of mappings and lists (a space needs about 6): deeper is refused before it is built


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags beyond plain data) that also reads ``1e-3``, ``5e-4`` and ``1.0e3`` as
    numbers, as YAML 1.2 does: YAML 1.1 wants a dot and a signed exponent, and makes them strings,
    which is how most people write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


# ----------------------------------------------------------------------------- parsing


class _Checker:
    """Validation helpers bound to the file name, so every error names it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> SpaceError:
        return SpaceError(self.source, key, message)

    def mapping(self, value: Any, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k), f"unknown key; allowed: {', '.join(allowed)}")
        return dict(value)

    def number(self, value: Any, key: str, *, integer: bool = False, low: float | None = None,
               strict_low: bool = False, high: float | None = None) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        if low is not None and (value < low or (strict_low and value == low)):
            raise self.fail(key, f"must be {'>' if strict_low else '>='} {low}, got {value!r}")
        if high is not None and value > high:
            raise self.fail(key, f"must be <= {high}, got {value!r}")
        return value

    def one_of(self, value: Any, key: str, allowed: Sequence[str]) -> str:
        if value not in allowed:
            raise self.fail(key, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
        return value


def check_study_name(name: Any) -> str | None:
    """Why ``name`` cannot be a study name (it names folders on disk), or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"expected a non-empty string, got {name!r}"
    if not STUDY_NAME.fullmatch(name.strip()):
        return f"{name!r} is not a valid study name; allowed: {STUDY_NAME_HELP}"
    return None


def safe_study_name(text: str) -> str:
    """``text`` turned into a valid study name (for names made up from a folder name)."""
    name = re.sub(r"[^\w.+-]+", "-", text).lstrip(".-+")[:128]
    return name or "study"


def safe_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses documents whose aliases expand far beyond the text's size."""
    _check_depth(text, source)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            limit = max(MIN_EXPANSION_LIMIT, EXPANSION_PER_BYTE * len(text))
            size = _expanded_size(node, limit)
            if size > limit:
                raise SpaceError(source, "", f"YAML aliases expand a {len(text.encode())}-byte document to more "
                                 f"than {limit} nodes; refusing it (write the values out, or use fewer aliases)")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:  # (the depth check above keeps documents well below this)
        raise SpaceError(source, "", f"nested too deeply; a space file needs a few levels, at most {MAX_DEPTH}") \
            from None


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpaceError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return SpaceError(source, "", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")


def _check_depth(text: str, source: str) -> None:
    """Refuse mappings and lists nested deeper than MAX_DEPTH, from the parser's events (an iterative
    pass): building such a document recurses once per level and ends in a RecursionError."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise SpaceError(source, "", f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep; "
                                     "a space file needs a few levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with every alias expanded, counted without expanding (stops above ``limit``)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    # Iterative post-order walk: a deep document must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if not done and id(node) in open_nodes:
            return limit + 1  # an alias inside its own anchor: infinitely large
        open_nodes.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes.get(id(c), 0) for c in children))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file."""
    p = Path(path)
    if not p.is_file():
        raise SpaceError(str(path), "", "no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError(str(path), "", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise SpaceError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    return parse_space(safe_yaml(text, str(path)), source=str(path), base_dir=p.parent)


def parse_space(doc: Any, source: str = "<space>", base_dir: Path | None = None) -> SearchSpace:
    """Validate a space document (already loaded from YAML or from a study's attrs)."""
    c = _Checker(source)
    doc = c.mapping(doc, "", TOP_KEYS)
    doc = copy.deepcopy(doc)
    if "study" not in doc:
        raise c.fail("study", "missing: every space needs a study name")
    study = doc["study"]
    problem = check_study_name(study)
    if problem:
        raise c.fail("study", problem)
    _check_source(c, doc.get("source"))
    check_doctor(c, doc.get("doctor"))

    budget = _parse_budget(c, doc.get("budget", {}))
    dataset = _parse_dataset(c, doc.get("dataset", "digits"), base_dir)
    if dataset.path is not None or dataset.csv is not None:
        resolved = {k: v for k, v in (("path", dataset.path), ("csv", dataset.csv), ("root", dataset.root)) if v}
        doc["dataset"] = {**(doc["dataset"] if isinstance(doc["dataset"], Mapping) else {}), **resolved}
    objectives = _parse_objectives(c, doc.get("objective", "accuracy"))
    seed = c.number(doc.get("seed", 0), "seed", integer=True, low=0)
    keep = c.one_of(doc.get("keep", "best"), "keep", KEEP_MODES)
    keep_top_k = c.number(doc.get("keep_top_k", 3), "keep_top_k", integer=True, low=1)
    weights_dir = doc.get("weights_dir")
    if weights_dir is not None:
        if not isinstance(weights_dir, str):
            raise c.fail("weights_dir", f"expected a directory path, got {weights_dir!r}")
        weights_dir = _resolve_path(weights_dir, base_dir)
        doc["weights_dir"] = weights_dir
    artifacts = None
    if doc.get("artifacts") is not None:
        try:
            artifacts = parse_location(doc["artifacts"], base_dir=base_dir, what="artifacts").url
        except UserError as exc:
            raise c.fail("artifacts", str(exc).removeprefix("artifacts: ")) from None
        doc["artifacts"] = artifacts
    augment_sets = _parse_augment_sets(c, doc.get("augment_sets", {}))
    params = _parse_params(c, doc.get("params", {}), budget, tuple(augment_sets))
    sampler = _parse_component(c, doc.get("sampler", "tpe"), "sampler", SAMPLERS)
    pruner = _parse_component(c, doc.get("pruner", default_pruner(len(objectives))), "pruner", PRUNERS)
    misfit = SAMPLERS.get(sampler.name).fits(params, len(objectives))
    if misfit:
        raise c.fail(*misfit)
    if len(objectives) == 1 and not PRUNERS.get(pruner.name).fits(1):
        raise c.fail("pruner", f"{pruner.name} compares several objectives; this study has one "
                               "(successive_halving is the same rule on one objective)")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "expected a string")
    _check_target(c, budget, objectives)
    constraints = parse_constraints(c, doc.get("constraints", {}))
    enqueue = parse_enqueue(c, doc.get("enqueue", []), params)
    return SearchSpace(
        study=study.strip(), objectives=objectives, dataset=dataset, budget=budget, sampler=sampler,
        pruner=pruner, seed=seed, params=params, raw=doc, source=source, description=description,
        weights_dir=weights_dir, augment_sets=augment_sets, keep=keep, keep_top_k=keep_top_k,
        constraints=constraints, enqueue=enqueue, artifacts=artifacts,
    )


def _resolve_path(path: str, base_dir: Path | None) -> str:
    """``~`` expands; a relative path is relative to the space file's directory."""
    p = Path(path).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = (base_dir / p).resolve()
    return str(p)


def _parse_budget(c: _Checker, raw: Any) -> Budget:
    raw = c.mapping(raw, "budget", ("n_trials", "timeout", "time", "max_epochs", "target", "patience", "min_delta"))
    n_trials = raw.get("n_trials")  # None: the grid's size, else unlimited under a timeout, else 20
    if n_trials is not None:
        c.number(n_trials, "budget.n_trials", integer=True, low=1)
    timeout = raw.get("timeout")
    if timeout is not None:
        c.number(timeout, "budget.timeout", low=0, strict_low=True)
    time_budget = None
    if raw.get("time") is not None:
        try:
            time_budget = parse_duration(raw["time"])
        except ValueError as exc:
            raise c.fail("budget.time", str(exc)) from None
    max_epochs = c.number(raw.get("max_epochs", 10), "budget.max_epochs", integer=True, low=1, high=100000)
    target = raw.get("target")
    if target is not None:
        c.number(target, "budget.target")
    patience = raw.get("patience")
    if patience is not None:
        c.number(patience, "budget.patience", integer=True, low=1)
    if "min_delta" in raw and patience is None:
        raise c.fail("budget.min_delta", "only means something with budget.patience (trials without an improvement)")
    min_delta = c.number(raw.get("min_delta", 0.0), "budget.min_delta", low=0)
    return Budget(n_trials=n_trials, timeout=timeout, max_epochs=max_epochs, target=target, patience=patience,
                  min_delta=float(min_delta), time=time_budget)


def _check_target(c: _Checker, budget: Budget, objectives: Sequence[ObjectiveSpec]) -> None:
    """``budget.target`` is a value of the first objective: a quality metric's lies in (0, 1]."""
    first = objectives[0]
    if budget.target is not None and first.metric in OBJECTIVE_METRICS and not 0 < budget.target <= 1:
        raise c.fail("budget.target", f"{first.name} lies in 0..1; give a target in (0, 1], got {budget.target!r}")
    if budget.target is not None and first.metric in MINIMIZED_METRICS and budget.target <= 0:
        raise c.fail("budget.target", f"{first.name} is a cost; give a target > 0, got {budget.target!r}")


def _parse_dataset(c: _Checker, raw: Any, base_dir: Path | None) -> DatasetSpec:
    if isinstance(raw, str):
        raw = {"name": raw} if raw in BUILTIN_DATASETS else {"path": raw}
    keys = ("name", "path", "csv", "root", "val_fraction", "test_fraction", "split_seed", "limit",
            "cache_max_side", "cache", "cache_quality")
    raw = c.mapping(raw, "dataset", keys)
    name, path, csv, root = raw.get("name"), raw.get("path"), raw.get("csv"), raw.get("root")
    if sum(v is not None for v in (name, path, csv)) != 1:
        raise c.fail("dataset", "give exactly one of name (built-in: " + ", ".join(BUILTIN_DATASETS)
                     + "), path (an image folder) or csv (a manifest with columns path,label[,split])")
    if name is not None:
        c.one_of(name, "dataset.name", list(BUILTIN_DATASETS))
    if path is not None:
        if not isinstance(path, str):
            raise c.fail("dataset.path", f"expected a directory path, got {path!r}")
        path = _resolve_path(path, base_dir)
    if root is not None and csv is None:
        raise c.fail("dataset.root", "only goes with csv (the folder the manifest's relative paths start from)")
    if csv is not None:
        if not isinstance(csv, str) or not csv.strip():
            raise c.fail("dataset.csv", f"expected the path of a .csv file, got {csv!r}")
        csv = _resolve_path(csv, base_dir)
        if not Path(csv).is_file():
            raise c.fail("dataset.csv", f"{csv}: no such file")
        if root is not None:
            if not isinstance(root, str) or not root.strip():
                raise c.fail("dataset.root", f"expected a folder path, got {root!r}")
            root = _resolve_path(root, base_dir)
            if not Path(root).is_dir():
                raise c.fail("dataset.root", f"{root}: not a folder")
    val = c.number(raw.get("val_fraction", 0.2), "dataset.val_fraction", low=0, strict_low=True, high=0.9)
    test = c.number(raw.get("test_fraction", 0.2), "dataset.test_fraction", low=0, high=0.9)
    if val + test >= 0.95:
        raise c.fail("dataset", "val_fraction + test_fraction must leave data to train on (< 0.95)")
    split_seed = c.number(raw.get("split_seed", 0), "dataset.split_seed", integer=True, low=0)
    limit = raw.get("limit")
    if limit is not None:
        c.number(limit, "dataset.limit", integer=True, low=10)
    side = c.number(raw.get("cache_max_side", 256), "dataset.cache_max_side", integer=True, low=8, high=4096)
    cache_format = raw.get("cache", "auto")
    c.one_of(cache_format, "dataset.cache", list(CACHE_FORMATS))
    quality = c.number(raw.get("cache_quality", 90), "dataset.cache_quality", integer=True, low=50, high=100)
    return DatasetSpec(name=name, path=path, val_fraction=float(val), test_fraction=float(test),
                       split_seed=split_seed, limit=limit, cache_max_side=side, csv=csv, root=root,
                       cache=cache_format, cache_quality=quality)


def _parse_objectives(c: _Checker, raw: Any) -> tuple[ObjectiveSpec, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise c.fail("objective", "needs at least one metric")
    out = []
    for i, item in enumerate(items):
        key = f"objective[{i}]" if isinstance(raw, list) else "objective"
        allowed = OBJECTIVE_METRICS + MINIMIZED_METRICS
        if isinstance(item, str):
            item = {"metric": item}
        item = c.mapping(item, key, ("metric", "average", "positive_class"))
        metric = c.one_of(item.get("metric"), f"{key}.metric", allowed)
        average = c.one_of(item.get("average", "macro"), f"{key}.average", AVERAGES)
        positive = item.get("positive_class")
        if average == "binary" and positive is None and metric in ("precision", "recall", "f1"):
            raise c.fail(f"{key}.positive_class", "binary averaging needs positive_class (a class name or index)")
        if positive is not None and not isinstance(positive, (str, int)):
            raise c.fail(f"{key}.positive_class", f"expected a class name or index, got {positive!r}")
        if metric in MINIMIZED_METRICS and not isinstance(raw, list):
            raise c.fail(key, f"{metric} is a cost; use it beside a quality metric in a list (multi-objective)")
        out.append(ObjectiveSpec(metric=metric, average=average, positive_class=positive))
    if len({o.name for o in out}) != len(out):
        raise c.fail("objective", "the same metric is listed twice")
    return tuple(out)


def _parse_component(c: _Checker, raw: Any, key: str, registry: Any) -> Component:
    """A sampler or pruner: a registered name and the options that one takes (each checks its own)."""
    allowed = registry.names()
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        raise c.fail(key, f"expected a name ({', '.join(allowed)}) or a mapping with 'name'")
    raw = dict(raw)
    name = c.one_of(raw.pop("name", None), f"{key}.name", allowed)
    options = registry.get(name).options
    for k, v in raw.items():
        if k not in options:
            hint = ", ".join(options) or "none"
            raise c.fail(f"{key}.{k}", f"unknown option for {key} {name}; allowed: {hint}")
        problem = options[k].problem(v)
        if problem:
            raise c.fail(f"{key}.{k}", problem)
    return Component(name=name, options=raw)


def _parse_augment_sets(c: _Checker, raw: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(raw, Mapping):
        raise c.fail("augment_sets", "expected a mapping of set name -> list of ops")
    out: dict[str, tuple[Any, ...]] = {}
    for name, ops in raw.items():
        key = f"augment_sets.{name}"
        if not isinstance(name, str) or name in AUGMENT_SETS:
            raise c.fail(key, "set names must be strings that do not shadow a built-in set")
        if not isinstance(ops, list):
            raise c.fail(key, "expected a list of ops")
        problem = check_augment(ops, ())
        if problem:
            raise c.fail(key, problem)
        out[name] = tuple(ops)
    return out


_RANGE_KEYS = ("int", "float", "step", "log", "when")


def _parse_params(c: _Checker, raw: Any, budget: Budget, extra_sets: Sequence[str]) -> tuple[ParamSpec, ...]:
    if not isinstance(raw, Mapping):
        raise c.fail("params", "expected a mapping of param name -> spec")
    specs: list[ParamSpec] = []
    seen: list[str] = []
    for name, spec in raw.items():
        key = f"params.{name}"
        if name not in PARAMS:
            raise c.fail(key, f"unknown param; allowed: {', '.join(PARAMS)}")
        info = PARAMS[name]
        when: tuple[Condition, ...] = ()
        if isinstance(spec, Mapping) and ({"choices", "int", "float"} & set(spec)):
            if "when" in spec:
                when = _parse_when(c, spec["when"], f"{key}.when", specs)
            if "choices" in spec:
                c.mapping(spec, key, ("choices", "when"))
                choices = spec["choices"]
                if not isinstance(choices, list) or not choices:
                    raise c.fail(f"{key}.choices", "expected a non-empty list")
                for i, choice in enumerate(choices):
                    problem = check_value(name, choice, extra_sets)
                    if problem:
                        raise c.fail(f"{key}.choices[{i}]", problem)
                labels = [choice_label(v) for v in choices]
                if len(set(map(str, labels))) != len(labels):
                    raise c.fail(f"{key}.choices", "duplicate choices")
                specs.append(ParamSpec(name, "choices", choices=tuple(choices), when=when))
            else:
                specs.append(_parse_range(c, name, key, spec, when))
        else:
            if isinstance(spec, Mapping) and not info.list_ok:
                raise c.fail(key, "expected {choices: [...]}, {int: [lo, hi]}, {float: [lo, hi]} or a fixed value")
            if isinstance(spec, list) and not info.list_ok:
                raise c.fail(key, "a list is not a fixed value here; write {choices: [...]} to search over it")
            problem = check_value(name, spec, extra_sets)
            if problem:
                raise c.fail(key, problem)
            specs.append(ParamSpec(name, "fixed", value=spec))
        seen.append(name)
    epochs = next((s for s in specs if s.name == "epochs"), None)
    if epochs is not None:
        top = max(epochs.choices) if epochs.kind == "choices" else (epochs.high if epochs.kind == "int" else epochs.value)
        if top is not None and top > budget.max_epochs:
            raise c.fail("params.epochs", f"goes up to {top} but budget.max_epochs is {budget.max_epochs}")
    return tuple(specs)


def _parse_range(c: _Checker, name: str, key: str, spec: Mapping[str, Any], when: tuple[Condition, ...]) -> ParamSpec:
    info = PARAMS[name]
    c.mapping(spec, key, _RANGE_KEYS)
    kind = "int" if "int" in spec else "float"
    if "int" in spec and "float" in spec:
        raise c.fail(key, "give either int or float, not both")
    if info.kind not in (int, float) or (info.kind is int and kind == "float"):
        allowed = "{choices: [...]} or a fixed value" if info.kind not in (int, float) else "{int: [lo, hi]}"
        raise c.fail(f"{key}.{kind}", f"{name} is {info.kind.__name__}-valued; use {allowed}")
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise c.fail(f"{key}.{kind}", "expected [low, high]")
    lo = c.number(bounds[0], f"{key}.{kind}[0]", integer=kind == "int")
    hi = c.number(bounds[1], f"{key}.{kind}[1]", integer=kind == "int")
    if lo > hi:
        raise c.fail(f"{key}.{kind}", f"low {lo} is above high {hi}")
    for i, bound in enumerate((lo, hi)):
        problem = check_value(name, int(bound) if info.kind is int else float(bound))
        if problem:
            raise c.fail(f"{key}.{kind}[{i}]", problem)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise c.fail(f"{key}.log", "expected true or false")
    if log and lo <= 0:
        raise c.fail(f"{key}.log", f"a log range needs low > 0, got {lo}")
    step = spec.get("step")
    if step is not None:
        c.number(step, f"{key}.step", integer=kind == "int", low=0, strict_low=True)
        if log:
            raise c.fail(f"{key}.step", "step and log cannot be combined")
    return ParamSpec(name, kind, low=lo, high=hi, step=step, log=log, when=when)


def _parse_when(c: _Checker, raw: Any, key: str, above: Sequence[ParamSpec]) -> tuple[Condition, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise c.fail(key, "expected a mapping: param -> value, [values] or {not: value}")
    parents = {p.name: p for p in above}
    out = []
    for param, cond in raw.items():
        if param not in parents:
            raise c.fail(f"{key}.{param}", "a condition can only refer to a param listed above it in params")
        negate = False
        if isinstance(cond, Mapping):
            c.mapping(cond, f"{key}.{param}", ("not",))
            if "not" not in cond:
                raise c.fail(f"{key}.{param}", "expected a value, [values] or {not: value}")
            cond, negate = cond["not"], True
        values = tuple(cond) if isinstance(cond, list) else (cond,)
        if not values:
            raise c.fail(f"{key}.{param}", "expected at least one value")
        _check_when_values(c, f"{key}.{param}", parents[param], values)
        out.append(Condition(param=param, values=values, negate=negate))
    return tuple(out)


def _check_when_values(c: _Checker, key: str, parent: ParamSpec, values: Sequence[Any]) -> None:
    """Each value must be one the parent can take, or the condition silently never (or always) holds."""
    if parent.kind == "choices":
        allowed = [choice_label(v) for v in parent.choices]
    elif parent.kind == "fixed":
        allowed = [choice_label(parent.value)]
    elif parent.kind == "int":
        step = int(parent.step or 1)
        allowed = None
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not parent.low <= v <= parent.high \
                    or (v - int(parent.low)) % step:
                raise c.fail(key, f"{v!r} is not a value {parent.name} can take "
                             f"(int range [{parent.low}, {parent.high}], step {step})")
        return
    else:
        raise c.fail(key, f"{parent.name} is a float range; a condition needs a param with choices or an int range")
    for v in values:
        if choice_label(v) not in allowed:
            raise c.fail(key, f"{v!r} is not one of {parent.name}'s values; allowed: {', '.join(map(str, allowed))}")


def _check_source(c: _Checker, raw: Any) -> None:
    """``source:`` (written by export): which trial a config came from and its recorded values."""
    if raw is None:
        return
    raw = c.mapping(raw, "source", ("study", "trial", "values", "split"))
    if "study" in raw and not isinstance(raw["study"], str):
        raise c.fail("source.study", f"expected a study name, got {raw['study']!r}")
    if "trial" in raw:
        c.number(raw["trial"], "source.trial", integer=True, low=0)
    if "split" in raw and not isinstance(raw["split"], str):
        raise c.fail("source.split", f"expected a split name, got {raw['split']!r}")
    values = raw.get("values", {})
    if not isinstance(values, Mapping) or len(values) > 16:
        raise c.fail("source.values", "expected a mapping of at most 16 objective name -> value")
    for name, value in values.items():
        if not isinstance(name, str):
            raise c.fail("source.values", f"expected objective names, got {name!r}")
        if value is not None:
            c.number(value, f"source.values.{name}")
