"""Checks of the real-valued arguments of this package (fractions and counts: robprune_deploy.arguments)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from robprune_deploy.errors import ArgumentError


def finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ArgumentError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def positive(value: Any, name: str) -> float:
    number = finite(value, name)
    if number <= 0:
        raise ArgumentError(f"{name}: must be positive, got {number}")
    return number


def finite_numbers(values: Iterable[Any], name: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArgumentError(f"{name}: must be a sequence of numbers, got {type(values).__name__}")
    return [finite(v, f"{name}[{i}]") for i, v in enumerate(values)]
