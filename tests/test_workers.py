"""create + several worker processes share one study: exact budget, no duplicates."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
from optuna.trial import TrialState

from conftest import free_port, tiny_space, write_space

CLI = [sys.executable, "-m", "search.cli"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_create_then_two_workers_on_sqlite(workdir: Path) -> None:
    # Trials of ~1.5 s (15 epochs at 32 px, width 16; longer when the two share the cores): a worker
    # could miss out only if the other ran 3 whole trials before it asked for its first, i.e. started
    # 4+ s after a process launched at the same moment. (With 0.2 s trials one sometimes ran all 6.)
    doc = tiny_space("shared", budget={"n_trials": 4, "max_epochs": 15}, sampler="tpe", pruner="none",
                     params={"lr": {"float": [0.001, 0.05], "log": True}, "width": 16, "input_size": 32,
                             "depth": 2, "epochs": 15})
    space = write_space(workdir / "space.yaml", doc)
    created = _cli("create", str(space), cwd=workdir)
    assert created.returncode == 0, created.stderr
    workers = [subprocess.Popen([*CLI, "worker", "shared"], cwd=workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage="sqlite:///studies.db")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 4 and sorted(numbers) == list(range(4))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    # Both workers took part: each reports its own trial count, and the study agrees.
    done = [int(o.split("worker done: ")[1].split()[0]) for o in outputs]
    assert sum(done) == 4 and min(done) >= 1, done
    by_worker: dict[str, int] = {}
    for t in study.trials:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
    assert sorted(by_worker.values()) == sorted(done), (by_worker, done)


def test_worker_on_unknown_study_exits_2(workdir: Path) -> None:
    result = _cli("worker", "ghost", "--storage", f"sqlite:///{workdir}/s.db", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no study named 'ghost'")
    assert "Traceback" not in result.stderr


def test_dashboard_serves_the_study(workdir: Path) -> None:
    space = write_space(workdir / "space.yaml", tiny_space("watched", budget={"n_trials": 1, "max_epochs": 1}))
    assert _cli("create", str(space), cwd=workdir).returncode == 0
    port = free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--port", str(port)], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    assert resp.status == 200
                    body = resp.read().decode()
                    break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read() if proc.stdout else "dashboard exited")
                time.sleep(0.5)
        assert '"watched"' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
