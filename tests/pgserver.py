"""A throwaway PostgreSQL server on 127.0.0.1 for the tests and ``.ci/run`` (stdlib only).

    python3 tests/pgserver.py start DIR   # prints the postgresql+psycopg:// URL (keep it out of logs)
    python3 tests/pgserver.py restart DIR [SECONDS]   # down for SECONDS (default 0), then up again
    python3 tests/pgserver.py stop DIR

DIR must be a new or empty directory; the cluster, its log and its socket live there and
``stop`` removes it. Debian's server refuses to run as root, so as root the server runs as the
``postgres`` user (created by the ``postgresql`` package).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

USER = "strategy"
DATABASE = "strategy_search"


class ServerError(RuntimeError):
    """No server could be started here (no binaries, no postgres user, initdb/start failed)."""


def find_bin(name: str) -> str:
    """``name`` from Debian's versioned directory (newest first), else from PATH."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        path = Path(directory) / name
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name} not found (apt-get install postgresql)")
    return found


def _version(directory: str) -> float:
    try:
        return float(Path(directory).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The account that runs the server: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("running as root and there is no 'postgres' user to run the server") from None


def _as_server_user(cmd: list[str]) -> list[str]:
    return cmd if _server_user() is None else ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        program = cmd[4] if cmd[0] == "runuser" else cmd[0]
        raise ServerError(f"{Path(program).name} failed: "
                          f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def start(base: str | Path) -> str:
    """Initialize and start a cluster under ``base``; return its URL (with a random password)."""
    base = Path(base).resolve()
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        raise ServerError(f"{base} is not empty")
    data, pwfile = base / "data", base / "pw"
    password = secrets.token_hex(12)
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    user = _server_user()
    if user is not None:
        for path in (base, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
        base.chmod(0o700)
    _run(_as_server_user([find_bin("initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
                          f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--no-instructions"]))
    pwfile.unlink()
    port = _free_port()
    # Loopback only; the socket stays inside the throwaway directory; durability is not needed.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200"
    (base / "options").write_text(options, encoding="utf-8")  # for restart
    _start_server(base)
    env = {**os.environ, "PGPASSWORD": password}
    _run([find_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE], env=env)
    return f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"


def _start_server(base: Path) -> None:
    data, log = base / "data", base / "server.log"
    options = (base / "options").read_text(encoding="utf-8")
    try:
        _run(_as_server_user([find_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                              "-o", options, "start"]))
    except ServerError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ServerError(f"{exc}\n{tail}") from None


def restart(base: str | Path, down: float = 0.0) -> None:
    """Restart the server under ``base`` as an administrator would (``pg_ctl stop -m fast``: every
    session is terminated), keep it down for ``down`` seconds, and start it again on the same port."""
    base = Path(base).resolve()
    _run(_as_server_user([find_bin("pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"]))
    time.sleep(down)
    _start_server(base)


def stop(base: str | Path) -> None:
    """Stop the cluster under ``base`` (if it runs) and remove the directory."""
    base = Path(base).resolve()
    data = base / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([find_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, text=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not (len(argv) == 3 and argv[1] in ("start", "stop", "restart")
            or len(argv) == 4 and argv[1] == "restart"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[1] == "start":
            print(start(argv[2]))
        elif argv[1] == "restart":
            restart(argv[2], float(argv[3]) if len(argv) == 4 else 0.0)
        else:
            stop(argv[2])
    except (ServerError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"pgserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
