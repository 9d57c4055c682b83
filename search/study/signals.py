"""Holding Ctrl-C and SIGTERM for the few milliseconds in which a trial is created and claimed."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def hold_signals() -> Iterator[list[int]]:
    """Hold Ctrl-C / SIGTERM while a trial is created and marked as ours (a few ms), so an
    interrupt never leaves a RUNNING trial that has no heartbeat and so is never retried."""
    held: list[int] = []
    names = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in names}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield held
        return
    for s in names:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def redeliver(signum: int) -> None:
    """Deliver a held signal now, as if it had just arrived."""
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)
