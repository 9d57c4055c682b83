"""Issue 27's first goal: three "machines" (separate working directories, dataset caches and HOMEs;
no shared folder), one PostgreSQL server, one S3-compatible server (moto, on 127.0.0.1).

``worker`` runs on two of them; ``export``, ``report`` and ``dashboard`` on the third give the
trained weights without re-training (the bundle records the trial's identity, the weights equal
the kept ones, and the third machine never reads the dataset) and the trials' pictures.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.trial import TrialState
from safetensors.torch import load_file
from sqlalchemy.engine import make_url

from conftest import free_port, tiny_space, write_space
from s3server import S3Server
from search import records
from search.artifacts.trial_files import config_hash
from test_artifacts_s3 import SPACE, Machine, _no_secret, removed_ids
from test_distributed import pg_url  # noqa: F401 - the session's PostgreSQL server (a fixture)

N_TRIALS = 4


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return resp.read()


def test_two_workers_and_a_third_machine_that_exports_reports_and_shows_without_retraining(
        pg_url: str, s3: S3Server, tmp_path: Path) -> None:  # noqa: F811 - pg_url is the fixture
    name = f"goal-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket="team-models")
    store = f"s3://team-models/{name}"
    # The database URL (with its password) reaches every machine through the environment only.
    a, b, c = (Machine(tmp_path, m, s3.endpoint, STRATEGY_SEARCH_STORAGE=str(pg_url)) for m in "abc")
    write_space(a.cwd / "space.yaml", tiny_space(name, budget={"n_trials": N_TRIALS, "max_epochs": 2}, keep="top_k",
                                                  keep_top_k=2, artifacts=store, **SPACE))
    a.here("create", "space.yaml")

    workers = [m.popen("worker", name, "--device", "cpu") for m in (a, b)]
    for m, proc in zip((a, b), workers):
        out, _ = proc.communicate(timeout=600)
        m.outputs.append(out)
        assert proc.returncode == 0, out

    study = optuna.load_study(study_name=name, storage=str(pg_url))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * N_TRIALS  # the budget, exactly
    assert len({records.worker(t) for t in trials}) == 2  # both machines ran trials
    removed = removed_ids(study)
    kept = {t.number: {n: f"{name}/{i}" for n, i in records.artifacts_of(t)[1].items() if i not in removed}
            for t in trials}
    kept = {n: files for n, files in kept.items() if files}
    ranked = sorted((t for t in trials), key=lambda t: (-t.value, t.number))
    assert sorted(kept) == sorted(t.number for t in ranked[:2])  # keep: top_k, 2
    assert set(s3.keys("team-models")) == {k for files in kept.values() for k in files.values()}
    best = ranked[0]

    def s3_bytes(key: str) -> bytes:
        return s3.client().get_object(Bucket="team-models", Key=key)["Body"].read()

    # Machine C: the weights, from the store, checked by the bundle's identity.
    text = c.here("export", name, "-o", "bundle", "--no-onnx")
    assert f"exported trial {best.number} of study {name}" in text
    assert f"weights: kept model of trial {best.number} in {store}" in text and "re-trained" not in text
    source = json.loads((c.cwd / "bundle" / "model.json").read_text())["source"]
    assert {k: source[k] for k in ("study", "study_uid", "trial", "config_hash")} == {
        "study": name, "study_uid": records.study_uid(study), "trial": best.number,
        "config_hash": config_hash(best.user_attrs["config"])}
    (tmp_path / "kept.safetensors").write_bytes(s3_bytes(kept[best.number]["model.safetensors"]))
    exported, stored = load_file(c.cwd / "bundle" / "model.safetensors"), load_file(tmp_path / "kept.safetensors")
    assert exported.keys() == stored.keys() and all((exported[k] == stored[k]).all() for k in stored)

    # The report: every kept trial's pictures, byte for byte as its worker drew them.
    c.here("report", name, "-o", "report.html")
    page = (c.cwd / "report.html").read_text()
    for number, files in kept.items():
        assert f'id="per-class-{number}"' in page
        for picture in ("learning_curve.png", "confusion_matrix.png"):
            assert (c.cwd / "report_png" / f"kept-files-trial{number}-{picture}").read_bytes() == \
                s3_bytes(files[picture])

    # The dashboard: each trial's page lists the files it keeps and serves its pictures.
    port = free_port()
    proc = c.popen("dashboard", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        studies: Any = None
        while studies is None:
            try:
                studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)[0]
                time.sleep(0.5)
        study_id = next(s["study_id"] for s in studies if s["study_name"] == name)
        shown = {t["number"]: t for t in json.loads(_get(f"{base}/api/studies/{study_id}"))["trials"]}
        for t in trials:
            listed = {a["filename"]: a["artifact_id"] for a in shown[t.number]["artifacts"]}
            assert {n: f"{name}/{i}" for n, i in listed.items()} == kept.get(t.number, {})
        for number, files in kept.items():
            artifact_id = files["learning_curve.png"].split("/", 1)[1]
            picture = _get(f"{base}/artifacts/{study_id}/{shown[number]['trial_id']}/{artifact_id}")
            assert picture == s3_bytes(files["learning_curve.png"])
    finally:
        proc.terminate()
        c.outputs.append(proc.communicate(timeout=30)[0])

    # Nothing came from a shared folder, and C never read the dataset (nothing was re-trained there).
    assert not c.cache.exists() and not any((m.cwd / "artifacts").exists() for m in (a, b, c))
    password = make_url(str(pg_url)).password or "no-password"
    _no_secret(*a.outputs, *b.outputs, *c.outputs)
    assert all(password not in out for m in (a, b, c) for out in m.outputs)
