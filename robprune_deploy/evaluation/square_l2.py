"""The L2 Square attack's start and proposals (Andriushchenko et al., ECCV 2020, Section 3.2;
fra31/auto-attack, ``square.py``, ``norm='L2'``), in numpy for :func:`~robprune_deploy.evaluation.square.square_attack`.

The perturbation is built from "eta" windows: a ``s x s`` pattern of two halves with opposite
signs, each a stack of nested rectangles weighted ``1/(k+1)^2`` (its mass concentrated in the
middle), normalized to unit L2 norm and transposed at random. The start places a grid of such
windows (window side ``h // 5``) with a random sign per image and channel. A proposal picks two
windows per image: the first gets a fresh eta pattern plus its old content (each normalized),
rescaled to carry the budget not used by the image plus the mass of both windows; the second is
emptied. The whole perturbation is then rescaled to L2 norm ``eps`` and clipped into [0, 1]
(clipping only moves pixels towards the input, so the result stays in the ball).

Departures from the reference, none of which changes what is attacked: windows, signs and
transpositions are drawn per image (the reference draws one window position per batch and one
transposition per call); window positions are uniform over all ``h - s + 1`` places (the
reference's ``random_int(0, h - s)`` never picks the last); and images smaller than 5 pixels get
windows of side 1 in the start (the reference's ``h // 5`` is 0 there).
"""

from __future__ import annotations

import numpy as np


def _eta_rectangles(rows: int, cols: int) -> np.ndarray:
    """Nested rectangles centred in a ``rows x cols`` block, the ``k``-th weighted ``1/(k+1)^2``,
    normalized to unit L2 norm (the reference's ``eta_rectangles``)."""
    delta = np.zeros((rows, cols))
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
        top, left = top - 1, left - 1
    norm = np.sqrt((delta**2).sum())
    return delta / norm if norm > 0 else delta


def eta(side: int) -> np.ndarray:
    """The ``side x side`` window pattern: the top half positive, the bottom half negative, unit L2 norm."""
    delta = np.zeros((side, side))
    delta[: side // 2] = _eta_rectangles(side // 2, side)
    delta[side // 2 :] = -_eta_rectangles(side - side // 2, side)
    return delta / np.sqrt((delta**2).sum())


def _patterns(rng: np.random.Generator, count: int, channels: int, side: int) -> np.ndarray:
    """``count x channels x side x side``: the eta pattern, transposed at random per image, with a
    random sign per image and channel."""
    base = eta(side)
    flip = rng.random(count) > 0.5
    shaped = np.where(flip[:, None, None], base.T[None], base[None])[:, None]
    return shaped * rng.choice([-1.0, 1.0], size=(count, channels, 1, 1))


def _unit(delta: np.ndarray) -> np.ndarray:
    """Each image's perturbation divided by its L2 norm (the reference adds 1e-12)."""
    return delta / (np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True)) + 1e-12)


def start_l2(rng: np.random.Generator, x: np.ndarray, eps: float) -> np.ndarray:
    """The starting points: a grid of eta windows of side ``h // 5``, at L2 norm ``eps``, in [0, 1]."""
    n, c, h, w = x.shape
    side = max(h // 5, 1)
    delta = np.zeros(x.shape)
    top, left = max((h - 5 * side) // 2, 0), max((w - 5 * side) // 2, 0)
    for i in range((h - top) // side):
        for j in range((w - left) // side):
            r, q = top + i * side, left + j * side
            delta[:, :, r : r + side, q : q + side] += _patterns(rng, n, c, side)
    return np.clip(x + _unit(delta) * eps, 0.0, 1.0).astype(np.float32)


def _window(rows: np.ndarray, cols: np.ndarray, channels: int, side: int) -> tuple[np.ndarray, ...]:
    """Fancy indices of one ``side x side`` window per image at ``(rows[i], cols[i])``, every
    channel: ``k x channels x side x side``."""
    span = np.arange(side)
    return (
        np.arange(len(rows))[:, None, None, None],
        np.arange(channels)[None, :, None, None],
        (rows[:, None] + span)[:, None, :, None],
        (cols[:, None] + span)[:, None, None, :],
    )


def propose_l2(rng: np.random.Generator, x: np.ndarray, x_best: np.ndarray, eps: float, p: float) -> np.ndarray:
    """One proposal per row of ``x_best``: the window side follows the area fraction ``p`` (odd, at
    least 3 where the image allows)."""
    k, c, h, w = x.shape
    side = max(round(np.sqrt(p * h * w)), 3)
    side = min(side + 1 if side % 2 == 0 else side, h, w)
    delta = (x_best - x).astype(np.float64)
    first = _window(rng.integers(0, h - side + 1, k), rng.integers(0, w - side + 1, k), c, side)
    second = _window(rng.integers(0, h - side + 1, k), rng.integers(0, w - side + 1, k), c, side)
    old = delta[first]
    old_norm = np.sqrt((old**2).sum(axis=(2, 3), keepdims=True))
    image_norm = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    both = np.zeros((k, 1, h, w), dtype=bool)
    both[first[0], 0, first[2], first[3]] = True
    both[second[0], 0, second[2], second[3]] = True
    windows_norm = np.sqrt(((delta * both) ** 2).sum(axis=(2, 3), keepdims=True))
    new = _patterns(rng, k, c, side) + old / (1e-12 + old_norm)
    budget = np.sqrt(np.maximum(eps**2 - image_norm**2, 0.0) / c + windows_norm**2)
    new = new / (1e-12 + np.sqrt((new**2).sum(axis=(2, 3), keepdims=True))) * budget
    delta[second] = 0.0
    delta[first] = new
    return np.clip(x + _unit(delta) * eps, 0.0, 1.0).astype(np.float32)
