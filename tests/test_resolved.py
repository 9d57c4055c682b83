"""Issue 22, item 2: a study's storage is resolved once per worker and passed down, not re-derived per trial.

Before, every trial re-derived the study's storage, its RDB backend, whether it is a proxy and its
heartbeat interval, and ``export`` chose its trial twice (benchmarks/results/storage_calls-before.json).
The calls are counted by wrapping the functions that derive them wherever they are imported
(:func:`benchmarks.storage_calls.count_calls`); a worker's count must not grow with its trials.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Iterator

import pytest

from benchmarks.storage_calls import count_calls
from benchmarks.worker_scaling import sleep_objective
from conftest import tiny_space
from search.space.parse import parse_space
from search.storage import backend, internals, resolved
from search.storage.resolved import StudyStorage
from search.study import runner
from search.study.create import create_study
from search.study.load import load_study
from search.study.objective import Objective
from test_distributed import _study_name, pg_url  # noqa: F401 - pg_url is a fixture
from test_scaling import serving_proxy

# What a study's storage is: each is looked up when the storage is resolved, never again per trial.
DERIVING: list[tuple[Any, str]] = [(internals, "storage_of"), (backend, "rdb_backend"), (backend, "is_proxy"),
                                   (backend, "resolve_url"), (backend, "heartbeat_settings"),
                                   (backend, "mask_url"), (resolved, "StudyStorage.of")]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for module, name in DERIVING:
        count_calls(counts, module, name, monkeypatch.setattr)
    # Trials sample, report three epochs and write their attrs, without training: the storage calls of a trial.
    monkeypatch.setattr(runner, "Objective", sleep_objective(Objective, 0.0))
    return counts


@pytest.fixture(params=["sqlite", "journal", "postgresql", "proxy"])
def url(workdir: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_url")
    elif request.param == "proxy":
        with serving_proxy(f"sqlite:///{workdir}/behind-proxy.db", workdir) as proxied:
            yield proxied
    else:
        yield {"sqlite": f"sqlite:///{workdir}/studies.db", "journal": f"journal:{workdir}/studies.log"}[request.param]


def _worker(url: str, n_trials: int, calls: collections.Counter[str]) -> collections.Counter[str]:
    """One worker (the library's loop) on a new study of ``n_trials``: the calls it made."""
    name = _study_name("resolve")
    create_study(parse_space(tiny_space(name, budget={"n_trials": n_trials, "max_epochs": 3})), url)
    study, space = load_study(name, url)
    calls.clear()
    summary = runner.run_trials(study, space, storage=StudyStorage.of(study, url), device="cpu")
    assert summary.counts["COMPLETE"] == n_trials
    return collections.Counter(calls)


def test_a_worker_resolves_its_storage_once_not_per_trial(url: str, calls: collections.Counter[str]) -> None:
    few, many = _worker(url, 2, calls), _worker(url, 6, calls)
    assert few == many, (few, many)  # nothing grows with the trials
    assert few["StudyStorage.of"] == 1  # the boundary's one resolution; the runner makes none of its own
    assert few["storage_of"] == 1 and few["rdb_backend"] == 1, few  # inside that resolution only
    assert few["resolve_url"] + few["mask_url"] + few["heartbeat_settings"] + few["is_proxy"] <= 4, few


def test_run_trials_resolves_a_study_given_alone_once(workdir: Path, calls: collections.Counter[str]) -> None:
    url = f"sqlite:///{workdir}/alone.db"
    name = _study_name("alone")
    create_study(parse_space(tiny_space(name, budget={"n_trials": 3, "max_epochs": 3})), url)
    study, space = load_study(name, url)
    calls.clear()
    assert runner.run_trials(study, space, device="cpu").counts["COMPLETE"] == 3
    assert calls["StudyStorage.of"] == 1 and calls["storage_of"] == 1, calls
    # The URL comes from the storage itself (what the trial lock keys on), not from the environment.
    assert StudyStorage.of(study).url == url and StudyStorage.of(study).kind == "sqlite"
    with pytest.raises(ValueError, match="another study"):
        runner.run_trials(study, space, storage=StudyStorage.of(load_study(name, url)[0]))


def test_export_chooses_its_trial_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``export`` picks the trial (and reads its config) once and passes both on."""
    from search.study.artifact_store import open_artifacts
    from search.tools import export

    url = f"sqlite:///{workdir}/export.db"
    name = _study_name("export")
    spec = parse_space(tiny_space(name, budget={"n_trials": 2, "max_epochs": 1}, dataset={"name": "digits",
                                                                                        "limit": 120}))
    study = create_study(spec, url)
    files = open_artifacts(str(workdir / "store"), None, url, create=True)
    runner.run_trials(study, spec, device="cpu", artifacts=files)
    chosen: list[Any] = []
    choose = export.chosen_config

    def spy(*args: Any) -> Any:
        chosen.append(args[1])
        return choose(*args)

    monkeypatch.setattr(export, "chosen_config", spy)
    done = export.export_bundle(study, spec, workdir / "best", artifacts=files, onnx=False)
    assert len(chosen) == 1 and not done.retrained, (chosen, done.reason)
    assert done.trial == chosen[0].number
