"""Worker processes for one shared study: one per GPU, K per GPU, or N on the CPU.

The launcher starts each worker as ``strategy-search worker STUDY`` in its own process (each
GPU worker pinned through ``CUDA_VISIBLE_DEVICES``), forwards Ctrl-C / SIGTERM to them (a
second one kills them), waits, and reports what each worker did, read back from the study.
Workers on other machines join the same study with the same command and storage URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from search.core.errors import UserError

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130
AUTO = "auto"  # --per-gpu auto
OOM_POLL = 10.0  # seconds between the launcher's looks for out-of-memory trials (--per-gpu auto)
PROBE_TIMEOUT = 600.0
_GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process to start: its label, device and extra environment."""

    label: str
    device: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerResult:
    """How one worker process ended and the trials it ran (by state name)."""

    spec: WorkerSpec
    pid: int
    returncode: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ended(self) -> str:
        if self.returncode >= 0:
            return f"exit {self.returncode}"
        try:
            return f"killed by {signal.Signals(-self.returncode).name}"
        except ValueError:
            return f"killed by signal {-self.returncode}"


@dataclass
class LaunchReport:
    """What the launcher saw: every worker, the study's state, and the exit code to use."""

    study: str
    workers: list[WorkerResult]
    study_counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    packing: dict[str, dict[str, Any]] = field(default_factory=dict)  # --per-gpu auto: GPU -> decision
    lowered: list[dict[str, Any]] = field(default_factory=list)  # --per-gpu auto: counts lowered on OOM

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return INTERRUPTED_EXIT
        codes = {w.returncode for w in self.workers if w.returncode != 0}
        if not codes:
            return 0
        return codes.pop() if len(codes) == 1 and min(codes) > 0 else 1

    def format(self) -> str:
        from search.records import format_counts

        lines = [f"{len(self.workers)} worker(s) for study {self.study!r}:"]
        for gpu, d in self.packing.items():
            lines.append(f"  GPU {gpu}: --per-gpu auto chose {d['workers']} ({d['reason']})")
        for low in self.lowered:
            lines.append(f"  GPU {low['gpu']}: trial {low['trial']} ran out of memory; lowered to {low['workers']} "
                         f"({low['drained']} stopped after its trial)")
        for w in self.workers:
            pinned = w.spec.env.get("CUDA_VISIBLE_DEVICES")
            where = f"CUDA_VISIBLE_DEVICES={pinned}" if pinned is not None else w.spec.device
            total = sum(w.counts.values())
            counts = format_counts((k, v) for k, v in sorted(w.counts.items()) if v) or "none"
            lines.append(f"  {w.spec.label:<8} pid {w.pid:<7} {where:<24} {w.ended:<18} "
                         f"{total} trial(s): {counts}")
        if self.study_counts:
            counts = format_counts((k, v) for k, v in sorted(self.study_counts.items()) if v)
            lines.append(f"study {self.study!r} now has {sum(self.study_counts.values())} trial(s): {counts}")
        if self.interrupted:
            lines.append("interrupted: running trials were recorded FAIL and queued again "
                         "(run the same command again to resume the study; they run first)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- planning


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $CUDA_VISIBLE_DEVICES when set, else 0..N-1 as torch sees them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def parse_per_gpu(value: str | int) -> int | str:
    """``--per-gpu``: a number of workers (1 or more) or ``auto``."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1 or isinstance(value, bool):
        raise UserError(f"--per-gpu must be a number of workers (1 or more) or 'auto', got {value!r}")
    return k


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, SLURM, containers)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_workers(*, gpus: str | None = None, per_gpu: int | str = 1, processes: int | None = None,
                 available: list[str] | None = None, cpu_count: int | None = None,
                 force: bool = False) -> list[WorkerSpec]:
    """The worker processes to start for ``--gpus all|0,1,3 [--per-gpu K|auto]`` or ``--processes N``.

    ``available`` is the list of usable GPU ids (default: :func:`visible_gpus`). Each worker
    gets an even share of the CPU cores as ``OMP_NUM_THREADS`` unless that is already set. More
    worker processes than cores (each one a Python process training with torch) need ``force``.
    With ``per_gpu="auto"`` the plan has one worker per GPU; :func:`pack` then probes each GPU
    and plans the count that fits (:mod:`search.study.packing`).
    """
    if gpus is not None and processes is not None:
        raise UserError("use either --gpus (one worker per GPU) or --processes (CPU workers), not both")
    per_gpu = parse_per_gpu(per_gpu)
    if gpus is None and per_gpu != 1:
        raise UserError("--per-gpu needs --gpus")
    if gpus is not None:
        chosen = _choose_gpus(gpus, visible_gpus() if available is None else available)
        counts = {g: 1 if per_gpu == AUTO else int(per_gpu) for g in chosen}
        return gpu_specs(counts, cpu_count, dotted=per_gpu == AUTO or int(per_gpu) > 1)
    elif processes is not None:
        if processes < 1:
            raise UserError(f"--processes must be at least 1, got {processes}")
        specs = [WorkerSpec(label=f"cpu{i}", device="cpu") for i in range(processes)]
    else:
        raise UserError("give --gpus all|0,1,3 or --processes N to start several workers")
    cores = cpu_count or usable_cores()
    if len(specs) > cores and not force:
        what = f"--processes {processes}" if processes is not None else f"{len(specs)} GPU worker processes"
        raise UserError(f"{what}: more worker processes than this machine's {cores} CPU core(s); each trains with "
                        f"its own torch threads and memory, so more than {cores} only compete; use at most {cores}, "
                        "or add --force")
    return _share_cores(specs, cpu_count)


def gpu_specs(counts: dict[str, int], cpu_count: int | None = None, dotted: bool = True) -> list[WorkerSpec]:
    """``counts[gpu]`` workers pinned to each GPU (labels ``gpu1.0``, ``gpu1.1``, ... when ``dotted``)."""
    specs = [WorkerSpec(label=f"gpu{g}" + (f".{k}" if dotted else ""), device="cuda", env={"CUDA_VISIBLE_DEVICES": g})
             for g, n in counts.items() for k in range(n)]
    return _share_cores(specs, cpu_count)


def _share_cores(specs: list[WorkerSpec], cpu_count: int | None) -> list[WorkerSpec]:
    if "OMP_NUM_THREADS" in os.environ or not specs:
        return specs
    # N workers each using every core would oversubscribe the CPU (data loading, CPU training).
    threads = str(max(1, (cpu_count or os.cpu_count() or 1) // len(specs)))
    return [WorkerSpec(s.label, s.device, {**s.env, "OMP_NUM_THREADS": threads}) for s in specs]


def _choose_gpus(gpus: str, available: list[str]) -> list[str]:
    if not available:
        raise UserError("--gpus: no GPU is visible here (CUDA not available or CUDA_VISIBLE_DEVICES empty); "
                        "use --processes N for CPU workers")
    if gpus.strip().lower() == "all":
        return list(available)
    chosen = [g.strip() for g in gpus.split(",") if g.strip()]
    bad = [g for g in chosen if not _GPU_ID.match(g)]
    if not chosen or bad:
        raise UserError(f"--gpus {gpus!r}: use 'all' or GPU ids separated by commas (0,1,3)")
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--gpus {gpus!r} names a GPU twice; use --per-gpu K for several workers per GPU")
    missing = [g for g in chosen if g not in available]
    if missing:
        raise UserError(f"--gpus: GPU {', '.join(missing)} not visible here; visible: {','.join(available)}")
    return chosen


# ----------------------------------------------------------------------------- running


def require_study(name: str, storage: Any) -> None:
    """Fail once, in the launcher, when the study is missing (without importing torch)."""
    import optuna

    known = optuna.get_all_study_names(storage)
    if name not in known:
        raise UserError(f"no study named {name!r} in this storage; studies: {', '.join(known) or 'none'}")


def check_artifacts(name: str, storage: Any, artifacts: str | None, storage_url: str | None) -> None:
    """Open the study's artifact store once in the launcher (a missing bucket fails here, not in
    every worker), reading only the stored space's ``keep`` and ``artifacts`` (no torch import)."""
    import optuna

    from search import records
    from search.study.artifact_store import open_artifacts

    doc = records.stored_space(optuna.load_study(study_name=name, storage=storage))
    if isinstance(doc, dict) and doc.get("keep") != "none":
        url = doc.get("artifacts")
        open_artifacts(artifacts, url if isinstance(url, str) else None, storage_url, create=True)


