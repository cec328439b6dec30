"""Training curves, per-layer sparsity / channel counts, and the gate's candidate-vs-baseline chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robprune_deploy.algorithms import PruningStatistics
from robprune_deploy.atomic import atomic_path

History = Mapping[str, list[tuple[int, dict[str, float]]]]


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it (for plugins' own plots too)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _series(rows: list[tuple[int, dict[str, float]]], key: str) -> tuple[list[int], list[float]]:
    """Epochs (from 1) and values of ``key`` in the rows that hold it."""
    points = [(epoch + 1, metrics[key]) for epoch, metrics in rows if key in metrics]
    return [e for e, _ in points], [v for _, v in points]


def training_figure(history: History) -> Figure | None:
    """Per stage: the robust training loss, and the robust accuracy that was measured: on the
    training batches' own attacks (``train_adv_acc``) and, when the recipe holds one out, on the
    validation split (``val_pgd_acc``). Titles name only what was measured; epochs are whole numbers."""
    stages = [s for s, rows in history.items() if rows]
    if not stages:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    measured: list[str] = []
    for stage in stages:
        rows = history[stage]
        for key in ("loss", "robust_loss"):
            epochs, values = _series(rows, key)
            if epochs:
                loss_ax.plot(epochs, values, marker="o", label=stage)
                break
        epochs, values = _series(rows, "train_adv_acc")
        color = None
        if epochs:
            color = acc_ax.plot(epochs, values, marker="o", label=f"{stage} (training batches)")[0].get_color()
            measured.append("training batches")
        epochs, values = _series(rows, "val_pgd_acc")
        if epochs:
            acc_ax.plot(epochs, values, marker="s", linestyle="--", color=color, label=f"{stage} (validation split)")
            measured.append("validation split")
    loss_ax.set_title("robust training loss")
    loss_ax.set_ylabel("loss")
    sources = [m for m in ("training batches", "validation split") if m in measured]
    if sources:
        acc_ax.set_title(f"robust (PGD) accuracy: {' and '.join(sources)}")
        acc_ax.set_ylabel("accuracy under attack")
        acc_ax.set_ylim(0, 1)
    else:  # e.g. TRADES without a validation split: no robust accuracy was recorded per epoch
        fig.delaxes(acc_ax)
    for ax in fig.axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig


def plot_training(history: History, path: Path) -> Path | None:
    """:func:`training_figure` written to ``path`` (None when no stage recorded an epoch)."""
    fig = training_figure(history)
    return None if fig is None else save_figure(fig, path)


def plot_layers(stats: PruningStatistics, path: Path) -> Path:
    """Per layer: sparsity (unstructured) or dense vs kept output channels (channel granularity)."""
    names = [s.name.replace("body.", "") for s in stats.layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names)), 3.8))
    position = list(range(len(names)))
    if stats.granularity == "channel":
        ax.bar(position, [s.out_channels for s in stats.layers], color="lightgrey", label="dense")
        ax.bar(position, [s.kept_out_channels for s in stats.layers], color="tab:blue", label="kept")
        ax.set_ylabel("output channels")
        ax.legend()
    else:
        ax.bar(position, [s.sparsity for s in stats.layers], color="tab:blue")
        ax.set_ylabel("weight sparsity")
        ax.set_ylim(0, 1)
    ax.set_xticks(position, names, rotation=45, ha="right", fontsize=8)
    ax.set_title(f"{stats.algorithm} ({stats.granularity}), target {stats.target_ratio:.0%}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gate(candidate: Mapping[str, Any], baseline: Mapping[str, Any] | None, path: Path) -> Path:
    """Clean / PGD / Square / AutoAttack accuracy of the candidate beside the baseline."""
    keys = ["clean_acc", "pgd_acc", "square_acc", "autoattack_acc"]
    labels = ["clean", "white-box PGD", "Square", "AutoAttack"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.38
    xs = range(len(keys))
    ax.bar([x - width / 2 for x in xs], [candidate.get(k) or 0 for k in keys], width, label="candidate")
    if baseline is not None:
        ax.bar([x + width / 2 for x in xs], [baseline.get(k) or 0 for k in keys], width, label="baseline")
    ax.set_xticks(list(xs), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (onnxruntime)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_security_curves(
    curves: Mapping[str, Sequence[float]], eps: float, path: Path, ensemble: Mapping[str, float | None] | None = None
) -> Path:
    """Robust accuracy against the L-inf radius, one line per model, from per-example minimal
    adversarial distances; the recipe's eps is marked, with the ensemble's accuracy there."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = [d for distances in curves.values() for d in distances if np.isfinite(d)]
    top = max([2.5 * eps, *finite]) if finite else 2.5 * eps
    grid = np.linspace(0.0, top, 200)
    for i, (label, distances) in enumerate(curves.items()):
        d = np.asarray(distances, dtype=float)
        color = f"C{i}"
        ax.plot(grid, [(d > e).mean() for e in grid], label=f"{label} (median {np.median(d):.3g})", color=color)
        point = (ensemble or {}).get(label)
        if point is not None:
            ax.plot([eps], [point], marker="x", markersize=9, color=color, linestyle="none")
    ax.axvline(eps, color="grey", linestyle="--", linewidth=1, label=f"eps = {eps:.3g} (x: AutoAttack)")
    ax.set_xlabel("L-inf radius")
    ax.set_ylabel("robust accuracy (FMN, onnxruntime)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, top)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
