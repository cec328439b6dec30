"""Score-space measurements: sharpness at radius gamma and the top Hessian eigenvalue."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

LossFn = Callable[[], torch.Tensor]


def ascent_direction(scores: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """Per-layer adaptive SAM step: ``z_l = gamma * ||s_l|| * g_l / (||g_l|| + 1e-12)`` (L2 norms)."""
    return [gamma * s.detach().norm() * g / (g.norm() + 1e-12) for s, g in zip(scores, grads, strict=True)]


def sharpness(loss_fn: LossFn, scores: Sequence[torch.Tensor], gamma: float) -> tuple[float, float]:
    """``(L(s + z*) - L(s), L(s))`` with ``z*`` one ascent step of radius ``gamma`` (scores restored)."""
    loss = loss_fn()
    raw = torch.autograd.grad(loss, scores, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(s) for g, s in zip(raw, scores, strict=True)]
    z = ascent_direction(scores, grads, gamma)
    saved = [s.detach().clone() for s in scores]
    with torch.no_grad():
        for s, dz in zip(scores, z, strict=True):
            s.add_(dz)
        perturbed = loss_fn()
        for s, value in zip(scores, saved, strict=True):
            s.copy_(value)  # exact restore
    return (perturbed - loss).item(), loss.item()


def top_hessian_eigenvalue(
    loss_fn: LossFn, scores: Sequence[torch.Tensor], iterations: int = 10, seed: int = 0
) -> float:
    """Power iteration with Hessian-vector products of the robust loss w.r.t. the scores."""
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(s.shape, generator=generator).to(s.device) for s in scores]
    norm = torch.sqrt(torch.stack([(x * x).sum() for x in v]).sum())
    v = [x / norm for x in v]
    eigenvalue = 0.0
    loss = loss_fn()
    grads = torch.autograd.grad(loss, scores, create_graph=True, allow_unused=True)
    pairs = [(g, s) for g, s in zip(grads, scores, strict=True) if g is not None]
    for _ in range(iterations):
        dot = torch.stack([(g * x).sum() for (g, _), x in zip(pairs, v, strict=False)]).sum()
        raw = torch.autograd.grad(dot, [s for _, s in pairs], retain_graph=True, allow_unused=True)
        hv = [h if h is not None else torch.zeros_like(s) for h, (_, s) in zip(raw, pairs, strict=True)]
        eigenvalue = float(sum((h * x).sum() for h, x in zip(hv, v, strict=False)))
        norm = torch.sqrt(torch.stack([(h * h).sum() for h in hv]).sum()).clamp_min(1e-12)
        v = [h.detach() / norm for h in hv]
    return eigenvalue