def label_logs() -> None:
    """Prefix this process's log lines with its launcher label (``[gpu1]``), when it has one."""
    from search.study.runner import WORKER_LABEL_ENV

    label = os.environ.get(WORKER_LABEL_ENV)
    if not label:
        return
    formatter = logging.Formatter(f"%(asctime)s [{label}] %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def stop_on_sigterm() -> None:
    """Make SIGTERM (``docker stop``, the launcher) stop a worker like Ctrl-C: the running trial
    is recorded FAIL and queued again instead of being left RUNNING."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


LAUNCHER_PID_ENV = "STRATEGY_SEARCH_LAUNCHER_PID"


def follow_launcher() -> None:
    """In a worker that a launcher started (Linux): be sent SIGTERM when the launcher dies, so no
    orphan keeps training (or holds a GPU), and stop at once if it died already.

    Set by the worker itself, first thing, not between fork and exec (``preexec_fn``): Python code
    there is unsafe in a process with threads, and the launcher has the gRPC client's when its
    storage is a proxy: about 1 start in 60 aborted (SIGABRT), which left a study's retry to nobody.
    """
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):  # the launcher died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def launch(study: str, specs: list[WorkerSpec], *, storage: str | None,
           options: dict[str, Any] | None = None, packing: dict[str, Any] | None = None) -> LaunchReport:
    """Run one ``strategy-search worker STUDY`` process per spec, forward signals, wait, report.

    The storage URL goes to the workers through the environment, never on their command line
    (where ``ps`` would show its password). ``options`` are worker options (``n_trials``,
    ``timeout``, ``heartbeat``, ...); ``None`` values are left out. ``packing`` (``--per-gpu
    auto``: GPU -> :class:`~search.study.packing.Decision`) makes the launcher watch the study for
    trials that run out of GPU memory and lower that GPU's count (:class:`~search.study.packing.OomWatch`).
    """
    if packing is None:
        return _launch(study, specs, storage=storage, options=options)
    from search.study.packing import DRAIN_ENV

    with tempfile.TemporaryDirectory(prefix="strategy-search-drain-") as tmp:
        specs = [WorkerSpec(s.label, s.device, {**s.env, DRAIN_ENV: os.path.join(tmp, s.label)}) for s in specs]
        report = _launch(study, specs, storage=storage, options=options, watch=True)
    report.packing = {g: d.to_dict() for g, d in packing.items()}
    return report


def _launch(study: str, specs: list[WorkerSpec], *, storage: str | None, options: dict[str, Any] | None,
            watch: bool = False) -> LaunchReport:
    from search.study.runner import WORKER_LABEL_ENV
    from search.storage.backend import STORAGE_ENV, resolve_url, storage_label

    url = resolve_url(storage)
    verbosity = _verbosity_flags()
    args = [f"--{k.replace('_', '-')}={v}" for k, v in (options or {}).items() if v is not None]
    procs: list[tuple[WorkerSpec, subprocess.Popen[bytes]]] = []
    signals: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        signals.append(signum)
        live = [p for _, p in procs if p.poll() is None]
        if len(signals) == 1:
            log.warning("stopping %d worker(s) (%s again kills them)", len(live), signal.Signals(signum).name)
            sig = signum
        else:
            log.warning("killing %d worker(s)", len(live))
            sig = signal.SIGKILL
        for p in live:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for spec in specs:
            env = {**os.environ, **spec.env, STORAGE_ENV: url, WORKER_LABEL_ENV: spec.label,
                   LAUNCHER_PID_ENV: str(os.getpid())}
            cmd = [sys.executable, "-m", "search.cli", *verbosity, "worker", study, "--device", spec.device,
                   *args]
            # Own session: a terminal Ctrl-C reaches the launcher only, which forwards it once. No
            # preexec_fn (see follow_launcher): the child runs no Python code before exec.
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
            procs.append((spec, proc))
            log.info("started worker %s (pid %d) on %s for %s", spec.label, proc.pid,
                     f"GPU {spec.env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in spec.env else "cpu",
                     storage_label(url))
            if signals:
                break
        lowered: list[dict[str, Any]] = []
        if watch:
            lowered = _wait(procs, study, url)
        for _, proc in procs:
            proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    results = [WorkerResult(spec, proc.pid, proc.returncode) for spec, proc in procs]
    report = LaunchReport(study=study, workers=results, interrupted=bool(signals), lowered=lowered)
    _count_trials(report, url)
    return report


def _wait(procs: list[tuple[WorkerSpec, "subprocess.Popen[bytes]"]], study: str, url: str) -> list[dict[str, Any]]:
    """Wait for the workers, lowering a GPU's count when one of its trials runs out of memory."""
    from search.study.packing import DRAIN_ENV, OomWatch

    live: dict[str, list[str]] = {}
    for spec, _ in procs:
        live.setdefault(spec.env.get("CUDA_VISIBLE_DEVICES", ""), []).append(spec.label)
    drains = {spec.label: spec.env[DRAIN_ENV] for spec, _ in procs if DRAIN_ENV in spec.env}
    watch = OomWatch(live, lambda label: Path(drains[label]).touch())
    since = time.time()
    last = 0.0
    while any(p.poll() is None for _, p in procs):
        for spec, p in procs:
            if p.poll() is not None:
                watch.exited(spec.label)
        if time.monotonic() - last >= OOM_POLL:
            last = time.monotonic()
            watch.check(_failed_trials(study, url, since))
        time.sleep(0.5)
    return watch.lowered


def _failed_trials(study: str, url: str, since: float) -> list[tuple[int, str | None, str | None]]:
    """(number, fail reason, launcher label) of the study's FAILed trials that ended after ``since``."""
    import optuna

    from search import records
    from search.storage.backend import open_storage

    try:
        handle = optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=False, connect_timeout=10))
        trials = handle.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop the launcher; look again later
        log.debug("could not read the study's failed trials: %s", exc)
        return []
    out = []
    for t in trials:
        if t.datetime_complete is not None and t.datetime_complete.timestamp() < since - 1:
            continue
        who = records.worker(t)
        out.append((t.number, records.fail_reason(t), who.rsplit(" ", 1)[-1] if isinstance(who, str) else None))
    return out


