"""Every figure of a gate's verdict with its 95% interval.

An accuracy is a count of correct examples out of the examples it was measured on, so it gets
Wilson's score interval (:func:`~robprune_deploy.statistics.wilson_interval`); the speed-up keeps
the interval its timing gave; a figure read off the graph (sparsity) or a single worst case
(parity error) is exact for the model and has none. Each accuracy measured example by example on
both models also has its paired drop from the baseline (role ``drop``), with the paired interval
the drop checks are decided on (:mod:`robprune_deploy.gate.drop_rule`).
"""

from __future__ import annotations

import math
from typing import Any

from robprune_deploy.evaluation import Robustness
from robprune_deploy.gate.verdict import GateVerdict
from robprune_deploy.statistics import wilson_interval

CONFIDENCE = 0.95
ACCURACIES = ("clean_acc", "pgd_acc", "square_acc", "autoattack_acc", "whitebox_acc", "agreement")
"""Robustness fields that are accuracies (or agreements) over examples, each with an interval."""
EXACT = ("max_abs_diff", "audit_sparsity", "claimed_sparsity", "latency_ms", "median_linf_distance")


def _examples(result: Robustness, name: str) -> int:
    return result.square_examples if name == "square_acc" else result.examples


def accuracy(value: float, examples: int) -> dict[str, Any]:
    """An accuracy over ``examples`` with its count and Wilson 95% interval."""
    correct = round(value * examples)
    low, high = wilson_interval(correct, examples, CONFIDENCE)
    return {
        "value": value,
        "correct": correct,
        "examples": examples,
        "interval": {"method": "wilson", "confidence": CONFIDENCE, "low": low, "high": high},
    }


def _robustness_figures(result: Robustness) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in ACCURACIES:
        value = getattr(result, name)
        examples = _examples(result, name)
        if value is not None and math.isfinite(value) and examples > 0:
            figures[name] = accuracy(float(value), examples)
    return figures


def figures_of(verdict: GateVerdict) -> dict[str, dict[str, dict[str, Any]]]:
    """``{runtime: {model role: {figure: {value, interval, ...}}}}`` of every model the gate measured."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for runtime, v in verdict.per_runtime.items():
        roles: dict[str, dict[str, Any]] = {}
        for role, measured in (("candidate", v.candidate), ("baseline", v.baseline)):
            if measured is None:
                continue
            figures = _robustness_figures(v.robustness[role]) if role in v.robustness else {}
            for name in EXACT:
                value = getattr(measured, name, None)
                if value is not None:
                    figures[name] = {"value": value, "interval": None}
            speedup = measured.speedup
            if speedup is not None:
                interval = None
                if speedup.get("measurable"):
                    interval = {
                        "method": "timing",
                        "confidence": CONFIDENCE,
                        "low": speedup["low"],
                        "high": speedup["high"],
                    }
                figures["speedup"] = {"value": speedup.get("ratio"), "interval": interval}
            roles[role] = figures
        drops = {
            name: {
                "value": d.drop,
                "examples": d.examples,
                "p_value": d.p_value,
                "interval": {"method": d.method, "confidence": d.confidence, "low": d.low, "high": d.high},
            }
            for name, d in v.paired_drops.items()
        }
        if drops:
            roles["drop"] = drops
        out[runtime] = roles
    return out
