"""Latency of onnxruntime sessions: warm-up, repeated timed runs, median and p90."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from robprune_deploy.evaluation.sessions import OnnxClassifier


@dataclass(frozen=True)
class LatencyStats:
    batch: int
    median_ms: float
    p90_ms: float
    repeats: int


def measure_latency(
    session: OnnxClassifier, shape: tuple[int, ...], batch: int, warmup: int = 5, repeats: int = 30, seed: int = 0
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
    return LatencyStats(batch, float(np.median(times)), float(np.percentile(times, 90)), repeats)


def compare_latency(
    first: OnnxClassifier,
    second: OnnxClassifier,
    shape: tuple[int, ...],
    batch: int,
    warmup: int = 5,
    repeats: int = 30,
    seed: int = 0,
) -> tuple[LatencyStats, LatencyStats]:
    """Latency of two sessions on the same batch, runs interleaved so drift (clock boost, other
    load) affects both alike."""
    x = np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)
    for _ in range(warmup):
        first.predict(x)
        second.predict(x)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for session, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            session.predict(x)
            bucket.append((time.perf_counter() - start) * 1000.0)
    a, b = (LatencyStats(batch, float(np.median(t)), float(np.percentile(t, 90)), repeats) for t in times)
    return a, b
