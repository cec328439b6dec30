"""The Square attack (Andriushchenko et al., "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020), L-inf and L2, score-based random search.

Written against a plain ``predict(np.ndarray) -> logits`` function so it attacks any runtime
(onnxruntime here) without gradients. Each iteration proposes a change of one random square window
per image and keeps it when the margin loss decreases. The proposals of all still-robust images
are drawn together, and each iteration is one batched query.

L-inf starts from vertical stripes of ``+-eps`` and sets the window to a new vertex of the ball.
L2 is the reference code's (fra31/auto-attack, ``square.py``, ``norm='L2'``;
:mod:`robprune_deploy.evaluation.square_l2`): it starts from a grid of windows, each filled with
the paper's "eta" pattern (two opposite-signed halves of nested squares with weights ``1/(k+1)^2``),
and each proposal moves the perturbation's mass from a second window into the first, refilled with
a fresh eta pattern; the whole perturbation is rescaled to L2 norm ``eps`` and clipped into [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robprune_deploy.attacks.norms import Norm, check_norm
from robprune_deploy.evaluation.square_l2 import propose_l2, start_l2

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SquareResult:
    x_adv: np.ndarray
    robust: np.ndarray  # per example: still correctly classified after the attack
    queries: np.ndarray  # queries spent per example

    @property
    def accuracy(self) -> float:
        return float(self.robust.mean()) if self.robust.size else 0.0


def _margin(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    correct = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    return correct - other.max(axis=1)


def p_schedule(p_init: float, iteration: int, n_iters: int) -> float:
    """The reference piecewise-constant schedule of the square's area fraction, rescaled to ``n_iters``."""
    it = int(iteration / n_iters * 10000)
    for bound, divisor in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
    ):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def _propose(
    rng: np.random.Generator,
    x: np.ndarray,
    x_best: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    eps: float,
    side: int,
) -> np.ndarray:
    """For each row, ``x_best`` with one random ``side x side`` window set to a new vertex of the ball
    (one sign per channel; redrawn where it would not change the window)."""
    k, c, h, w = x_best.shape
    rows = rng.integers(0, h - side + 1, size=k)
    cols = rng.integers(0, w - side + 1, size=k)
    in_rows = (np.arange(h)[None, :] >= rows[:, None]) & (np.arange(h)[None, :] < rows[:, None] + side)
    in_cols = (np.arange(w)[None, :] >= cols[:, None]) & (np.arange(w)[None, :] < cols[:, None] + side)
    window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None, :, :]  # k x 1 x h x w
    proposal = x_best.copy()
    redraw = np.ones(k, dtype=bool)
    for _ in range(10):
        signs = rng.choice([-eps, eps], size=(int(redraw.sum()), c, 1, 1)).astype(np.float32)
        candidate = np.clip(x[redraw] + signs, lo[redraw], hi[redraw])
        proposal[redraw] = np.where(window[redraw], candidate, x_best[redraw])
        unchanged = ~np.any(np.abs(proposal - x_best) > 1e-7, axis=(1, 2, 3))
        redraw = unchanged
        if not redraw.any():
            break
    return proposal


def square_attack(
    predict: Predict,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    n_queries: int = 1000,
    p_init: float = 0.8,
    seed: int = 0,
    on_step: Callable[[], None] | None = None,
    norm: Norm = "linf",
) -> SquareResult:
    """Attack ``predict`` on ``x`` (N x C x H x W in [0, 1]) with labels ``y``.

    :param on_step: called after every iteration (one query per still-robust example).
    :param norm: the threat model, ``linf`` or ``l2``.
    :returns: adversarial examples within ``eps`` (in ``norm``) of ``x`` and the per-example verdict.
    """
    norm = check_norm(norm)
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    n, c, h, w = x.shape
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    logits = predict(x)
    robust = logits.argmax(1) == y
    queries = np.ones(n, dtype=np.int64)
    if norm == "l2":
        x_best = start_l2(rng, x, eps)
    else:
        # Vertical stripes initialization.
        x_best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, c, 1, w)).astype(np.float32), lo, hi)
    margin = _margin(predict(x_best), y)
    queries += 1
    margin[~robust] = -np.inf  # misclassified already: nothing to attack
    for i in range(max(n_queries - 2, 0)):
        active = np.where(margin > 0)[0]
        if active.size == 0:
            break
        p = p_schedule(p_init, i, n_queries)
        if norm == "l2":
            x_new = propose_l2(rng, x[active], x_best[active], eps, p)
        else:
            side = int(min(max(round(np.sqrt(p * h * w)), 1), h - 1 if h > 1 else 1))
            x_new = _propose(rng, x[active], x_best[active], lo[active], hi[active], eps, side)
        new_margin = _margin(predict(x_new), y[active])
        queries[active] += 1
        better = new_margin < margin[active]
        margin[active[better]] = new_margin[better]
        x_best[active[better]] = x_new[better]
        if on_step is not None:
            on_step()
    robust_after = robust & (margin > 0)
    return SquareResult(np.where(robust[:, None, None, None], x_best, x), robust_after, queries)
