"""training.png says what was measured: titles, axis labels and whole-number epochs, read from the
figure's axes before it is saved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from robprune_deploy.reporting import plot_training, training_figure

# What RunContext.record_epoch keeps: (epoch from 0, metrics) per stage, as the training loops log them.
PRETRAIN = [(e, {"loss": 2.3 - 0.2 * e, "lr": 0.05, "train_adv_acc": 0.1 + 0.05 * e}) for e in range(3)]
SEARCH = [(e, {"robust_loss": 1.9 - 0.1 * e, "sparsity": 0.9, "mask_flips": 30.0}) for e in range(2)]
FINETUNE_VAL = [
    (e, {"loss": 1.5, "lr": 0.01, "train_adv_acc": 0.4, "val_clean_acc": 0.8, "val_pgd_acc": 0.3 + 0.1 * e})
    for e in range(2)
]
TRADES = [(e, {"loss": 1.1 - 0.1 * e, "lr": 0.05}) for e in range(3)]  # TRADES logs no train_adv_acc


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _axes(fig: Figure | None) -> dict[str, object]:
    assert fig is not None
    return {ax.get_title(): ax for ax in fig.axes}


def _whole_ticks(ax: object) -> bool:
    ticks = ax.get_xticks()  # type: ignore[attr-defined]
    low, high = ax.get_xlim()  # type: ignore[attr-defined]
    shown = [t for t in ticks if low <= t <= high]
    return bool(shown) and all(float(t).is_integer() for t in shown)


def test_without_a_validation_split_no_title_names_one() -> None:
    axes = _axes(training_figure({"pretrain": PRETRAIN, "prune": SEARCH, "finetune": PRETRAIN[:1]}))
    assert set(axes) == {"robust training loss", "robust (PGD) accuracy: training batches"}
    for ax in axes.values():
        assert "validation" not in ax.get_title() and ax.get_xlabel() == "epoch"  # type: ignore[attr-defined]
        assert _whole_ticks(ax), ax.get_xticks()  # type: ignore[attr-defined]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]  # type: ignore[attr-defined]
        assert not [label for label in labels if "validation" in label]
    assert axes["robust training loss"].get_ylabel() == "loss"  # type: ignore[attr-defined]
    assert axes["robust (PGD) accuracy: training batches"].get_ylabel() == "accuracy under attack"  # type: ignore[attr-defined]
    # the mask search's robust loss is plotted with the training losses
    labels = [t.get_text() for t in axes["robust training loss"].get_legend().get_texts()]  # type: ignore[attr-defined]
    assert labels == ["pretrain", "prune", "finetune"]


def test_a_validation_split_is_named_when_it_was_measured() -> None:
    axes = _axes(training_figure({"pretrain": PRETRAIN, "finetune": FINETUNE_VAL}))
    accuracy = axes["robust (PGD) accuracy: training batches and validation split"]
    labels = [t.get_text() for t in accuracy.get_legend().get_texts()]  # type: ignore[attr-defined]
    assert labels == ["pretrain (training batches)", "finetune (training batches)", "finetune (validation split)"]
    validation = accuracy.get_lines()[-1]  # type: ignore[attr-defined]
    assert list(validation.get_xdata()) == [1, 2] and list(validation.get_ydata()) == pytest.approx([0.3, 0.4])


def test_with_no_robust_accuracy_recorded_only_the_loss_is_drawn(tmp_path: Path) -> None:
    axes = _axes(training_figure({"pretrain": TRADES}))
    assert list(axes) == ["robust training loss"]
    assert _whole_ticks(axes["robust training loss"])
    path = plot_training({"pretrain": TRADES}, tmp_path / "training.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_training({}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
