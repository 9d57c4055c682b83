"""A throwaway PostgreSQL server on 127.0.0.1 for benchmarks (never any other address)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(database: str = "bench") -> Iterator[str]:
    """Start a fresh cluster in a temp dir (trust auth, 127.0.0.1 only); yield its SQLAlchemy URL.

    As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
    Raises RuntimeError with the reason when it cannot start.
    """
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("initdb/pg_ctl not found (apt-get install -y postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if not runuser:
            raise RuntimeError("running as root and runuser is missing")
        shutil.chown(tmp, user="postgres")
        prefix = [runuser, "-u", "postgres", "--"]
    data, log = tmp / "data", tmp / "server.log"
    port = _free_port()
    started = False
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True, text=True, timeout=120)
        opts = f"-h 127.0.0.1 -p {port} -k {tmp}"
        res = subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                              "start"], capture_output=True, text=True, timeout=90)
        if res.returncode != 0:
            tail = log.read_text(errors="replace")[-500:] if log.exists() else res.stderr
            raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")
        started = True
        from sqlalchemy import create_engine, text

        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                               isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        engine.dispose()
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{Path(exc.cmd[len(prefix)]).name} failed: {(exc.stderr or '').strip()[-500:]}") from None
    finally:
        if started:
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                           timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
