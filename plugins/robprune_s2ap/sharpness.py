"""Score-space measurements: sharpness at radius gamma and the top Hessian eigenvalue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

LossFn = Callable[[], torch.Tensor]


def ascend_(scores: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], gammas: Sequence[float]) -> None:
    """Per-layer adaptive SAM step, in place: ``s_l += gamma_l * ||s_l|| * g_l / (||g_l|| + 1e-12)``
    (L2 norms; one radius per layer, equal for a fixed radius), without materializing the step."""
    with torch.no_grad():
        for s, g, gamma in zip(scores, grads, gammas, strict=True):
            s.addcmul_(g, gamma * s.norm() / (g.norm() + 1e-12))


def sharpness(loss_fn: LossFn, scores: Sequence[torch.Tensor], gamma: float) -> tuple[float, float]:
    """``(L(s + z*) - L(s), L(s))`` with ``z*`` one ascent step of radius ``gamma`` (scores restored)."""
    loss = loss_fn()
    raw = torch.autograd.grad(loss, scores, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(s) for g, s in zip(raw, scores, strict=True)]
    saved = [s.detach().clone() for s in scores]
    ascend_(scores, grads, [gamma] * len(scores))  # the search's own ascent
    with torch.no_grad():
        perturbed = loss_fn()
        for s, value in zip(scores, saved, strict=True):
            s.copy_(value)  # exact restore
    return (perturbed - loss).item(), loss.item()


@dataclass(frozen=True)
class EigenEstimate:
    """A power iteration's result: the Rayleigh quotient, the iterations taken and whether it settled."""

    value: float
    iterations: int
    converged: bool


def top_hessian_eigenvalue(
    loss_fn: LossFn, scores: Sequence[torch.Tensor], iterations: int = 20, seed: int = 0, tolerance: float = 1e-4
) -> EigenEstimate:
    """The dominant eigenvalue of the robust loss's Hessian w.r.t. the scores, by power iteration.

    Hessian-vector products go through the straight-through estimator: the mask's forward is
    hard, its backward is ``d|s|/ds``, so the Hessian is ``D H_w D`` with ``D = diag(w * sign(s))``
    and ``H_w`` the loss's Hessian in the effective weights (masked entries included). Power
    iteration finds the eigenvalue of largest magnitude (the top one where the loss is locally
    convex, as PyHessian reports it); it stops early once the Rayleigh quotient changes by less
    than ``tolerance`` (relative) between two iterations. Where two eigenvalues of opposite sign
    have nearly the same magnitude it does not settle: ``converged`` says so.
    """
    # The fused attention kernels (flash, memory-efficient) have no second derivative; the math
    # kernel computes the same attention and differentiates twice.
    with sdpa_kernel(SDPBackend.MATH):
        return _power_iteration(loss_fn, scores, iterations, seed, tolerance)


def _power_iteration(
    loss_fn: LossFn, scores: Sequence[torch.Tensor], iterations: int, seed: int, tolerance: float
) -> EigenEstimate:
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(s.shape, generator=generator).to(s) for s in scores]
    norm = torch.sqrt(torch.stack([(x * x).sum() for x in v]).sum())
    v = [x / norm for x in v]
    eigenvalue = 0.0
    loss = loss_fn()
    grads = torch.autograd.grad(loss, scores, create_graph=True, allow_unused=True)
    pairs = [(g, s, x) for g, s, x in zip(grads, scores, v, strict=True) if g is not None]
    if not pairs:
        return EigenEstimate(0.0, 0, True)
    v = [x for _, _, x in pairs]
    for done in range(1, iterations + 1):
        dot = torch.stack([(g * x).sum() for (g, _, _), x in zip(pairs, v, strict=True)]).sum()
        raw = torch.autograd.grad(dot, [s for _, s, _ in pairs], retain_graph=True, allow_unused=True)
        hv = [h if h is not None else torch.zeros_like(s) for h, (_, s, _) in zip(raw, pairs, strict=True)]
        previous, eigenvalue = eigenvalue, float(sum(float((h * x).sum()) for h, x in zip(hv, v, strict=True)))
        norm = torch.sqrt(torch.stack([(h * h).sum() for h in hv]).sum()).clamp_min(1e-12)
        v = [h.detach() / norm for h in hv]
        if done > 1 and abs(eigenvalue - previous) <= tolerance * abs(eigenvalue):
            return EigenEstimate(eigenvalue, done, True)
    return EigenEstimate(eigenvalue, iterations, False)
