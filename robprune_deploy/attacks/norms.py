"""The threat-model norms, L-inf and L2: per-example distances, random starts, steepest-ascent steps
and projections back into the threat model, selected by name so that each attack is written once.

L-inf: sign steps, element-wise clipping into ``[x - eps, x + eps]`` and the box, uniform random
starts (Madry et al. 2018; Croce & Hein 2020).

L2 follows AutoAttack's reference code (fra31/auto-attack, ``autopgd_base.py`` with ``norm='L2'``):
a step moves along the gradient divided by its L2 norm; a random start is a Gaussian draw scaled to
the sphere of radius ``eps``; projection rescales the perturbation onto the L2 ball and then clips
into [0, 1]. Clipping only moves a coordinate towards ``x`` (which lies in the box), so the clipped
point is still inside the ball: the result is feasible, though not always the exact Euclidean
projection onto the intersection of ball and box (the reference makes the same approximation).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from robprune_deploy.attacks.outcome import project_linf, uniform_start
from robprune_deploy.errors import ArgumentError

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = get_args(Norm)


def check_norm(norm: object, field: str = "norm") -> Norm:
    """``norm`` if it names a supported norm, else an error naming ``field``."""
    if norm == "linf":
        return "linf"
    if norm == "l2":
        return "l2"
    raise ArgumentError(f"{field}: must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast against ``like`` (``N x ...``)."""
    return values.view(-1, *[1] * (like.dim() - 1))


def distance(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of ``delta`` (``N x ...``)."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def steepest_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The unit-norm direction of steepest ascent for ``norm``: ``sign(g)`` (L-inf), ``g / ||g||_2`` (L2)."""
    if norm == "linf":
        return grad.sign()
    # the reference adds 1e-12 to the norm: a zero gradient gives a zero step
    return grad / (_rows(grad.flatten(1).norm(dim=1), grad) + 1e-12)


def project_l2(x_new: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Rescale ``x_new - x`` onto the L2 ball of radius ``eps`` (a number or one per example) when
    outside it, then clip into the [0, 1] box (which keeps the point inside the ball)."""
    delta = x_new - x
    norm = _rows(delta.flatten(1).norm(dim=1), delta)
    radius = _rows(eps, delta) if isinstance(eps, torch.Tensor) else eps
    scale = torch.clamp(radius / norm.clamp_min(1e-12), max=1.0)
    return (x + delta * scale).clamp(0.0, 1.0)


def project(x_new: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: Norm) -> torch.Tensor:
    """``x_new`` brought into the ``norm`` ball of radius ``eps`` around ``x`` and into [0, 1]."""
    if norm == "linf":
        return project_linf(x_new, x, eps)
    return project_l2(x_new, x, eps)


def random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator) -> torch.Tensor:
    """A random point on the ``norm`` sphere of radius ``eps`` around ``x``, clipped into [0, 1].

    The noise is drawn on the CPU, so a seed gives the same points on any device.
    """
    if norm == "linf":
        return uniform_start(x, eps, generator)
    t = torch.randn(x.shape, generator=generator)
    t = t / (_rows(t.flatten(1).norm(dim=1), t) + 1e-12)
    return (x + eps * t.to(x.device, x.dtype)).clamp(0.0, 1.0)
