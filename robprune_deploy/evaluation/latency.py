"""Latency of onnxruntime sessions: warm-up, repeated timed runs, median, spread, and speed-ups with a
confidence interval.

Machines are shared and noisy, so a speed-up is only a verdict when it is measurable: the two
sessions run interleaved (drift hits both alike), the ratio of medians gets a bootstrap interval
over the interleaved rounds, and a ratio whose interval is too wide, or whose model runs too fast
for the timer and Python's call overhead, is reported as not measurable rather than as a number.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from robprune_deploy.evaluation.runtimes import Predictor

TOO_FAST_MS = 0.05
"""Below this median a run is dominated by the timer and the call into onnxruntime."""
MAX_RELATIVE_WIDTH = 0.5
"""A speed-up whose 95% interval is wider than half its value says more about the machine than the model."""


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    median_ms: float
    p90_ms: float
    repeats: int
    iqr_ms: float = 0.0


@dataclass(frozen=True)
class Speedup:
    """``first / second`` median latency, with the 95% bootstrap interval over interleaved rounds.

    :param measurable: False when the interval is too wide or the models too fast to time; ``reason`` says which.
    """

    ratio: float
    low: float
    high: float
    measurable: bool
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _stats(batch: int, times: list[float]) -> LatencyStats:
    q1, q3 = np.percentile(times, [25, 75])
    return LatencyStats(batch, float(np.median(times)), float(np.percentile(times, 90)), len(times), float(q3 - q1))


def measure_latency(
    session: Predictor, shape: tuple[int, ...], batch: int, warmup: int = 5, repeats: int = 30, seed: int = 0
) -> LatencyStats:
    """Time ``repeats`` runs of one random batch after ``warmup`` untimed runs."""
    x = np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)
    for _ in range(warmup):
        session.predict(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.predict(x)
        times.append((time.perf_counter() - start) * 1000.0)
    return _stats(batch, times)


def _interleaved(
    first: Predictor,
    second: Predictor,
    shape: tuple[int, ...],
    batch: int,
    warmup: int,
    repeats: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)
    for _ in range(warmup):
        first.predict(x)
        second.predict(x)
    times = np.empty((2, repeats))
    for i in range(repeats):
        for j, session in enumerate((first, second)):
            start = time.perf_counter()
            session.predict(x)
            times[j, i] = (time.perf_counter() - start) * 1000.0
    return times[0], times[1]


def speedup_interval(first_ms: np.ndarray, second_ms: np.ndarray, resamples: int = 2000, seed: int = 0) -> Speedup:
    """Ratio of median latencies ``first / second`` and its 95% paired-bootstrap interval."""
    ratio = float(np.median(first_ms) / np.median(second_ms))
    rng = np.random.default_rng(seed)
    rounds = rng.integers(0, len(first_ms), size=(resamples, len(first_ms)))
    samples = np.median(first_ms[rounds], axis=1) / np.median(second_ms[rounds], axis=1)
    low, high = (float(v) for v in np.percentile(samples, [2.5, 97.5]))
    reason = ""
    if min(np.median(first_ms), np.median(second_ms)) < TOO_FAST_MS:
        reason = f"model too fast to time (median below {TOO_FAST_MS} ms)"
    elif (high - low) > MAX_RELATIVE_WIDTH * ratio:
        reason = f"too noisy (95% interval {low:.2f}-{high:.2f})"
    return Speedup(ratio, low, high, not reason, reason)


def compare_latency(
    first: Predictor,
    second: Predictor,
    shape: tuple[int, ...],
    batch: int,
    warmup: int = 5,
    repeats: int = 30,
    seed: int = 0,
) -> tuple[LatencyStats, LatencyStats]:
    """Latency of two sessions on the same batch, runs interleaved so drift (clock boost, other
    load) affects both alike."""
    a, b = _interleaved(first, second, shape, batch, warmup, repeats, seed)
    return _stats(batch, a.tolist()), _stats(batch, b.tolist())


def compare_speed(
    baseline: Predictor,
    candidate: Predictor,
    shape: tuple[int, ...],
    batch: int,
    warmup: int = 5,
    repeats: int = 30,
    seed: int = 0,
) -> tuple[LatencyStats, LatencyStats, Speedup]:
    """:func:`compare_latency` plus the candidate's speed-up over the baseline with its interval."""
    a, b = _interleaved(baseline, candidate, shape, batch, warmup, repeats, seed)
    return _stats(batch, a.tolist()), _stats(batch, b.tolist()), speedup_interval(a, b, seed=seed)
