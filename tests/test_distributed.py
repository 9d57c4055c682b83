"""Many worker processes on one study, in SQLite and in a real PostgreSQL server.

PostgreSQL comes from $STRATEGY_SEARCH_PG_URL (``.ci/run`` starts one); without it the tests
start a throwaway server themselves (tests/pgserver.py) and skip only if that is impossible.
A URL that is set but unreachable fails the tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

import pgserver
from conftest import free_port, running_trial, tiny_space, write_space
from search.core.errors import UserError
from search.space.parse import load_space
from search.study.runner import run_trials
from search.study.create import create_study
from search.study.load import load_study
from search.study.workers import plan_workers

CLI = [sys.executable, "-m", "search.cli"]
PG_ENV = "STRATEGY_SEARCH_PG_URL"
FAST_HEARTBEAT = ["--heartbeat", "1", "--grace", "3"]
# Trials long enough to be caught mid-training even on an idle machine: 25 epochs of ~0.1 s
# (width 16 at 32x32), where tiny 8x8 models finish 25 epochs in under half a second.
LONG_TRIAL = {"width": 16, "input_size": 32, "depth": 2, "epochs": 25}


# ----------------------------------------------------------------------------- fixtures and helpers


class _SecretURL(str):
    """A storage URL whose repr (what pytest prints in tracebacks) masks the password."""

    def __repr__(self) -> str:
        return repr(make_url(str(self)).render_as_string(hide_password=True))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get(PG_ENV)
    if url:
        _require_reachable(_SecretURL(url))
        yield _SecretURL(url)
        return
    base = tempfile.mkdtemp(prefix="strategy-search-pg-", dir="/tmp")  # the postgres user must reach it
    try:
        url = pgserver.start(base)
    except (pgserver.ServerError, OSError, subprocess.SubprocessError) as exc:
        pgserver.stop(base)
        pytest.skip(f"no PostgreSQL: ${PG_ENV} is unset and no server could be started here ({exc})")
    try:
        yield _SecretURL(url)
    finally:
        pgserver.stop(base)


def _require_reachable(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 5})
    problem = None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        problem = str(exc).splitlines()[0].replace(str(url), repr(url))
    finally:
        engine.dispose()
    if problem is not None:  # outside the except block: no chained traceback showing the connection string
        pytest.fail(f"${PG_ENV}={url!r} is set but unreachable: {problem}", pytrace=False)


def _password(url: str) -> str | None:
    return make_url(url).password


def _study_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _space(workdir: Path, study: str, n_trials: int, **overrides: Any) -> Path:
    doc = tiny_space(study, budget={"n_trials": n_trials, "max_epochs": overrides.pop("max_epochs", 1)},
                     dataset={"name": "digits", "limit": 300}, **overrides)
    return write_space(workdir / f"{study}.yaml", doc)


def _cli(*args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _create(space: Path, storage: str, cwd: Path) -> None:
    # In this process (the CLI's `create` is tested elsewhere): saves a torch start-up per test.
    create_study(load_space(space), storage)


def _trials(study: str, storage: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _assert_exact(trials: list[FrozenTrial], n: int) -> None:
    """Exactly ``n`` trials, numbered 0..n-1, each finished COMPLETE or PRUNED, none run twice."""
    assert sorted(t.number for t in trials) == list(range(n)), [(t.number, t.state.name) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), \
        [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert len({t._trial_id for t in trials}) == n
    # Every trial was run by exactly one worker process, which recorded itself on it.
    assert all(isinstance(t.user_attrs.get("worker"), str) for t in trials)


def _report_counts(output: str) -> dict[str, int]:
    """Per-worker trial counts from the launcher's report lines ``  cpu0  pid N ... K trial(s): ...``."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0].startswith("cpu") and parts[1] == "pid" and "trial(s):" in line:
            counts[f"{parts[0]} {parts[2]}"] = int(line.split(" trial(s):")[0].split()[-1])
    return counts


