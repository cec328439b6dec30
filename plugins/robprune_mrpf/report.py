"""Bar chart of MRS and the allocated ratio per channel group."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from robprune_deploy import PruningResult
from robprune_deploy.reporting import save_figure


def plot_allocation(result: PruningResult, directory: Path) -> list[Path]:
    """``<algorithm>_allocation.png``: MRS (if any) and pruning ratio per group."""
    ratios: dict[str, float] = result.extra.get("ratios", {})
    if not ratios:
        return []
    names = list(ratios)
    mrs: dict[str, float] = result.extra.get("mrs", {})
    panels = 2 if mrs else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(6, 0.6 * len(names)), 3.2 * panels), squeeze=False)
    position = range(len(names))
    if mrs:
        axes[0][0].bar(position, [mrs[n] for n in names], color="tab:red")
        axes[0][0].set_ylabel("MRS")
        axes[0][0].set_title("module robustness sensitivity per group")
    ax = axes[-1][0]
    ax.bar(position, [ratios[n] for n in names], color="tab:blue")
    ax.axhline(result.ratio, color="grey", linestyle="--", linewidth=1, label=f"target {result.ratio:.0%} MACs")
    ax.set_ylabel("pruned fraction of channels")
    ax.set_xticks(list(position), [n.replace("body.", "") for n in names], rotation=45, ha="right", fontsize=8)
    ax.legend()
    fig.suptitle(f"{result.algorithm}: per-group ratios")
    fig.tight_layout()
    path = directory / f"{result.algorithm}_allocation.png"
    return [save_figure(fig, path)]
