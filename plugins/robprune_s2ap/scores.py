"""Importance scores as parametrizations: ``w -> w * M(s, k)`` with a straight-through gradient.

Each masked tensor gets a :class:`ScoreMask` whose forward multiplies the weight by the hard top-k
mask of its scores; the backward passes the gradient to the scores unchanged (HYDRA's STE), so
``d L / d s = d L / d w_eff * w``. With ``channel`` granularity, one score vector per coupled
channel group is shared by every parameter whose output channels belong to the group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize


def keep_count(total: int, ratio: float) -> int:
    """Entries kept when pruning ``ratio`` of ``total`` (at least one survives)."""
    return max(1, total - round(ratio * total))


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Exactly ``keep`` ones at the largest ``|scores|``; ties broken by position (stable sort)."""
    flat = scores.detach().abs().flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:keep]] = True
    return mask.view_as(scores)


class ScoreVector(nn.Module):
    """One layer's (or one channel group's) scores and the hard mask computed from them.

    The mask is recomputed whenever the scores change (tracked by the tensor's version counter),
    or assigned from outside for a global top-k over several layers.
    """

    def __init__(self, init: torch.Tensor, keep: int) -> None:
        super().__init__()
        self.scores = nn.Parameter(init.detach().clone())
        self.keep = keep
        self.global_threshold: float | None = None
        self._mask: torch.Tensor | None = None
        self._version = -1

    def hard_mask(self) -> torch.Tensor:
        version = self.scores._version
        if self._mask is None or version != self._version:
            if self.global_threshold is None:
                self._mask = top_k_mask(self.scores, self.keep)
            else:
                self._mask = self.scores.detach().abs() >= self.global_threshold
            self._version = version
        return self._mask

    def invalidate(self) -> None:
        self._mask = None

    def ste_mask(self) -> torch.Tensor:
        """Forward: the hard 0/1 mask; backward: identity to ``|s|`` (straight-through)."""
        magnitude = self.scores.abs()
        return self.hard_mask().to(magnitude.dtype) + magnitude - magnitude.detach()


class ScoreMask(nn.Module):
    """Parametrization ``w -> w * mask`` where the mask comes from a (possibly shared) :class:`ScoreVector`.

    :param view: the shape the score mask is viewed as to broadcast over the parameter
        (the parameter's own shape for unstructured scores, ``(C, 1, 1, 1)`` etc. for channels).
    """

    def __init__(self, vector: ScoreVector, view: tuple[int, ...]) -> None:
        super().__init__()
        self.vector = vector
        self.view = view

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.vector.ste_mask().view(self.view)


@dataclass
class ScoredTensor:
    """One parameter masked by a score vector."""

    layer: str
    param: str
    vector: ScoreVector


def scaled_init(weight: torch.Tensor) -> torch.Tensor:
    """HYDRA's "scaled" init: ``sqrt(6 / fan_in) * w / max|w|``."""
    fan_in = weight[0].numel() if weight.dim() > 1 else 1
    return math.sqrt(6.0 / fan_in) * weight / weight.abs().max().clamp_min(1e-12)


class ScoreSet:
    """All score vectors of a model under mask search."""

    def __init__(self, model: nn.Module, scope: str) -> None:
        self.model = model
        self.scope = scope
        self.vectors: dict[str, ScoreVector] = {}
        self.tensors: list[ScoredTensor] = []

    def add_vector(self, name: str, vector: ScoreVector) -> ScoreVector:
        self.vectors[name] = vector
        return vector

    def attach(self, layer: str, param: str, vector: ScoreVector, view: tuple[int, ...]) -> None:
        module = self.model.get_submodule(layer)
        parametrize.register_parametrization(module, param, ScoreMask(vector, view))
        self.tensors.append(ScoredTensor(layer, param, vector))

    def parameters(self) -> Iterator[nn.Parameter]:
        for vector in self.vectors.values():
            yield vector.scores

    def refresh(self) -> None:
        """Recompute masks after scores changed (for global scope: one threshold over all layers)."""
        if self.scope == "global":
            keep = sum(v.keep for v in self.vectors.values())
            flat = torch.cat([v.scores.detach().abs().flatten() for v in self.vectors.values()])
            threshold = float(torch.sort(flat, descending=True, stable=True).values[keep - 1])
            for v in self.vectors.values():
                v.global_threshold = threshold
        for v in self.vectors.values():
            v.invalidate()

    def masks(self) -> dict[str, torch.Tensor]:
        """The current hard mask of every score vector, by vector name."""
        return {name: v.hard_mask().clone() for name, v in self.vectors.items()}

    def detach_from_model(self) -> None:
        """Remove the score parametrizations, restoring the original (unmasked) parameters."""
        for t in self.tensors:
            module = self.model.get_submodule(t.layer)
            if parametrize.is_parametrized(module, t.param):
                parametrize.remove_parametrizations(module, t.param, leave_parametrized=False)
        self.tensors.clear()
