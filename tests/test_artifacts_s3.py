"""Trial files in S3, against a real S3 protocol server (moto's standalone server on 127.0.0.1, started
here and stopped after; boto3 is not patched). Each "machine" is a separate working directory,
dataset cache and HOME with its own AWS environment; only the study database and the S3 server are
shared. Secrets in that environment must never reach any output.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState
from safetensors.torch import load_file

from click.testing import CliRunner

from conftest import ROOT, tiny_space, write_space
from s3server import ACCESS_KEY, SECRET_KEY, HoldingProxy, S3Server, client_env
from search import records
from search.artifacts.trial_files import config_hash
from search.cli import main
from search.storage import internals

CLI = [sys.executable, "-m", "search.cli"]
SPACE = {"dataset": {"name": "digits", "limit": 300}, "params": {"lr": {"float": [0.003, 0.05], "log": True},
                                                                 "width": 4, "depth": 1}}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


class Machine:
    """One machine: its own working directory, dataset cache and HOME; the S3 endpoint it talks to."""

    def __init__(self, root: Path, name: str, endpoint: str, **env: str) -> None:
        self.cwd = root / name
        self.cache = root / name / "cache"
        (self.cwd / "home").mkdir(parents=True)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STRATEGY_SEARCH_"))},
                    "PYTHONPATH": str(ROOT), "HOME": str(self.cwd / "home"), "STRATEGY_SEARCH_CACHE": str(self.cache),
                    **client_env(endpoint), **env}
        self.outputs: list[str] = []

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*CLI, *args], cwd=self.cwd, env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def cli(self, *args: str, code: int = 0, timeout: float = 300) -> str:
        """The command in its own process."""
        done = subprocess.run([*CLI, *args], cwd=self.cwd, env=self.env, text=True, capture_output=True,
                              timeout=timeout)
        out = done.stdout + done.stderr
        self.outputs.append(out)
        assert done.returncode == code, out
        return out

    def here(self, *args: str, code: int = 0) -> str:
        """The command in this process (faster: no interpreter start), with this machine's environment
        and working directory; stderr apart, as a terminal shows it."""
        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            env = {**{k: None for k in os.environ if k.startswith(("AWS_", "STRATEGY_SEARCH_"))}, **self.env}
            result = CliRunner().invoke(main, list(args), env=env)
        finally:
            os.chdir(old)
        out = result.stdout + result.stderr
        self.outputs.append(out)
        assert result.exit_code == code, (out, result.exception)
        return out


def _no_secret(*outputs: str) -> None:
    for out in outputs:
        assert SECRET_KEY not in out and ACCESS_KEY not in out, out


def removed_ids(study: optuna.Study) -> dict[str, int]:
    """Artifact id -> trial number of the files the keep policy removed (recorded on the study)."""
    return records.removed_artifacts(internals.storage_of(study).get_study_system_attrs(internals.study_id(study)))


def _kept_keys(study: optuna.Study, prefix: str) -> dict[str, dict[str, str]]:
    """The S3 key of each file each trial records and still keeps."""
    trials = study.get_trials(deepcopy=False)
    removed = removed_ids(study)
    return {str(t.number): {name: f"{prefix}/{i}" for name, i in records.artifacts_of(t)[1].items() if i not in removed}
            for t in trials if records.artifacts_of(t)[1]}


def test_uploaded_on_one_machine_exported_and_reported_on_another(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="models")
    storage = f"sqlite:///{tmp_path}/db/studies.db"
    (tmp_path / "db").mkdir()
    a, b = Machine(tmp_path, "a", s3.endpoint), Machine(tmp_path, "b", s3.endpoint)
    write_space(a.cwd / "space.yaml", tiny_space("far", budget={"n_trials": 3, "max_epochs": 2}, keep="top_k",
                                                  keep_top_k=2, artifacts="s3://models/team-a", **SPACE))
    a.here("-v", "run", "space.yaml", "--storage", storage, "--device", "cpu")
    study = optuna.load_study(study_name="far", storage=storage)
    kept = _kept_keys(study, "team-a")
    assert len(kept) == 2  # keep: top_k, 2
    # The bucket holds exactly the kept trials' files; nothing was written to A's disk for them.
    assert set(s3.keys("models")) == {k for files in kept.values() for k in files.values()}
    assert not (a.cwd / "artifacts").exists() and not (tmp_path / "db" / "artifacts").exists()

    # Machine B: the store's URL comes from the study's stored space; no --artifacts, no shared folder.
    text = b.here("export", "far", "--storage", storage, "-o", "bundle", "--no-onnx")
    best = study.best_trial
    assert f"weights: kept model of trial {best.number} in s3://models/team-a" in text
    model = json.loads((b.cwd / "bundle" / "model.json").read_text())
    assert {k: model["source"][k] for k in ("study_uid", "trial", "config_hash")} == \
        {"study_uid": records.study_uid(study), "trial": best.number, "config_hash": config_hash(best.user_attrs["config"])}
    body = s3.client().get_object(Bucket="models", Key=kept[str(best.number)]["model.safetensors"])["Body"].read()
    (tmp_path / "kept.safetensors").write_bytes(body)
    exported, stored = load_file(b.cwd / "bundle" / "model.safetensors"), load_file(tmp_path / "kept.safetensors")
    assert exported.keys() == stored.keys() and all((exported[k] == stored[k]).all() for k in stored)
    assert not b.cache.exists()  # no dataset was read on B: nothing was re-trained

    b.here("report", "far", "--storage", storage, "-o", "r.html")
    for number, files in kept.items():
        for name in ("learning_curve.png", "confusion_matrix.png"):
            drawn = (b.cwd / "r_png" / f"kept-files-trial{number}-{name}").read_bytes()
            assert drawn == s3.client().get_object(Bucket="models", Key=files[name])["Body"].read()
    _no_secret(*a.outputs, *b.outputs)


def test_a_killed_upload_leaves_nothing_half_written_and_the_retry_is_exported(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="killed")
    storage = f"sqlite:///{tmp_path}/studies.db"
    fast = {"STRATEGY_SEARCH_HEARTBEAT": "1", "STRATEGY_SEARCH_GRACE": "2"}
    # Machine A reaches S3 through a proxy that never delivers its 4th upload (model.json: after the
    # two pictures and metrics.json), so the worker is killed in the middle of uploading its files.
    proxy = HoldingProxy(s3.port, hold_at=4)
    a = Machine(tmp_path, "a", proxy.endpoint, **fast)
    b, c = Machine(tmp_path, "b", s3.endpoint, **fast), Machine(tmp_path, "c", s3.endpoint)
    write_space(a.cwd / "space.yaml", tiny_space("cut", budget={"n_trials": 1, "max_epochs": 2}, keep="best",
                                                  artifacts="s3://killed/p", **SPACE))
    proc = a.popen("run", "space.yaml", "--storage", storage, "--device", "cpu")
    try:
        assert proxy.held.wait(timeout=240), proc.communicate(timeout=30)[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.close()
    a.outputs.append(proc.stdout.read() if proc.stdout else "")
    study = optuna.load_study(study_name="cut", storage=storage)
    [cut] = study.get_trials(deepcopy=False)
    assert cut.state == TrialState.RUNNING
    partial = records.artifacts_of(cut)[1]
    assert list(partial) == ["learning_curve.png", "confusion_matrix.png", "metrics.json"]
    # What landed is exactly what the trial recorded: the held upload left no object behind.
    assert set(s3.keys("killed")) == {f"p/{i}" for i in partial.values()}

    # Machine B fails the dead worker's trial (no heartbeat), retries it, keeps the retry's files and
    # removes what the killed trial had uploaded.
    b.cli("worker", "cut", "--storage", storage, "--device", "cpu")
    study = optuna.load_study(study_name="cut", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert removed_ids(study) == {i: 0 for i in partial.values()}
    assert set(s3.keys("killed")) == {f"p/{i}" for i in records.artifacts_of(retry)[1].values()}
    assert len(records.artifacts_of(retry)[1]) == 6

    text = c.here("export", "cut", "--storage", storage, "-o", "bundle", "--no-onnx")
    assert "weights: kept model of trial 1 in s3://killed/p" in text
    assert json.loads((c.cwd / "bundle" / "model.json").read_text())["source"]["trial"] == 1
    _no_secret(*a.outputs, *b.outputs, *c.outputs)


def test_a_missing_bucket_is_one_line_exit_2_for_every_command(s3: S3Server, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"sqlite:///{tmp_path}/studies.db"
    m = Machine(tmp_path, "m", s3.endpoint)
    write_space(m.cwd / "space.yaml", tiny_space("nob", budget={"n_trials": 1, "max_epochs": 1},
                                                  artifacts="s3://no-such-bucket/x", **SPACE))
    m.here("create", "space.yaml", "--storage", storage)
    says = "error: artifacts s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist at this endpoint"
    out = m.cli("-v", "run", "space.yaml", "--storage", storage, code=2, timeout=120)  # a real interpreter's stderr
    assert out.strip().splitlines()[-1].startswith(says) and "Traceback" not in out, out
    for args in (("worker", "nob"), ("worker", "nob", "--processes", "2"), ("export", "nob", "-o", "out"),
                 ("report", "nob"), ("dashboard", "--port", "0", "--artifacts", "s3://no-such-bucket/x")):
        out = m.here("-q", *args, "--storage", storage, code=2)
        assert out.strip().startswith(says) and len(out.strip().splitlines()) == 1, out
    # Without --artifacts the dashboard serves every study; the one whose store is missing gets a warning.
    from search.tools.dashboard import make_server

    for name, value in m.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger("search.tools.dashboard").addHandler(handler)  # (the CLI runs above reset root's)
    try:
        make_server(storage, "127.0.0.1", 0).server_close()
    finally:
        logging.getLogger("search.tools.dashboard").removeHandler(handler)
    assert [r.getMessage() for r in seen] == [
        f"{says.removeprefix('error: ')} (create it first, or fix the URL); its trials' files are not shown"]
    assert optuna.load_study(study_name="nob", storage=storage).trials == []  # refused before any trial
    _no_secret(*m.outputs)


def test_refused_credentials_are_one_line_and_never_printed(tmp_path: Path) -> None:
    # A server that checks credentials: ours are unknown to it.
    server = S3Server.start(log=tmp_path / "moto.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        m = Machine(tmp_path, "m", server.endpoint)
        write_space(m.cwd / "space.yaml", tiny_space("cred", artifacts="s3://models/x", **SPACE))
        out = m.here("-v", "run", "space.yaml", code=2)
        assert "error: artifacts s3://models/x: access to bucket 'models' is denied for these credentials" in out
        # No credentials at all: said so, and the instance metadata service is never asked.
        env = {k: v for k, v in m.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        done = subprocess.run([*CLI, "run", "space.yaml"], cwd=m.cwd, env=env, text=True, capture_output=True,
                              timeout=120)
        assert done.returncode == 2 and "no AWS credentials found" in done.stderr, done.stderr
        _no_secret(*m.outputs, done.stdout + done.stderr)
    finally:
        server.stop()