def _launch_four(workdir: Path, storage: str, prefix: str, n_trials: int) -> tuple[str, str]:
    study = _study_name(prefix)
    _create(_space(workdir, study, n_trials, sampler="tpe", pruner="median"), storage, workdir)
    started = time.monotonic()
    result = _cli("worker", study, "--storage", storage, "--processes", "4", "--force",  # (more than 2 cores)
                  *FAST_HEARTBEAT, cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    trials = _trials(study, storage)
    _assert_exact(trials, n_trials)
    counts = _report_counts(result.stdout)
    assert len(counts) == 4 and sum(counts.values()) == n_trials, result.stdout
    # The report agrees with the study for every worker, those that ran nothing included: each
    # worker's trials carry its pid, and no trial carries another pid.
    by_pid = {key.split()[1]: 0 for key in counts}
    for t in trials:
        by_pid[t.user_attrs["worker"].split(":")[1].split()[0]] += 1
    assert by_pid == {key.split()[1]: n for key, n in counts.items()}
    assert time.monotonic() - started < 200
    return study, output


# ----------------------------------------------------------------------------- exact budget, many processes


def test_four_workers_on_sqlite_run_exactly_the_budget(workdir: Path) -> None:
    _launch_four(workdir, f"sqlite:///{workdir}/studies.db", "sqlite4", n_trials=10)


def test_four_workers_on_postgresql_then_dashboard(workdir: Path, pg_url: str) -> None:
    study, output = _launch_four(workdir, pg_url, "pg4", n_trials=10)
    password = _password(pg_url)
    if password:
        assert password not in output
        assert "***" in output  # the storage is shown, masked
    # optuna-dashboard on the same PostgreSQL study.
    port = free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--storage", pg_url, "--port", str(port)], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", proc)
        [entry] = [s for s in studies["study_summaries"] if s["study_name"] == study]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}", timeout=10) as resp:
            assert resp.status == 200
            detail = json.loads(resp.read())
        assert len(detail["trials"]) == 10
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    if password:
        assert password not in logs


