"""A throwaway S3-compatible server for the tests: moto's standalone server on 127.0.0.1 (a free port).

    server = S3Server.start()        # python -m moto.server, waits until it answers
    server.env()                     # AWS_* variables a "machine" needs to reach it (endpoint, credentials)
    server.client().create_bucket(Bucket="models")
    server.stop()

The server is real HTTP speaking the S3 protocol: the code under test talks to it through boto3
unpatched. Its state lives in memory and goes with it. :class:`HoldingProxy` sits between a client
and the server and holds the Nth upload (a PUT) forever, so a test can kill a worker mid-upload.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY = "AKIATESTMACHINE0001"
SECRET_KEY = "s3cretS3key-never-printed"  # tests assert it never appears in any output
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path | None) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log: Path | None = None, timeout: float = 60.0, env: dict[str, str] | None = None) -> "S3Server":
        port = free_port()
        out = open(log, "wb") if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        server = cls(proc, port, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2).close()
                return server
            except OSError:
                time.sleep(0.1)
        server.stop()
        raise RuntimeError("moto server did not answer in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    close = stop  # so a test_hostile row can hold it

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What one "machine" needs to reach the server, and nothing from this machine's ~/.aws."""
        return client_env(endpoint or self.endpoint)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Object key -> size, under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def client_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        # No config or credentials of the machine running the tests, and never the instance
        # metadata service (a non-loopback address) when credentials are missing.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class HoldingProxy:
    """A TCP proxy to ``upstream`` that forwards everything until the ``hold_at``-th request that starts
    an upload (``PUT /``); that request and everything after it on its connection is never forwarded.
    ``held`` is set when it happens."""

    def __init__(self, upstream_port: int, hold_at: int) -> None:
        self.upstream_port = upstream_port
        self.hold_at = hold_at
        self.puts = 0
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        holding = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if inspect and data.startswith(b"PUT /"):
                    with self._lock:
                        self.puts += 1
                        if self.puts == self.hold_at:
                            holding = True
                            self.held.set()
                if not holding:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            if not holding:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self) -> None:
        self._sock.close()
        for s in self._open:
            try:
                s.close()
            except OSError:
                pass
