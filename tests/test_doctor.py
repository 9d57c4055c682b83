"""`strategy-search doctor`: diagnoses on constructed setups, and its space file runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from search.cli import main
from search.tools.doctor import Diagnosis
from search.space.parse import load_space


# The recipe's regularizers switched off: a plain CNN that can overfit (or underfit) on purpose.
NO_REGULARIZATION = ("--set", "residual=false", "--set", "label_smoothing=0", "--set", "ema_decay=0", "--set",
                     "augment=none", "--set", "weight_decay=0", "--set", "schedule=constant", "--set", "batch_size=64",
                     "--set", "warmup_epochs=0")


def _doctor(*args: str) -> dict:
    result = CliRunner().invoke(main, ["doctor", *args, "--json", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def _kinds(report: dict) -> list[str]:
    return [f["kind"] for f in report["findings"]]


def _finding(report: dict, kind: str) -> dict:
    return next(f for f in report["findings"] if f["kind"] == kind)


def _commented_params(path: Path) -> dict[str, str]:
    """param -> its YAML comment, from the written file's text."""
    text = path.read_text()
    body = text.split("\nparams:\n", 1)[1]
    out = {}
    for line in body.splitlines():
        if not line.startswith(("  ", "#")):
            break  # the next top-level key (enqueue:, doctor:)
        if line.startswith("  ") and not line.lstrip().startswith("#"):
            key, _, rest = line.strip().partition(":")
            out[key] = rest.split("  # ", 1)[1] if "  # " in rest else ""
    return out


def test_overfitting_setup_is_diagnosed_and_regularization_recommended(workdir: Path) -> None:
    # Tiny training split (96 images, 6 classes), a large CNN, no regularization, many epochs.
    report = _doctor("shapes", "--limit", "200", "--val-fraction", "0.4", "--epochs", "15",
                     "--set", "width=32", "--set", "depth=3", "--set", "lr=0.003", *NO_REGULARIZATION, "-o", "over.yaml")
    kinds = _kinds(report)
    assert "overfitting" in kinds and "underfitting" not in kinds and "imbalance" not in kinds
    over = _finding(report, "overfitting")["evidence"]
    base = report["baseline"]
    assert over["gap"] >= 0.10 and over["gap"] == pytest.approx(base["train_value"] - base["val_value"], abs=1e-3)
    assert base["train_value"] >= 0.9
    # Color carries the label in `shapes`: the gray probe loses clearly.
    color = _finding(report, "color")["evidence"]
    assert color["rgb_minus_gray"] >= 0.03 and not color.get("inconclusive")

    space = load_space("over.yaml")
    for name in ("weight_decay", "dropout", "augment"):
        assert space.param(name).kind != "fixed", name
    # Capacity was not the problem: the baseline's depth or one stage less, never more.
    assert max(space.param("depth").choices) == report["baseline"]["config"]["depth"]
    assert "gray" not in space.param("color").choices
    comments = _commented_params(workdir / "over.yaml")
    assert set(comments) == {p.name for p in space.params} and all(comments.values())
    assert "overfitting" in comments["weight_decay"]


def test_underfitting_setup_is_diagnosed_and_capacity_recommended(workdir: Path) -> None:
    report = _doctor("shapes", "--limit", "600", "--epochs", "2", *NO_REGULARIZATION, "--set", "width=2", "--set", "depth=1",
                     "--no-probe", "-o", "under.yaml")
    kinds = _kinds(report)
    assert "underfitting" in kinds and "overfitting" not in kinds
    assert _finding(report, "underfitting")["evidence"]["train"] < 0.9
    space = load_space("under.yaml")
    assert space.param("depth").kind == "int" and space.param("depth").high > 1
    assert max(space.param("width").choices) > 2
    # Every trial trains the recipe's epochs for this data (Hyperband compares them at equal progress).
    assert space.param("epochs").value == space.budget.max_epochs > 2
    if "small_data" in kinds:  # 60 training images per class: the findings conflict, both stay searchable
        assert space.param("dropout").low == 0.0 and "none" in space.param("augment").choices
    else:
        assert space.param("dropout").value == 0.0  # regularization would only hurt


