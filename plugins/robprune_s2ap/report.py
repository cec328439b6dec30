"""Plots of a mask search: sharpness, robust loss and mask flips over epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from robprune_deploy import PruningResult
from robprune_deploy.reporting import save_figure


def plot_history(result: PruningResult, directory: Path) -> list[Path]:
    """``<algorithm>_mask_search.png``: sharpness, robust loss and mask flips per epoch, and the
    fraction of kept entries one ascent swapped where the search took the ascent."""
    epochs = result.extra.get("epochs") or []
    if not epochs:
        return []
    x = [int(e["epoch"]) + 1 for e in epochs]
    ascents = [(xi, e["swap_fraction"]) for xi, e in zip(x, epochs, strict=True) if "swap_fraction" in e]
    fig, axes = plt.subplots(1, 4 if ascents else 3, figsize=(17 if ascents else 13, 3.6))
    axes[0].plot(x, [e["sharpness"] for e in epochs], marker="o")
    axes[0].set_title("score-space sharpness")
    axes[1].plot(x, [e["robust_loss"] for e in epochs], marker="o", label="robust loss")
    if any("perturbed_loss" in e for e in epochs):
        axes[1].plot(
            [xi for xi, e in zip(x, epochs, strict=True) if "perturbed_loss" in e],
            [e["perturbed_loss"] for e in epochs if "perturbed_loss" in e],
            marker="x",
            label="at s + z",
        )
    axes[1].legend()
    axes[1].set_title("robust loss (mask search)")
    axes[2].plot(x, [e["mask_flips"] for e in epochs], marker="o")
    axes[2].set_title("mask flips vs previous epoch")
    if ascents:
        axes[3].plot([a for a, _ in ascents], [f for _, f in ascents], marker="o")
        axes[3].set_title("kept entries swapped per ascent")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.suptitle(f"{result.algorithm}, {result.granularity.value}, target {result.ratio:.0%}")
    fig.tight_layout()
    path = directory / f"{result.algorithm}_mask_search.png"
    return [save_figure(fig, path)]
