"""What one pruning decision removes (shared by algorithms, their results and the pipeline)."""

from __future__ import annotations

from enum import Enum


class Granularity(str, Enum):
    """What one pruning decision removes."""

    UNSTRUCTURED = "unstructured"
    """Single weights; the model keeps dense shapes with zeros."""
    CHANNEL = "channel"
    """Whole output channels of coupled groups; physically removable."""