def _get_json(url: str, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
                return json.loads(resp.read())
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(proc.communicate()[0]) from None
            time.sleep(0.3)


# ----------------------------------------------------------------------------- fault tolerance


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(workdir: Path, request: pytest.FixtureRequest) -> str:
    """The default storage (a SQLite file) and PostgreSQL."""
    return f"sqlite:///{workdir}/studies.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_killed_worker_trial_is_failed_and_retried_with_same_params(workdir: Path, db_url: str) -> None:
    """SIGKILL (the OOM killer, a lost machine) mid-trial: after the grace the trial is failed with
    its reason and retried, with the same params, by the worker still running."""
    study = _study_name("kill")
    space = _space(workdir, study, 3, max_epochs=25, params={
        "lr": {"float": [0.001, 0.05], "log": True}, "batch_size": {"choices": [32, 64]}, **LONG_TRIAL})
    _create(space, db_url, workdir)
    launcher = subprocess.Popen([*CLI, "worker", study, "--storage", db_url, "--processes", "2", *FAST_HEARTBEAT],
                                cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = running_trial(study, db_url, launcher, max_epochs=8, claimed=True)
        pid = int(victim.user_attrs["worker"].split(":")[1].split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert _password(db_url) is None or _password(db_url) not in cmdline  # URL goes by environment
        os.kill(pid, signal.SIGKILL)
        output = launcher.communicate(timeout=200)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1, output  # a worker died: the launcher says so
    assert "killed by SIGKILL" in output
    trials = sorted(_trials(study, db_url), key=lambda t: t.number)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [victim.number], [(t.number, t.state.name) for t in trials]
    assert failed[0].user_attrs["fail_reason"] == "worker lost: no heartbeat for 3 s"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == victim.params
    assert retry.user_attrs["config"] == victim.user_attrs["config"]  # seed included
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]
    # The study's count is right: 3 trials use the budget, the failed-and-retried one does not.
    assert len(trials) == 4
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_reaches_every_worker_and_nothing_is_lost(workdir: Path, signum: int) -> None:
    """Ctrl-C in the launcher's terminal, or SIGTERM (what ``docker stop`` sends), stops every worker:
    each records its running trial FAIL (interrupted) and queues it; the launcher exits 130."""
    study = _study_name("stop")
    storage = f"sqlite:///{workdir}/studies.db"
    _create(_space(workdir, study, 3, max_epochs=25, params={
        "lr": {"float": [0.001, 0.05], "log": True}, **LONG_TRIAL}), storage, workdir)
    launcher = subprocess.Popen([*CLI, "worker", study, "--storage", storage, "--processes", "2", *FAST_HEARTBEAT],
                                cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        running = running_trial(study, storage, launcher, max_epochs=8, claimed=True)
        launcher.send_signal(signum)
        output = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, output
    assert "interrupted: running trials were recorded FAIL and queued again" in output
    assert len(_report_counts(output)) == 2
    trials = _trials(study, storage)
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert running.number in [t.number for t in stopped]
    assert all(t.user_attrs["fail_reason"] == "interrupted" for t in stopped)
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(json.dumps(t.params) for t in queued) == sorted(json.dumps(t.params) for t in stopped)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Starting again (the worker loop, in this process) finishes the study: 3 trials that count,
    # the interrupted ones re-run first.
    handle, spec = load_study(study, storage)
    summary = run_trials(handle, spec)
    assert summary.counts["COMPLETE"] == 3 - sum(t.state == TrialState.COMPLETE for t in trials)
    trials = _trials(study, storage)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and len(trials) == 3 + len(stopped)
    assert {t.user_attrs.get("retry_of") for t in done} >= {t.number for t in stopped}


def test_nan_and_crashing_trials_do_not_stop_the_worker(workdir: Path) -> None:
    study = _study_name("faults")
    storage = f"sqlite:///{workdir}/studies.db"
    space = _space(workdir, study, 3, max_epochs=2, params={
        "lr": {"choices": [0.01, 10.0]}, "weight_decay": {"choices": [0.0, 1.0]},
        "backbone": {"choices": ["none", "vit_tiny_patch16_224"]},
        "optimizer": "sgd", "batch_size": 16, "epochs": 2, "width": 4, "depth": 2})
    _create(space, storage, workdir)
    handle = optuna.load_study(study_name=study, storage=storage)
    # lr 10 with weight decay 1 diverges to NaN; a ViT for 224 px cannot take 8x8 digits and raises.
    handle.enqueue_trial({"lr": 10.0, "weight_decay": 1.0, "backbone": "none"})
    handle.enqueue_trial({"lr": 0.01, "weight_decay": 0.0, "backbone": "vit_tiny_patch16_224"})
    handle.enqueue_trial({"lr": 0.01, "weight_decay": 0.0, "backbone": "none"})
    result = _cli("worker", study, "--storage", storage, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker done: 3 trial(s)" in result.stdout
    nan, crash, fine = sorted(_trials(study, storage), key=lambda t: t.number)
    assert nan.state == TrialState.PRUNED
    assert nan.user_attrs["fail_reason"].startswith("non-finite loss")
    assert crash.state == TrialState.FAIL
    assert "224" in crash.user_attrs["fail_reason"]  # the model's own complaint about the input size
    assert fine.state == TrialState.COMPLETE and fine.values is not None
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- unreachable database


def test_unreachable_database_retries_then_exits_2_with_masked_url(workdir: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://searcher:s3cret-pw@127.0.0.1:{port}/studies"
    started = time.monotonic()
    result = _cli("worker", "any", "--storage", url, "--connect-timeout", "3", cwd=workdir)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "s3cret-pw" not in output
    assert output.count("unreachable") >= 2  # retried (with a warning) before giving up
    assert "retrying in" in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: storage postgresql+psycopg://searcher:***@127.0.0.1:{port}/studies unreachable")
    assert "gave up after 3s" in last
    assert "Traceback" not in output
    assert elapsed < 60


def test_a_connection_killed_during_a_pause_is_replaced_but_none_is_pinged_in_a_burst(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinged only after a pause: the server dropping a worker's connection (a restart) while it
    trains is noticed before the next use, and back-to-back storage calls pay no ping."""
    from sqlalchemy import create_engine, text

    from search.storage import backend as storage_mod

    monkeypatch.setattr(storage_mod, "PING_AFTER_IDLE", 0.3)
    store = storage_mod.open_storage(pg_url)
    engine = storage_mod.rdb_backend(store).engine
    pings: list[str] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append("ping") or real_ping(conn))

    def backend_pid() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    first = backend_pid()
    time.sleep(0.4)
    pings.clear()
    for _ in range(5):  # a burst: the first checkout after the pause pings, the next four do not
        assert backend_pid() == first
    assert pings == ["ping"]
    admin = create_engine(str(pg_url))
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
            conn.commit()
    finally:
        admin.dispose()
    time.sleep(0.4)
    assert store.get_all_studies() is not None  # no error: the dead connection was replaced
    assert backend_pid() != first
    engine.dispose()


def test_worker_waits_for_a_database_that_comes_up(workdir: Path, pg_url: str) -> None:
    """The database is unreachable when the worker starts and reachable a few seconds later."""
    study = _study_name("late")
    _create(_space(workdir, study, 2), pg_url, workdir)
    target = make_url(pg_url)
    port = free_port()
    late_url = _SecretURL(target.set(port=port).render_as_string(hide_password=False))
    proc = subprocess.Popen([*CLI, "worker", study, "--storage", late_url, "--connect-timeout", "60"],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    retrying = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "retrying in" in line:
                retrying.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert retrying.wait(90), "".join(lines)
        with _Forwarder(port, (target.host or "127.0.0.1", int(target.port or 5432))):
            proc.wait(timeout=200)
            reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "unreachable" in output
    assert "worker done: 2 trial(s)" in output
    _assert_exact(_trials(study, pg_url), 2)
    password = _password(pg_url)
    assert password is None or password not in output


class _Forwarder:
    """A TCP relay on 127.0.0.1:``port`` to ``target`` (the database "coming up" on that port)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "_Forwarder":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ----------------------------------------------------------------------------- launcher planning


def test_plan_pins_one_worker_per_gpu_and_k_per_gpu() -> None:
    plan = plan_workers(gpus="0,1,3", per_gpu=2, available=["0", "1", "2", "3"], cpu_count=12)
    assert [(s.label, s.device, s.env.get("CUDA_VISIBLE_DEVICES")) for s in plan] == [
        ("gpu0.0", "cuda", "0"), ("gpu0.1", "cuda", "0"), ("gpu1.0", "cuda", "1"), ("gpu1.1", "cuda", "1"),
        ("gpu3.0", "cuda", "3"), ("gpu3.1", "cuda", "3")]
    every = plan_workers(gpus="all", available=["2", "5"], cpu_count=12)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in every] == ["2", "5"]
    cpu = plan_workers(processes=3, available=[], cpu_count=12)
    assert [(s.label, s.device) for s in cpu] == [("cpu0", "cpu"), ("cpu1", "cpu"), ("cpu2", "cpu")]
    if "OMP_NUM_THREADS" not in os.environ:
        assert {s.env["OMP_NUM_THREADS"] for s in cpu} == {"4"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gpus": "0,7", "available": ["0", "1"]}, "GPU 7 not visible here; visible: 0,1"),
    ({"gpus": "all", "available": []}, "no GPU is visible"),
    ({"gpus": "0,0", "available": ["0"]}, "--per-gpu"),
    ({"gpus": "first", "available": ["0"]}, "GPU ids separated by commas"),
    ({"gpus": "0", "processes": 2, "available": ["0"]}, "not both"),
    ({"per_gpu": 2, "processes": 2}, "--per-gpu needs --gpus"),
])
def test_plan_rejects_bad_gpu_choices(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        plan_workers(**kwargs)


def test_gpus_without_a_gpu_is_a_one_line_error(workdir: Path) -> None:
    result = _cli("worker", "any", "--gpus", "all", cwd=workdir, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --gpus: no GPU is visible here (CUDA not available or CUDA_VISIBLE_DEVICES empty); "
        "use --processes N for CPU workers"]


# ----------------------------------------------------------------------------- docker compose (no engine needed)


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` with ``env``."""
    import re

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_file_references_existing_files_and_keeps_secrets_out() -> None:
    import yaml

    from conftest import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "storage-proxy", "dashboard", "worker"} <= set(services)
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"] and "pgdata" in compose["volumes"]
    env = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["POSTGRES_PASSWORD"]
    # Without a password in the environment, the file refuses to start (no default password).
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate(services["postgres"]["environment"]["POSTGRES_PASSWORD"], {})
    # Published ports stay on loopback unless .env says otherwise.
    for name in ("postgres", "storage-proxy", "dashboard"):
        for port in services[name]["ports"]:
            assert _interpolate(port, {}).startswith("127.0.0.1:"), (name, port)
    for name, service in services.items():
        text = json.dumps(service)
        assert "change-me" not in text and "PASSWORD=" not in text, name
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / "Dockerfile").is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
        if name in ("worker", "gpu-worker"):
            # Workers go through the proxy: no database credentials in their environment.
            assert service["environment"] == {"STRATEGY_SEARCH_STORAGE": "grpc://storage-proxy:13000",
                                              "STRATEGY_SEARCH_ARTIFACTS": "${ARTIFACTS:-file:///artifacts}",
                                              "STRATEGY_SEARCH_PROXY_TOKEN": "${PROXY_TOKEN:?set PROXY_TOKEN in .env "
                                                                             "(openssl rand -hex 32)}"}, name
            proxy = services["storage-proxy"]
            assert proxy["command"][proxy["command"].index("--port") + 1] == "13000"
            # It listens on the compose network: only with a token, the same one the workers send.
            assert "--allow-remote" in proxy["command"]
            assert proxy["environment"]["STRATEGY_SEARCH_PROXY_TOKEN"] == service["environment"][
                "STRATEGY_SEARCH_PROXY_TOKEN"]
            with pytest.raises(KeyError, match="PROXY_TOKEN"):
                _interpolate(proxy["environment"]["STRATEGY_SEARCH_PROXY_TOKEN"], {})
        elif name != "postgres":
            url = _interpolate(service["environment"]["STRATEGY_SEARCH_STORAGE"], env)
            assert make_url(url).drivername == "postgresql+psycopg" and make_url(url).host == "postgres"
    gpu = services["gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--gpus" in gpu["command"]
    # Everything the Dockerfile copies exists; secrets stay out of the build context and git.
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                assert (ROOT / source).exists(), line
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_grid_study_ends_cleanly_in_the_worker_loop(workdir: Path) -> None:
    """GridSampler calls study.stop() when the grid is used up; outside study.optimize that raised."""
    study = _study_name("grid")
    storage = f"sqlite:///{workdir}/studies.db"
    space = _space(workdir, study, 4, sampler="grid", params={
        "lr": {"choices": [0.01, 0.02]}, "batch_size": {"choices": [32, 64]}, "width": 4, "depth": 2})
    _create(space, storage, workdir)
    handle, spec = load_study(study, storage)
    summary = run_trials(handle, spec)
    assert summary.counts["COMPLETE"] == 4
    trials = _trials(study, storage)
    _assert_exact(trials, 4)
    assert sorted((t.params["lr"], t.params["batch_size"]) for t in trials) == [
        (0.01, 32), (0.01, 64), (0.02, 32), (0.02, 64)]
