"""Workers packed by memory and throughput: ``worker --gpus all --per-gpu auto``.

How many workers share one GPU is decided per GPU, before the workers start, by probes of the
study's own trial code (:mod:`search.study.probe`), all GPUs at once:

1. **Memory.** One probe trains a config of the study (the largest batch and input size the
   space allows, or the hungriest trial a resumed study has recorded) for a few dozen steps and
   reads its peak reserved GPU memory plus what the process holds besides (CUDA context, cuDNN
   workspaces). As many such workers as fit in the card with a :data:`MARGIN` left free, at most
   :data:`MAX_PER_GPU`.
2. **Throughput.** Probes of 1, 2, 4, ... workers at once (never above the memory fit) measure
   aggregate training images/s; doubling stops when it gains less than :data:`SATURATED`
   (``benchmarks.gpu``'s saturation rule) and the count before it is kept. A probe that runs out
   of memory lowers the fit to one below it, and the ramp goes on from there.
3. **Re-check while running.** A trial of a larger config can still run out of memory: it FAILs
   with ``out of GPU memory: ...`` as ever, and the launcher lowers that GPU's count by one: one
   of its workers finishes its current trial and stops (a drain file, :func:`drain_requested`),
   the others go on. Never below one.

The decisions are pure functions of probe results (:func:`decide`, :class:`OomWatch`), tested
on the CPU with fake memory readings; :func:`read_gpu_memory` is the real reader.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

MARGIN = 0.10  # share of the card left free (fragmentation, a config a little larger than the probe's)
SATURATED = 1.10  # more workers must raise aggregate images/s at least this much to be kept
MAX_PER_GPU = 8
DRAIN_ENV = "STRATEGY_SEARCH_DRAIN_FILE"
OOM_PREFIX = "out of GPU memory"  # the fail reason search.study.objective records


@dataclass(frozen=True)
class MemoryReading:
    """One process's GPU memory: its peak reserved by PyTorch, what it holds besides, the card."""

    peak_bytes: int  # torch.cuda.max_memory_reserved
    other_bytes: int  # the process's footprint outside PyTorch's allocator (CUDA context, libraries)
    total_bytes: int  # the card's memory

    @property
    def footprint(self) -> int:
        return self.peak_bytes + self.other_bytes


def read_gpu_memory(device: Any = None) -> MemoryReading | None:
    """This process's reading on ``device`` (None without CUDA). ``other_bytes`` is the card's
    used memory outside this process's allocator: exact when the process is alone on the card
    (as the first probe is), an overestimate otherwise."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    return MemoryReading(peak_bytes=int(torch.cuda.max_memory_reserved(device)),
                         other_bytes=max(0, int(total - free - reserved)), total_bytes=int(total))


def memory_fit(reading: MemoryReading, margin: float = MARGIN, cap: int = MAX_PER_GPU) -> int:
    """Workers of this footprint that fit in the card with ``margin`` of it left free (at least 1)."""
    usable = reading.total_bytes * (1.0 - margin)
    return max(1, min(cap, int(usable // max(1, reading.footprint))))


@dataclass(frozen=True)
class ProbeResult:
    """What ``workers`` probes running at once on one GPU measured."""

    workers: int
    images_per_s: float  # aggregate training images/s of all of them (nan when one failed)
    memory: MemoryReading | None = None  # the first probe's reading (one worker alone)
    out_of_memory: bool = False


@dataclass
class Decision:
    """Workers for one GPU and why."""

    workers: int
    fit: int  # by memory
    levels: list[ProbeResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "memory_fit": self.fit, "reason": self.reason,
                "probes": [{"workers": p.workers, "images_per_s": p.images_per_s, "out_of_memory": p.out_of_memory}
                           for p in self.levels]}


def decide(probe: Callable[[int], ProbeResult], *, margin: float = MARGIN, cap: int = MAX_PER_GPU,
           saturated: float = SATURATED) -> Decision:
    """Probe 1, 2, 4, ... workers (up to the memory fit) and keep the count before saturation."""
    first = probe(1)
    levels = [first]
    if first.out_of_memory:
        return Decision(1, 1, levels, "one worker alone ran out of memory in the probe: 1 (configs this large fail)")
    if first.memory is None:
        return Decision(1, 1, levels, "no GPU memory reading: 1")
    fit = memory_fit(first.memory, margin, cap)
    best = first
    reason = ""
    while True:
        nxt = min(2 * best.workers, fit)
        if nxt <= best.workers:
            reason = f"memory fits {fit}" if fit < cap else f"at most {cap} per GPU"
            break
        got = probe(nxt)
        levels.append(got)
        if got.out_of_memory:
            fit = nxt - 1  # the probe config does not fit nxt times: re-check below it
            continue
        gain = got.images_per_s / best.images_per_s if best.images_per_s > 0 else float("inf")
        if not gain >= saturated:
            reason = (f"{nxt} workers gained {gain:.2f}x over {best.workers} (< {saturated}x): "
                      f"throughput stopped rising")
            break
        best = got
    return Decision(best.workers, fit, levels, reason)


# ----------------------------------------------------------------------------- while running


def gpu_of(label: str) -> str | None:
    """The GPU id of a launcher label: ``gpu1.2`` -> ``1``; None for CPU workers."""
    if not label.startswith("gpu"):
        return None
    return label[3:].split(".", 1)[0]


class OomWatch:
    """Lowers a GPU's worker count by one for each trial that ran out of memory on it.

    ``drain(label)`` asks that worker to stop after its current trial. Trials are read from the
    study (``trials()``: (number, fail reason, worker label) of FAILed trials); each OOM counts once.
    """

    def __init__(self, live: dict[str, list[str]], drain: Callable[[str], None]) -> None:
        self.live = {g: list(labels) for g, labels in live.items()}  # GPU -> labels still running
        self.drain = drain
        self.seen: set[int] = set()
        self.lowered: list[dict[str, Any]] = []

    def check(self, failed: Iterable[tuple[int, str | None, str | None]]) -> None:
        for number, reason, label in failed:
            if number in self.seen or not (reason or "").startswith(OOM_PREFIX) or not label:
                continue
            self.seen.add(number)
            gpu = gpu_of(label)
            labels = self.live.get(gpu or "", [])
            if len(labels) <= 1:
                log.warning("trial %d ran out of memory on GPU %s with one worker there: nothing to lower "
                            "(that config does not fit this card)", number, gpu)
                continue
            victim = labels.pop()  # the last started; the others keep their place
            self.lowered.append({"trial": number, "gpu": gpu, "drained": victim, "workers": len(labels)})
            log.warning("trial %d ran out of GPU memory on GPU %s: lowering it to %d worker(s) (%s finishes its "
                        "trial and stops)", number, gpu, len(labels), victim)
            self.drain(victim)

    def exited(self, label: str) -> None:
        for labels in self.live.values():
            if label in labels:
                labels.remove(label)


def drain_requested() -> bool:
    """Whether the launcher asked this worker to stop after its current trial."""
    path = os.environ.get(DRAIN_ENV)
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]
