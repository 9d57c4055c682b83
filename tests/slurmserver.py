"""A throwaway single-node SLURM cluster on 127.0.0.1 for the tests and ``.ci/run`` (stdlib only).

    python3 tests/slurmserver.py start DIR   # prints the path of its slurm.conf (export SLURM_CONF=...)
    python3 tests/slurmserver.py stop DIR

Debian's ``slurm-wlm`` (22.05) and ``munge`` (apt-get install slurm-wlm munge), run as root: a
``munged`` with a key generated here, a ``slurmctld`` and one ``slurmd`` whose node is this machine
(its CPUs and memory as ``slurmd -C`` reports them), ports picked free, state, logs and sockets all
under DIR (a new or empty directory; ``stop`` removes it). No cgroups are needed
(``proctrack/linuxproc``, ``task/none``) and no GPU: jobs here run on CPUs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PARTITION = "debug"
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order


class ClusterError(RuntimeError):
    """No cluster could be started here (no binaries, not root, a daemon did not come up)."""


def _which(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/sbin"):
        path = Path(directory) / name
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"{name} not found (apt-get install slurm-wlm munge)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise ClusterError(f"{Path(cmd[0]).name} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def _node() -> tuple[str, str]:
    """(node name, its hardware line) from ``slurmd -C``: what slurmd will find at start-up."""
    first = _run([_which("slurmd"), "-C"]).splitlines()[0]
    fields = dict(item.split("=", 1) for item in first.split() if "=" in item)
    name = fields.pop("NodeName")
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return name, " ".join(f"{k}={fields[k]}" for k in keep if k in fields)


def environment(base: str | Path) -> dict[str, str]:
    """The environment for SLURM commands (sbatch, squeue, scancel) on the cluster under ``base``."""
    return {**os.environ, "SLURM_CONF": str(Path(base).resolve() / "slurm.conf")}


def start(base: str | Path, timeout: float = 60) -> str:
    """Start munged, slurmctld and slurmd under ``base``; return the path of the cluster's slurm.conf."""
    if os.geteuid() != 0:
        raise ClusterError("the test cluster runs its daemons as root")
    base = Path(base).resolve()
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        raise ClusterError(f"{base} is not empty")
    base.chmod(0o700)
    for sub in ("munge", "state", "spool", "log"):
        (base / sub).mkdir(mode=0o700)
    key, munge_socket = base / "munge" / "munge.key", base / "munge" / "socket"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    # --force: the key's directories sit under /tmp, which munged would call insecure (others may write there).
    _run([_which("munged"), "--force", f"--key-file={key}", f"--socket={munge_socket}",
          f"--pid-file={base / 'munge' / 'munged.pid'}", f"--log-file={base / 'log' / 'munged.log'}",
          f"--seed-file={base / 'munge' / 'munged.seed'}"])
    name, hardware = _node()
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=strategysearch",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobCompType=jobcomp/none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SchedulerType=sched/backfill",
        "ReturnToService=2",
        "JobRequeue=1",
        "KillWait=10",
        "InactiveLimit=0",
        "MinJobAge=300",
        f"NodeName={name} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={name} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]), encoding="utf-8")
    env = environment(base)
    try:
        _run([_which("slurmctld"), "-f", str(conf), "-i"], env=env)
        _run([_which("slurmd"), "-f", str(conf), "-N", name], env=env)
        _wait_idle(env, timeout)
    except (ClusterError, subprocess.SubprocessError) as exc:
        logs = "\n".join(f"{p.name}: {p.read_text(errors='replace')[-1500:]}"
                         for p in sorted((base / "log").glob("*.log")))
        stop(base)
        raise ClusterError(f"{exc}\n{logs}") from None
    return str(conf)


def _wait_idle(env: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        result = subprocess.run([_which("sinfo"), "-h", "-o", "%t"], capture_output=True, text=True, env=env,
                                timeout=30)
        state = result.stdout.strip()
        if result.returncode == 0 and re.fullmatch(r"idle\*?|idle", state):
            return
        time.sleep(0.5)
    raise ClusterError(f"the node did not become idle in {timeout:g}s (sinfo says {state!r})")


def stop(base: str | Path) -> None:
    """Stop the cluster's daemons under ``base`` (and any job they left) and remove the directory."""
    base = Path(base).resolve()
    conf = base / "slurm.conf"
    if conf.exists() and shutil.which("scancel"):
        # Jobs first: their processes are children of slurmd's step daemons.
        subprocess.run(["scancel", "--full", "--signal=KILL", "-u", "root"], env=environment(base),
                       capture_output=True, timeout=30)
    for daemon in DAEMONS:
        pidfile = base / ("munge/munged.pid" if daemon == "munged" else f"{daemon}.pid")
        _terminate(pidfile)
    shutil.rmtree(base, ignore_errors=True)


def _terminate(pidfile: Path, timeout: float = 15) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[1] == "start":
            print(start(argv[2]))
        else:
            stop(argv[2])
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        print(f"slurmserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