def pack(study: str, specs: list[WorkerSpec], *, storage: str | None, steps: int | None = None,
         device: str = "cuda", cpu_count: int | None = None,
         probe: Callable[[str, int], Any] | None = None) -> tuple[list[WorkerSpec], dict[str, Any]]:
    """``--per-gpu auto``: probe every GPU of ``specs`` at once and plan the workers that fit.

    Returns the worker specs and, per GPU, its :class:`~search.study.packing.Decision`.
    ``probe(gpu, k)`` runs k probes at once on that GPU (default :func:`probe_gpu`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from search.study.packing import decide

    from search.storage.backend import resolve_url

    url = resolve_url(storage)
    gpus = list(dict.fromkeys(s.env["CUDA_VISIBLE_DEVICES"] for s in specs))
    run = probe or (lambda gpu, k: probe_gpu(study, gpu, k, url=url, steps=steps, device=device))
    log.info("--per-gpu auto: probing %d GPU(s) with the study's trial (memory, then 1, 2, 4... workers at once)",
             len(gpus))
    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        decisions = dict(zip(gpus, pool.map(lambda g: decide(lambda k: run(g, k)), gpus)))
    for g, d in decisions.items():
        log.info("GPU %s: %d worker(s) (%s)", g, d.workers, d.reason)
    return gpu_specs({g: d.workers for g, d in decisions.items()}, cpu_count), decisions


def probe_gpu(study: str, gpu: str, k: int, *, url: str, steps: int | None = None, device: str = "cuda") -> Any:
    """Run ``k`` probes (:mod:`search.study.probe`) at once on one GPU; their aggregate images/s."""
    from search.storage.backend import STORAGE_ENV
    from search.study.packing import MemoryReading, ProbeResult

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, STORAGE_ENV: url, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="strategy-search-probe-") as tmp:
        go = os.path.join(tmp, "go")
        cmd = [sys.executable, "-m", "search.study.probe", study, "--go", go, "--device", device,
               *(["--steps", str(steps)] if steps else [])]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) for _ in range(k)]
        try:
            ready = [(p.stdout.readline() if p.stdout else "").strip() == "ready" for p in procs]
            Path(go).touch()
            outs = [p.communicate(timeout=PROBE_TIMEOUT) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    results = []
    for ok, (out, err) in zip(ready, outs):
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not ok or not lines:
            if "OutOfMemoryError" in err or "out of memory" in err:
                return ProbeResult(k, float("nan"), out_of_memory=True)
            raise UserError(f"--per-gpu auto: the probe on GPU {gpu} failed: "
                            f"{(err.strip().splitlines() or ['no output'])[-1]}")
        results.append(json.loads(lines[-1]))
    if any(r.get("out_of_memory") for r in results):
        return ProbeResult(k, float("nan"), out_of_memory=True)
    first = results[0]
    memory = (MemoryReading(first["peak_bytes"], first["other_bytes"], first["total_bytes"])
              if "peak_bytes" in first else None)
    return ProbeResult(k, sum(r["images_per_s"] for r in results), memory)


def _verbosity_flags() -> list[str]:
    level = logging.getLogger("search").getEffectiveLevel()
    return ["-v"] if level <= logging.DEBUG else (["-q"] if level >= logging.WARNING else [])


def _count_trials(report: LaunchReport, url: str) -> None:
    """Fill in each worker's trial counts from the study (so a killed worker's trials show too)."""
    import optuna

    from search import records
    from search.storage.backend import mask_url, open_storage

    try:
        study = optuna.load_study(study_name=report.study, storage=open_storage(url, heartbeat=False,
                                                                                connect_timeout=10))
        trials = study.get_trials(deepcopy=False)
    except Exception as exc:  # noqa: BLE001 - the workers' exit codes are still worth reporting
        log.warning("could not read the study back from %s: %s", mask_url(url), exc)
        return
    host = socket.gethostname()
    by_worker: dict[str, dict[str, int]] = {}
    for t in trials:
        report.study_counts[t.state.name] = report.study_counts.get(t.state.name, 0) + 1
        who = records.worker(t)
        # A queued retry still carries the dead worker's attrs until some worker takes it.
        if isinstance(who, str) and t.state.name != "WAITING":
            counts = by_worker.setdefault(who, {})
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
    for w in report.workers:
        w.counts = by_worker.get(f"{host}:{w.pid} {w.spec.label}", {})


def run_worker(study_name: str, store: Any, *, storage_url: str | None, n_trials: int | None, timeout: float | None,
               device: str | None, weights_dir: str | None, artifacts: str | None) -> tuple[Any, dict[str, int]]:
    """One worker in this process: join the study and run trials until its budget is used up.

    Returns the runner's summary of this worker's trials and the study's trial counts by state.
    Raises ``WorkerInterrupted`` (with the summary) after Ctrl-C or SIGTERM.
    """
    from search.records import state_counts
    from search.storage.resolved import StudyStorage
    from search.study.load import load_study
    from search.study.artifact_store import open_artifacts
    from search.study.runner import run_trials, worker_seed_for

    study, spec = load_study(study_name, store)
    where = StudyStorage.of(study, storage_url)  # once: the runner, budget, heartbeats and lock get this
    files = open_artifacts(artifacts, spec.artifacts, where.url, create=True) if spec.keep != "none" else None
    label_logs()
    stop_on_sigterm()
    seed = worker_seed_for(spec, len(study.get_trials(deepcopy=False)))
    summary = run_trials(study, spec, storage=where, n_trials=n_trials, timeout=timeout, device=device,
                         weights_dir=weights_dir, worker_seed=seed, artifacts=files)
    return summary, state_counts(study.get_trials(deepcopy=False))
