"""Small statistics for honest comparisons: seed spreads, Welch intervals, bootstrap intervals."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from search.train.metrics import Metrics

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (a point when there is one value)."""
    from scipy import stats

    mean, std = mean_std(values)
    if len(values) < 2 or std == 0.0:
        return mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
                   ) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch t-interval (unequal variances).

    With paired seeds the two samples are positively correlated, which makes this interval
    conservative: it calls fewer differences real, never more.
    """
    from scipy import stats

    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    diff = ma - mb
    va, vb = sa * sa / len(a), sb * sb / len(b)
    se = math.sqrt(va + vb)
    if len(a) < 2 or len(b) < 2 or se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return diff, diff - half, diff + half


def bootstrap_metric(confusion: Sequence[Sequence[int]], metric: str, average: str = "macro",
                     positive: int | None = None, n_boot: int = 2000, seed: int = 0,
                     confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling the images behind a confusion matrix.

    Each resample draws the same number of (true, predicted) pairs with replacement, which is a
    multinomial draw over the matrix's cells; the metric is recomputed exactly as for the split.
    """
    cells = np.asarray(confusion, dtype=np.int64)
    k, n = cells.shape[0], int(cells.sum())
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cells.ravel() / n, size=n_boot).reshape(n_boot, k, k)
    scores = [Metrics(confusion=d.tolist(), loss=math.nan).score(metric, average, positive) for d in draws]
    lo, hi = np.quantile(scores, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)


def bootstrap_difference(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], metric: str,
                         average: str = "macro", positive: int | None = None, n_boot: int = 2000, seed: int = 0,
                         confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(a) - metric(b)`` for two confusion matrices.

    Each matrix's images are resampled on their own. When both come from the same images (two
    models on one validation split) their errors are positively correlated, which this ignores:
    the interval is then wider than a paired one, so it calls fewer gains real, never more.
    """
    ca, cb = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    na, nb = int(ca.sum()), int(cb.sum())
    if na == 0 or nb == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ka, kb = ca.shape[0], cb.shape[0]
    da = rng.multinomial(na, ca.ravel() / na, size=n_boot).reshape(n_boot, ka, ka)
    db = rng.multinomial(nb, cb.ravel() / nb, size=n_boot).reshape(n_boot, kb, kb)
    diffs = [Metrics(confusion=x.tolist(), loss=math.nan).score(metric, average, positive)
             - Metrics(confusion=y.tolist(), loss=math.nan).score(metric, average, positive) for x, y in zip(da, db)]
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)