def test_imbalance_is_flagged_and_the_written_space_runs(workdir: Path) -> None:
    report = _doctor("shapes-rare", "--limit", "600", "--epochs", "2", *NO_REGULARIZATION, "--set", "width=4", "--no-probe",
                     "-o", "rare.yaml", "--n-trials", "1", "--study", "rare")
    imbalance = _finding(report, "imbalance")["evidence"]
    assert imbalance["minority_class"] == "target" and imbalance["ratio"] >= 3
    counts = report["facts"]["per_class"]
    assert imbalance["majority_class_accuracy"] == pytest.approx(
        counts["other"]["val"] / (counts["other"]["val"] + counts["target"]["val"]), abs=1e-3)
    space = load_space("rare.yaml")
    (objective,) = space.objectives
    assert (objective.metric, objective.average, objective.positive_class) == ("f1", "binary", "target")

    result = CliRunner().invoke(main, ["run", "rare.yaml", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "f1[target]=" in result.output and "complete 1" in result.output


def test_grayscale_data_and_divergence(workdir: Path) -> None:
    # digits is gray; SGD at lr 10 without normalization produces a non-finite loss, then lr 1 is tried.
    report = _doctor("digits", "--limit", "300", "--epochs", "3", "--set", "lr=10", "--set", "optimizer=sgd",
                     "--set", "norm=none", "--set", "width=16", "--set", "depth=4", "--set", "batch_size=8",
                     "-o", "digits.yaml")
    unstable = _finding(report, "unstable")
    assert unstable["evidence"]["diverged"] and report["baseline"]["config"]["lr"] == pytest.approx(1.0)
    assert _finding(report, "color")["evidence"] == {"grayscale": True}
    space = load_space("digits.yaml")
    assert space.param("lr").high < 10 and space.param("color").value == "gray"
    assert space.param("norm").value == "batchnorm" and space.param("warmup_epochs").kind == "int"


def _folder(root: Path) -> Path:
    """Two classes of 160x96 color images, one duplicated file and one corrupt file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            arr = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    (root / "b" / "copy.png").write_bytes((root / "a" / "0.png").read_bytes())  # same image, other label
    (root / "a" / "broken.png").write_bytes(b"not an image")
    return root


def test_image_folder_facts(workdir: Path) -> None:
    root = _folder(workdir / "photos")
    report = _doctor(str(root), "--epochs", "1", "--no-probe", "-o", "photos.yaml")
    facts = report["facts"]
    assert facts["sizes"]["median"] == [160, 96] and facts["sizes"]["baseline_input"] == 64
    assert facts["unreadable"] == 1 and facts["duplicates"]["groups"] == 1
    assert facts["duplicates"]["conflicting_labels"] == 1 and not facts["grayscale"]
    kinds = _kinds(report)
    assert {"duplicates", "corrupt", "aspect", "input_size"} <= set(kinds)
    assert _finding(report, "input_size")["evidence"]["pixels_kept"] == pytest.approx((64 / 96) ** 2, abs=1e-3)
    space = load_space("photos.yaml")
    assert space.param("input_size").choices == (64, 96)
    assert space.param("aspect").choices == ("stretch", "pad")
    assert yaml.safe_load((workdir / "photos.yaml").read_text())["dataset"]["path"] == str(root.resolve())


def test_doctor_rejects_bad_options(workdir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "digits", "--set", "width"])
    assert result.exit_code == 2 and "PARAM=VALUE" in result.output
    result = runner.invoke(main, ["doctor", "digits", "--set", "colour=gray"])  # British spelling: not a param
    assert result.exit_code == 2 and "unknown param" in result.output
    result = runner.invoke(main, ["doctor", "digits", "--objective", "{metric: f1, average: binary}"])
    assert result.exit_code == 2 and "positive_class" in result.output
    result = runner.invoke(main, ["doctor", str(workdir / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


def _diagnosis(*kinds: str) -> "Diagnosis":
    """A diagnosis with the given findings, as the doctor would build it (no training)."""
    from search.tools.doctor import Diagnosis, Finding, baseline_config
    from search.space.parse import DatasetSpec, ObjectiveSpec

    evidence = {"overfitting": {"gap": 0.3, "val_loss_min_epoch": 3}, "underfitting": {"train": 0.5},
                "small_data": {"threshold": 100}}
    findings = [Finding(k, f"{k} summary", evidence[k], [], "data" if k == "small_data" else "training")
                for k in kinds]
    config = baseline_config(type("D", (), {"native_size": 32, "train": range(60)})(), 5).to_dict()
    return Diagnosis(DatasetSpec(name="shapes"), ObjectiveSpec(), ["a", "b"],
                     {"config": config, "train_value": 0.5 if "underfitting" in kinds else 1.0, "val_value": 0.4},
                     {"sizes": {"median": [32, 32], "baseline_input": 32, "cache_max_side": 256},
                      "train_per_class": {"a": 30, "b": 30}}, findings)


def test_conflicting_findings_keep_both_remedies_searchable_and_agreeing_ones_fix_them() -> None:
    from search.tools.doctor import recommend_space
    from search.space.parse import parse_space

    def space(d: "Diagnosis", **kw: bool):  # type: ignore[no-untyped-def]
        text = recommend_space(d, "s", 10, **kw)
        return parse_space(yaml.safe_load(text)), text

    # Underfitting alone: every finding says "less regularization": no dropout, decay from 0, at most
    # the lightest augmentation.
    alone, _ = space(_diagnosis("underfitting"))
    assert alone.param("dropout").value == 0.0 and alone.param("weight_decay").low == 0.0
    assert set(alone.param("augment").choices) <= {"none", "crop"}
    # Underfitting + small data pull both ways: choices that include none / 0, and the comment says why.
    both, text = space(_diagnosis("underfitting", "small_data"))
    aug, drop, decay = both.param("augment"), both.param("dropout"), both.param("weight_decay")
    assert aug.kind == "choices" and "none" in aug.choices and len(aug.choices) > 1
    assert drop.kind == decay.kind == "float" and drop.low == decay.low == 0.0 and not decay.log
    line = next(ln for ln in text.splitlines() if ln.startswith("  augment:"))
    assert "findings conflict: underfitting" in line and "small_data says regularize" in line
    assert both.param("depth").kind == "int"  # capacity still follows underfitting
    # Without the rule (the old behavior, kept for the benchmark) the strategy is fixed.
    old, _ = space(_diagnosis("underfitting", "small_data"), keep_conflicting=False)
    assert old.param("dropout").value == 0.0
    # Overfitting + small data agree: regularization searched, no conflict comment.
    agree, text = space(_diagnosis("overfitting", "small_data"))
    assert agree.param("augment").kind == "choices" and "findings conflict" not in text


def test_doctor_space_enqueues_its_baseline_as_the_first_trial() -> None:
    from search.tools.doctor import recommend_space
    from search.space.parse import parse_space

    d = _diagnosis("underfitting", "small_data")
    text = recommend_space(d, "s", 10)
    spec = parse_space(yaml.safe_load(text))
    first, *rest = spec.enqueue
    config = d.baseline["config"]
    # The recipe the doctor diagnosed, run whole: its values, and the full recipe's epochs.
    assert first and all(config[k] == v for k, v in first.items() if k not in ("augment", "ema_decay"))
    assert {"lr", "batch_size", "depth", "width", "augment"} <= set(first)
    assert spec.param("epochs").value > config["epochs"]
    # Then the portfolio, fitted to this space; the comment above enqueue says what changed.
    assert rest and all(entry != first for entry in rest) and "portfolio" in text
    (alone,) = parse_space(yaml.safe_load(recommend_space(d, "s", 10, use_portfolio=False))).enqueue
    assert alone == first
    assert "enqueue" not in recommend_space(d, "s", 10, enqueue_baseline=False)


def test_facts_and_baseline_share_one_decode_of_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Square images above the baseline's size are decoded once, at the size it trains at; the facts
    (original sizes, duplicates) come from that one cache entry."""
    from PIL import Image

    from search.tools.doctor import diagnose
    from search.space.parse import DatasetSpec

    cache = tmp_path / "cache"
    monkeypatch.setenv("STRATEGY_SEARCH_CACHE", str(cache))
    rng = np.random.default_rng(1)
    root = tmp_path / "squares"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "b" / "copy.png").write_bytes((root / "a" / "0.png").read_bytes())
    d = diagnose(DatasetSpec(path=str(root)), epochs=1, probe_color=False, device="cpu")
    assert d.facts["sizes"]["median"] == [96, 96] and d.facts["sizes"]["baseline_input"] == 64
    assert d.facts["duplicates"]["groups"] == 1 and d.baseline["config"]["input_size"] == 64
    entries = [p.name for p in cache.rglob("*.npy") if not p.name.startswith("headers-")]
    assert len(entries) == 1 and entries[0].startswith("s64-"), entries


def test_doctor_offers_only_registered_values() -> None:
    from search.data.color import COLOR_SPACES
    from search.data.transforms import AUGMENT_SETS
    from search.tools.doctor import pick, recommend_space
    from search.space.parse import parse_space

    spec = parse_space(yaml.safe_load(recommend_space(_diagnosis("overfitting"), "s", 10)))
    assert list(spec.param("color").choices) == COLOR_SPACES.names()  # color not probed: every space
    assert len(spec.param("augment").choices) > 1 and set(spec.param("augment").choices) <= set(AUGMENT_SETS)
    assert pick("augment", ["light", "no-such-set"]) == ["light"]
    assert pick("color", exclude=["gray"]) == [c for c in COLOR_SPACES.names() if c != "gray"]


def test_run_doctor_is_the_command_in_one_call(workdir: Path) -> None:
    from search.tools.doctor import run_doctor

    done = run_doctor("digits", epochs=1, limit=100, probe_color=False, device="cpu", output="d.yaml")
    assert done.space == Path("d.yaml") and load_space("d.yaml").param("color").value == "gray"
    assert done.record["space"] == "d.yaml" and done.record["baseline"]["train_value"] > 0
    assert {"grayscale": True} in [f["evidence"] for f in done.record["findings"] if f["kind"] == "color"]
    assert done.text.startswith("doctor: digits  (100 images") and done.text.endswith("strategy-search run d.yaml")
    with pytest.raises(Exception, match="exists; add --force"):
        run_doctor("digits", output="d.yaml")


def test_registered_advice_reaches_the_recommended_space_without_touching_the_doctor() -> None:
    """A strategy's doctor advice is proposed for its findings only, and only where it means something."""
    from search import strategies
    from search.tools.doctor import recommend_space
    from search.space.parse import parse_space
    from search.strategies import Advice, Param, Strategy

    name = "test_only_advised"
    strategies.register(Strategy(
        name, Param(str, "off", "a remedy for this test", choices=("off", "on")), "regularization",
        "a remedy defined only here", off="off",
        advice=(Advice(("small_data",), {"choices": ["off", "on"]}, "small data: try the test remedy"),)))
    try:
        with_it = recommend_space(_diagnosis("overfitting", "small_data"), "s", 10)
        line = next(ln for ln in with_it.splitlines() if ln.startswith(f"  {name}:"))
        assert "small data: try the test remedy" in line
        assert parse_space(yaml.safe_load(with_it)).param(name).choices == ("off", "on")
        assert name not in recommend_space(_diagnosis("underfitting"), "s", 10)
    finally:
        strategies.unregister(name)
    # Registered remedies: drop_path needs residual blocks or a backbone: the recipe has them, a plain CNN not.
    d = _diagnosis("overfitting")
    space = parse_space(yaml.safe_load(recommend_space(d, "s", 10)))
    assert space.param("mix") is not None and space.param("ema_decay") is not None
    assert space.param("drop_path") is not None
    d.baseline["config"]["residual"] = False
    assert parse_space(yaml.safe_load(recommend_space(d, "s", 10))).param("drop_path") is None
