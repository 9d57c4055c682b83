"""Each benchmark script runs end to end on its --tiny setting and writes its JSON (no timings checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from conftest import ROOT


def _run(name: str, out: Path, *extra: str, timeout: float = 300) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--tiny", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / f"{name}-tiny.json").read_text())
    machine = result["machine"]
    assert machine["nproc"] >= 1 and machine["torch"] == torch.__version__ and machine["cpu"]
    assert len(machine["loadavg_start"]) == 3 and machine["date"]
    return proc.stdout, result


def test_trial_overhead_compares_the_same_training(tmp_path: Path) -> None:
    out, result = _run("trial_overhead", tmp_path, "--device", "cpu")
    (r,) = result["results"]
    assert r["ratio"] > 0 and r["library_cpu_seconds"] > 0 and r["plain_cpu_seconds"] > 0
    # Same model, data, seed and steps: the hand-written loop reaches the very same accuracy.
    assert r["library_val_accuracy"] == r["plain_val_accuracy"]
    assert r["profile_library"]["train (whole trial)"]["calls"] == 1
    assert "Trial overhead" in out


def test_data_path_measures_every_arm(tmp_path: Path) -> None:
    out, result = _run("data_path", tmp_path)
    arms = {r["arm"]: r for r in result["results"]}
    cache = arms["tensor cache"]
    assert cache["images_per_s"] > 0 and cache["speed_vs_cache"] == 1.0
    disk = [r for name, r in arms.items() if "decode each epoch" in name]
    assert disk and all(r["images_per_epoch"] == cache["images_per_epoch"] for r in disk)
    assert "Training-loop throughput" in out
    assert {"tensor cache + crop/flip", "tensor cache + crop/flip per image"} <= set(arms)
    micro = result["augment_micro"]
    assert [r["batch"] for r in micro if r["device"] == "cpu"] == ["64 x 3 x 32 x 32", "256 x 3 x 64 x 64"]
    assert all(r["per_image_ms"] > 0 and r["batched_ms"] > 0 for r in micro)


def test_search_efficiency_counts_epochs(tmp_path: Path) -> None:
    _, result = _run("search_efficiency", tmp_path)
    runs = {r["arm"]: r for r in result["runs"]}
    budget = result["spaces"]["digits"]["budget"]
    # Random search without pruning trains every trial for every epoch; pruning can only save epochs.
    assert [t["epochs"] for t in runs["random"]["trials"]] == [budget["max_epochs"]] * budget["n_trials"]
    tpe = runs["tpe+hyperband"]["trials"]
    assert len(tpe) == budget["n_trials"] and all(1 <= t["epochs"] <= budget["max_epochs"] for t in tpe)
    (summary,) = result["summary"]
    assert summary["best"] == max(t["value"] for r in result["runs"] for t in r["trials"] if t["value"] is not None)


def test_worker_scaling_uses_the_exact_budget(tmp_path: Path) -> None:
    _, result = _run("worker_scaling", tmp_path)
    cells = result["cells"]
    assert {c["storage"] for c in cells} == {"sqlite", "journal"}
    assert all(c["trials"] == result["trials_per_cell"]["trivial"] for c in cells)
    assert all(r["trials_per_min"] > 0 for r in result["summary"])


def test_worker_scaling_ask_latency_measures_each_study_size(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker_scaling", "--tiny", "--out", str(tmp_path),
                           "--ask-latency", "3", "8", "--storages", "sqlite"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "ask_latency-tiny.json").read_text())["latency"]["sqlite"]
    assert [r["trials_in_study"] for r in rows] == [3, 8]
    assert all(0 < r["median_ms"] <= r["p95_ms"] for r in rows)


def test_gpu_benchmark_runs_or_says_why_not(tmp_path: Path) -> None:
    out, result = _run("gpu", tmp_path)
    if torch.cuda.is_available():
        assert {r["arm"] for r in result["precision"]} >= {"fp32", "bf16 + channels_last"}
    else:
        assert "no CUDA" in out and "no CUDA" in result["skipped"]


def test_study_rules_compares_feasible_shares_and_replays_stops(tmp_path: Path) -> None:
    out, result = _run("study_rules", tmp_path)
    (r,) = result["constrained"]["runs"]
    # The bound is the median latency of TPE's unconstrained trials: about half of them break it.
    assert 0.3 <= r["share_without"] <= 0.7 and 0.0 <= r["share_with"] <= 1.0
    assert all(t["feasible"] == (t["latency_ms"] <= r["bound"]) for t in r["constrained"])
    rules = {row["rule"] for row in result["stops"]}
    assert {"target 95%", "target 99%", "patience 10, min_delta 0.002"} <= rules
    assert all(row["median_epochs_saved"] >= 0 for row in result["stops"]) and "feasible share" in out


def test_doctor_conflict_runs_both_spaces_on_the_same_budget(tmp_path: Path) -> None:
    out, result = _run("doctor_conflict", tmp_path)
    assert result["conflict"] == ("underfitting" in result["findings"] and "small_data" in result["findings"])
    rule, fixed = result["runs"].values()
    assert len(rule) == len(fixed) == 1 and all(0 <= r["best"] <= 1 for r in rule + fixed)
    assert "enqueue:" in result["spaces"]["keep both (rule)"] and "keep both (rule)" in out


def test_data_scale_measures_build_start_memory_and_throughput(tmp_path: Path) -> None:
    out, result = _run("data_scale", tmp_path)
    assert result["n"] == 300 and result["generate"]["images"] == 300
    assert result["build"]["state"] == "built" and result["build"]["cache_mb"] > 300 * 3 * 64 * 64 / 1e6
    assert result["old_decode"]["images_per_s"] > 0 and len(result["second_start_s"]) == 2
    assert result["one_trial"]["peak_rss_mb"] > 0 and result["four_workers"]["sum_pss_peak_mb"] > 0
    rates = result["throughput"]["images_per_s"]
    assert set(rates) == {"map", "in-RAM tensor", "map, pages dropped every batch"} and min(rates.values()) > 0
    assert result["raw_read"]["cold_mb_per_s"] > 0
    assert "Dataset cache at scale" in out


def test_gpu_all_runs_its_cpu_smoke_and_says_the_gpu_figures_are_pending(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--all", "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "gpu-all-tiny.json").read_text())
    assert result["smoke"] and "not yet measured on a GPU" in result["pending"]
    sections = result["sections"]
    assert set(sections) == {"overhead_32px", "kernel_profile", "augmentation", "photo_folder", "photos_224",
                             "jpeg_decode", "workers_per_gpu"}
    assert not [name for name, body in sections.items() if isinstance(body, dict) and "error" in body]
    assert all(r["library_images_per_s"] > 0 and r["bare_images_per_s"] > 0 for r in sections["overhead_32px"])
    assert [r["arm"] for r in sections["augmentation"]][:3] == ["none", "light", "standard"]
    assert {r["arm"] for r in sections["photos_224"]["arms"]} == {"map + prefetch thread", "GPU-resident",
                                                                  "JPEG cache decoded per batch"}
    assert sections["workers_per_gpu"]["auto"]["workers"] == 1  # no GPU memory reading on the CPU
    assert {g["status"] for g in result["goals"].values()} == {"pending (CPU smoke)"}
    assert "figures pending a GPU" in proc.stdout


def test_large_photos_compares_the_raw_and_jpeg_caches(tmp_path: Path) -> None:
    out, result = _run("large_photos", tmp_path)
    builds = result["builds"]
    assert builds["raw"]["format"] == "raw" and builds["jpeg"]["format"] == "jpeg"
    assert 3 * 224 * 224 <= builds["raw"]["bytes_per_image"] < 3 * 224 * 224 + 2  # + the .npy header
    assert 0 < builds["jpeg"]["bytes_per_image"] < builds["raw"]["bytes_per_image"] / 4
    assert result["library_jpeg_psnr_db"] > 30
    assert all(v > 0 for v in result["per_core_images_per_s"].values())
    assert result["study_1e6"]["raw_cache_gb"] > 150 and "not yet measured on a GPU" in result["gpu_decode"]
    assert "10^6 images at 224 px" in out


def test_artifacts_times_keeping_and_reading_a_trial(tmp_path: Path) -> None:
    out, result = _run("artifacts", tmp_path)
    (row,) = result["summary"]
    assert row["store"] == "directory" and row["mb_stored"] > 0
    assert row["keep_cpu_s"] > 0 and row["read_wall_s"] > 0 and row["train_cpu_s"] > 0
    assert "Keeping a trial" in out


def test_accuracy_suite_runs_its_smallest_case(tmp_path: Path) -> None:
    """benchmarks.accuracy --tiny: the smallest task, the expert recipe and doctor -> run, CPU budget."""
    # ~30 CPU-s of training (two budgets of 15 CPU-s): minutes of wall time on a loaded machine.
    out, result = _run("accuracy", tmp_path, "--root", str(tmp_path / "tasks"), timeout=900)
    cells = result["cells"]
    assert set(cells) == {"cells-imbalanced/expert/0", "cells-imbalanced/doctor/0"}, out
    for cell in cells.values():
        assert cell["cpu_s"] <= cell["budget_cpu_s"] * 1.5 and cell["trials"], cell
        done = [t for t in cell["trials"] if t["value"] is not None]
        assert done and all(t["cpu"] <= cell["budget_cpu_s"] for t in done)
    doctor = cells["cells-imbalanced/doctor/0"]
    assert doctor["doctor_cpu"] > 0 and "no_orientation" in doctor["findings"]  # cells come in any orientation
    assert doctor["trials"][0]["enqueued"] and doctor["space"]["budget"]["time"]
    summary = result["summary"]["per_task"]["cells-imbalanced"]
    assert summary["expert"]["median_val@1"] > 0.5 and "val@25%" in out


def test_pruning_replay_on_recorded_curves(tmp_path: Path) -> None:
    out, result = _run("pruning", tmp_path)
    (search,) = result["searches"]
    # The slow starter (trial 5, a 20-epoch schedule) ends best; comparing at the same epoch prunes it,
    # and what it costs is the gap to the best surviving trial.
    assert search["median@epoch"]["best_pruned"]
    assert search["median@epoch"]["best_kept"] < search["median@epoch"]["best_final"] == 0.9
    for name in ("median@epoch", "median@progress", "hyperband@progress"):
        r = search[name]
        assert r["epochs"] <= r["epochs_unpruned"] and 1 <= r["survived"] <= r["trials"] == 8


def test_portfolio_selection_trains_each_candidate_and_chooses_greedily(tmp_path: Path) -> None:
    from benchmarks.portfolio import greedy

    out, result = _run("portfolio", tmp_path, "--root", str(tmp_path / "tasks"))
    assert {(r["task"], r["candidate"]) for r in result["runs"]} == {("cells-imbalanced", "recipe"),
                                                                    ("cells-imbalanced", "shallow-fast")}
    assert result["chosen"][0] == "recipe" and all(0 <= r["val"] <= 1 for r in result["runs"])
    # Greedy: an entry is added only for what it adds over the entries before it.
    scores = {"recipe": {"a": 0.9, "b": 0.5}, "x": {"a": 0.8, "b": 0.9}, "y": {"a": 0.95, "b": 0.5},
              "z": {"a": 0.5, "b": 0.85}}
    assert greedy(scores, 3) == ["recipe", "x", "y"]
    assert greedy(scores, 1) == ["recipe", "x"]


def test_validate_imports_times_validation_and_create_in_fresh_processes(tmp_path: Path) -> None:
    out, result = _run("validate_imports", tmp_path)
    cases = {r["case"]: r for r in result["results"]}
    assert set(cases) == {"validate quickstart.yaml", "create quickstart.yaml"}
    for r in cases.values():
        assert r["tree"] == "this" and r["reps"] == 1 and r["median_seconds"] > 0 and r["median_import_seconds"] > 0
        assert r["heavy_imports"] == []  # this checkout: no torch, torchvision or timm (tests/test_torch_free.py)
    assert "create quickstart.yaml" in out


def test_search_efficiency_pareto_measures_hypervolume_and_resumes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.search_efficiency", "--pareto", "--tiny", "--out", str(tmp_path),
           "--resume", str(tmp_path / "runs.jsonl")]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    result = json.loads((tmp_path / "search_efficiency-pareto-tiny.json").read_text())
    runs = {r["arm"]: r for r in result["runs"]}
    budget = result["spaces"]["digits"]["budget"]
    # Without pruning every trial trains every epoch; the pruned arms run twice the trials, each at most in full.
    for arm in ("tpe", "random"):
        assert [t["epochs"] for t in runs[arm]["trials"]] == [budget["max_epochs"]] * budget["n_trials"]
    for arm in ("tpe+mo_asha", "random+mo_asha"):
        trials = runs[arm]["trials"]
        assert len(trials) == 2 * budget["n_trials"] and all(1 <= t["epochs"] <= budget["max_epochs"] for t in trials)
        assert all((t["values"] is None) == (t["state"] != "COMPLETE") for t in trials)
    (row,) = result["summary"]
    log = row["measures"]["log"]
    base = log["arms"]["tpe"]["seeds"]["0"]
    assert base["epochs"] == budget["n_trials"] * budget["max_epochs"] and base["final_hv"] > 0
    assert base["final_hv"] == base["baseline_hv"]  # the baseline against itself
    replay = row["replay"]["seeds"]["0"]
    assert len(replay["epochs"]) == budget["n_trials"] and sum(replay["epochs"]) <= base["epochs"]
    # The oracle trains in full exactly the trials that add hypervolume when they finish: its curve is
    # the run's own, at no more epochs.
    oracle = log["oracle"]["0"]
    assert oracle["hv"] == base["final_hv"] and oracle["epochs_to_target"] <= base["epochs_to_target"]
    assert oracle["epochs"] <= base["epochs"]
    # Deciding later only adds epochs to the trials it stops: the oracle's figure grows with its decision
    # epoch, and deciding at mo_asha's first rung is the oracle above.
    by_epoch = {int(e): f for e, f in log["oracle_by_epoch"].items()}
    assert sorted(by_epoch) == list(range(1, budget["max_epochs"]))
    assert all(by_epoch[e] <= by_epoch[e + 1] for e in range(1, budget["max_epochs"] - 1))
    assert by_epoch[row["replay"]["pruner_options"]["min_resource"]] == log["oracle_median_fraction"]
    meeting = [e for e, f in by_epoch.items() if f <= result["goal"]]
    assert log["latest_epoch_meeting_goal"] == (max(meeting) if meeting else None)
    # The grid replays every option setting once; the arm's own setting gives the replay's figures.
    grid = row["replay_grid"]
    assert len({json.dumps(g["options"], sort_keys=True) for g in grid}) == len(grid) > 1
    (own,) = [g for g in grid if g["options"] == row["replay"]["pruner_options"]]
    assert own["median_fraction_log"] == log["replay_median_fraction"]
    # A second start with the same --resume file finds every run done and trains nothing.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resuming: 4 run(s)" in again.stdout and "0 to go" in again.stdout
    assert json.loads((tmp_path / "search_efficiency-pareto-tiny.json").read_text())["summary"] == result["summary"]


def test_storage_calls_counts_the_derivations_per_trial(tmp_path: Path) -> None:
    out, result = _run("storage_calls", tmp_path)
    sqlite = result["results"]["sqlite"]
    assert result["trials"] == [1, 2] and "search.storage.resolved.StudyStorage.of" in result["wrapped"]
    assert sqlite["worker_per_trial_total"] == 0 and sqlite["runs"]["2"]["worker"]["StudyStorage.of"] == 1
    assert sqlite["export"]["chosen_config"] == 1 and "derivations per trial" in out
