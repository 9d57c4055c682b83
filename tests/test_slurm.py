"""deploy/slurm/strategy-search.sbatch on a real single-node SLURM cluster (tests/slurmserver.py).

The cluster comes from $SLURM_CONF when ``.ci/run`` started one (then a missing cluster fails the
tests); otherwise the tests start a throwaway one as root and skip only if that is impossible
(no slurm-wlm/munge, not root). The study is on PostgreSQL (the ``pg_url`` fixture). No GPU here:
the array is submitted with ``--gpus-per-task=0``, the script's override for CPU nodes.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from optuna.trial import TrialState

import slurmserver
from conftest import running_trial
from test_distributed import (LONG_TRIAL, _assert_exact, _create, _password, _space, _study_name, _trials,
                              pg_url)  # noqa: F401 - pg_url is a fixture

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "strategy-search.sbatch"
CPU_NODE = ["--gpus-per-task=0", "--cpus-per-task=1"]  # this cluster has 2 CPUs and no GPU
FAST_HEARTBEAT = ["--heartbeat", "1", "--grace", "5"]


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """The environment for sbatch/squeue/scancel on a running cluster."""
    if os.environ.get("SLURM_CONF"):
        env = dict(os.environ)
        if subprocess.run(["sinfo", "-h"], env=env, capture_output=True, timeout=30).returncode != 0:
            pytest.fail(f"$SLURM_CONF={os.environ['SLURM_CONF']} is set but its cluster does not answer",
                        pytrace=False)
        yield env
        return
    base = tempfile.mkdtemp(prefix="strategy-search-slurm-", dir="/tmp")
    try:
        slurmserver.start(base)
    except (slurmserver.ClusterError, OSError, subprocess.SubprocessError) as exc:
        slurmserver.stop(base)
        pytest.skip(f"no SLURM cluster: $SLURM_CONF is unset and none could be started here ({exc})")
    try:
        yield slurmserver.environment(base)
    finally:
        slurmserver.stop(base)


def _submit(slurm: dict[str, str], workdir: Path, study: str, url: str | Path, *args: str) -> str:
    """Submit an array of two workers; ``url`` is the storage URL, or a file holding it."""
    env = {k: v for k, v in slurm.items() if k != "STRATEGY_SEARCH_STORAGE"}
    env.update({"STRATEGY_SEARCH_STORAGE_FILE": str(url)} if isinstance(url, Path) else
               {"STRATEGY_SEARCH_STORAGE": str(url)})
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(["sbatch", "--parsable", "--array=0-1", *CPU_NODE, str(SCRIPT), study, *args],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def _wait_gone(slurm: dict[str, str], job: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], env=slurm, capture_output=True,
                               text=True, timeout=30)
        if queue.returncode == 0 and not queue.stdout.strip():
            return
        time.sleep(0.5)
    subprocess.run(["scancel", job], env=slurm, timeout=30)
    raise AssertionError(f"job {job} still queued or running after {timeout:g}s")


def _outputs(workdir: Path, job: str) -> dict[str, str]:
    """Each array task's output, by task id."""
    return {p.name.split("_")[-1].removesuffix(".out"): p.read_text(errors="replace")
            for p in sorted(workdir.glob(f"strategy-search-{job}_*.out"))}


class _Job:
    """What ``running_trial`` polls: the array is alive while squeue lists it."""

    def __init__(self, slurm: dict[str, str], job: str) -> None:
        self.slurm, self.job = slurm, job

    def poll(self) -> int | None:
        queue = subprocess.run(["squeue", "-h", "-j", self.job], env=self.slurm, capture_output=True, text=True,
                               timeout=30)
        return None if queue.stdout.strip() else 0

    def communicate(self) -> tuple[str, str]:
        return (f"job {self.job} ended before a trial was caught running", "")


def test_an_array_of_two_workers_finishes_a_study_with_an_exact_budget(slurm: dict[str, str], workdir: Path,
                                                                       pg_url: str) -> None:
    study = _study_name("slurm")
    _create(_space(workdir, study, 6, max_epochs=8, params={
        "lr": {"float": [0.001, 0.05], "log": True}, **{**LONG_TRIAL, "epochs": 8}}), pg_url, workdir)
    # The URL from a file only its owner may read; a file others may read is refused (bash runs the
    # script itself for that: no job is needed to see it).
    secret = workdir / "storage-url"
    secret.write_text(str(pg_url) + "\n", encoding="utf-8")
    secret.chmod(0o644)
    env = {**{k: v for k, v in slurm.items() if k != "STRATEGY_SEARCH_STORAGE"},
           "STRATEGY_SEARCH_STORAGE_FILE": str(secret)}
    refused = subprocess.run(["bash", str(SCRIPT), study], cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {secret} is readable by others (mode 644); run: chmod 600 {secret}"
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    job = _submit(slurm, workdir, study, secret, *FAST_HEARTBEAT)
    _wait_gone(slurm, job)
    # Nothing SLURM shows about the job holds the URL's password.
    shown = subprocess.run(["scontrol", "show", "job", job], env=slurm, capture_output=True, text=True, timeout=30)
    assert job in shown.stdout and (_password(pg_url) or "\0") not in shown.stdout
    outputs = _outputs(workdir, job)
    assert sorted(outputs) == ["0", "1"], outputs
    for task, text in outputs.items():
        assert "worker done:" in text, text
        assert "Traceback" not in text
        password = _password(pg_url)
        assert password is None or password not in text
    trials = _trials(study, pg_url)
    _assert_exact(trials, 6)
    # Both array tasks trained, each as its own labelled worker.
    labels = {t.user_attrs["worker"].split(" ", 1)[1] for t in trials}
    assert labels == {f"slurm-{job}_0.0", f"slurm-{job}_1.0"}, labels


def test_scancel_term_mid_trial_requeues_the_trial_for_the_other_worker(slurm: dict[str, str], workdir: Path,
                                                                        pg_url: str) -> None:
    study = _study_name("slurmterm")
    _create(_space(workdir, study, 3, max_epochs=25, params={
        "lr": {"float": [0.001, 0.05], "log": True}, **LONG_TRIAL}), pg_url, workdir)
    job = _submit(slurm, workdir, study, pg_url, *FAST_HEARTBEAT)
    try:
        victim = running_trial(study, pg_url, _Job(slurm, job), max_epochs=8, claimed=True,  # type: ignore[arg-type]
                               timeout=180)
        task = victim.user_attrs["worker"].split(" ", 1)[1].split("_")[-1].split(".")[0]
        cancel = subprocess.run(["scancel", "--signal=TERM", f"{job}_{task}"], env=slurm, capture_output=True,
                                text=True, timeout=30)
        assert cancel.returncode == 0, cancel.stderr
        _wait_gone(slurm, job)
    finally:
        subprocess.run(["scancel", job], env=slurm, capture_output=True, timeout=30)
    outputs = _outputs(workdir, job)
    assert "interrupted" in outputs[task], outputs[task]
    other = "1" if task == "0" else "0"
    assert "worker done:" in outputs[other], outputs[other]
    trials = sorted(_trials(study, pg_url), key=lambda t: t.number)
    stopped = next(t for t in trials if t.number == victim.number)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"] == "interrupted"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, [(t.number, t.state.name) for t in trials]
    assert retry[0].params == victim.params
    assert retry[0].user_attrs["worker"].endswith(f"slurm-{job}_{other}.0")
    # The budget is exact: three trials count, the interrupted one (retried) does not.
    assert len(trials) == 4 and sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_the_script_is_valid_bash_and_needs_a_study() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: sbatch")
