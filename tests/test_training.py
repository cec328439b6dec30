"""Attacks and adversarial training on real digits data (no mocks)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from robprune_deploy.attacks import RobustLoss, ThreatModel, fgsm, mart_objective, pgd, trades_loss
from robprune_deploy.checkpoints import load_model_weights, save_checkpoint
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.errors import CheckpointError
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, accuracy, adversarial_train

CPU = torch.device("cpu")
THREAT = ThreatModel(eps=0.2, step_size=0.05, steps=7)


def new_model(digits: DatasetBundle, name: str = "digits_cnn") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, digits.num_classes, 1, digits.mean, digits.std)


@pytest.fixture(scope="module")
def undefended(digits: DatasetBundle) -> torch.nn.Module:
    """Standard (non-adversarial) training: eps 0 makes PGD-AT plain cross-entropy."""
    model = new_model(digits)
    adversarial_train(
        model,
        TrainingPlan(epochs=4, lr=0.05),
        ThreatModel(0.0, 0.01, 0),
        lambda e: make_loader(digits.train, 32, shuffle=True, epoch=e),
        device=CPU,
        show_progress=False,
    )
    return model


def test_pgd_and_fgsm_lower_accuracy_of_an_undefended_model(digits: DatasetBundle, undefended: torch.nn.Module) -> None:
    batches = list(make_loader(digits.test, 150, shuffle=False))
    clean = accuracy(undefended, batches, CPU)
    robust = accuracy(undefended, batches, CPU, THREAT.with_steps(20))
    x, y = batches[0]
    undefended.eval()
    fgsm_acc = float((undefended(fgsm(undefended, x, y, 0.2)).argmax(1) == y).float().mean())
    assert clean > 0.85
    assert robust < 0.2 < clean - 0.5
    assert fgsm_acc < clean - 0.3


def test_pgd_stays_in_the_ball_and_the_pixel_range(digits: DatasetBundle, undefended: torch.nn.Module) -> None:
    x, y = next(iter(make_loader(digits.test, 64, shuffle=False)))
    x_adv = pgd(undefended, x, y, THREAT)
    assert float((x_adv - x).abs().max()) <= THREAT.eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert all(p.requires_grad for p in undefended.parameters())


def test_trades_loss_is_at_least_the_clean_cross_entropy(digits: DatasetBundle, undefended: torch.nn.Module) -> None:
    x, y = next(iter(make_loader(digits.test, 64, shuffle=False)))
    torch.manual_seed(0)
    loss = trades_loss(undefended, x, y, THREAT, beta=6.0)
    clean = torch.nn.functional.cross_entropy(undefended(x), y)
    assert loss.item() > clean.item()


def test_mart_objective_equals_the_hand_computed_value() -> None:
    """MART (Wang et al. 2020) on two examples of three classes, written out with math alone."""
    clean = [[2.0, 1.0, 0.0], [0.5, 0.0, 1.5]]
    adv = [[0.5, 1.5, 0.0], [0.0, 1.0, 0.2]]
    labels, beta = [0, 2], 6.0

    def softmax(row: list[float]) -> list[float]:
        exps = [math.exp(v) for v in row]
        return [e / sum(exps) for e in exps]

    total = 0.0
    for c, a, y in zip(clean, adv, labels, strict=True):
        p, q = softmax(c), softmax(a)
        runner_up = max(q[k] for k in range(3) if k != y)
        bce = -math.log(q[y]) - math.log(1 - runner_up)
        kl = sum(p[k] * math.log(p[k] / q[k]) for k in range(3))
        total += bce + beta * kl * (1 - p[y])
    expected = total / 2
    got = mart_objective(torch.tensor(clean), torch.tensor(adv), torch.tensor(labels), beta)
    assert got.item() == pytest.approx(expected, abs=1e-3)  # MART's reference adds 1e-4 inside log(1 - p)
    assert expected > 1.0  # the boosted term and the weighted KL both count: not a degenerate example


def pgd_loss_gap(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(PGD-7 cross-entropy minus clean cross-entropy, clean accuracy)."""
    model.eval()
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, THREAT)
    with torch.no_grad():
        gap = torch.nn.functional.cross_entropy(model(x_adv), y) - torch.nn.functional.cross_entropy(model(x), y)
        return gap.item(), float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("loss", [RobustLoss.TRADES, RobustLoss.MART])
def test_robust_losses_shrink_the_pgd_loss_gap_of_an_undefended_model(
    digits: DatasetBundle, undefended: torch.nn.Module, loss: RobustLoss
) -> None:
    """One short epoch of TRADES or MART fine-tuning cuts the gap between the PGD and the clean
    cross-entropy of a standard-trained model by more than half; MART keeps clean accuracy."""
    x, y = next(iter(make_loader(digits.test, 256, shuffle=False)))
    before, _ = pgd_loss_gap(undefended, x, y)
    model = copy.deepcopy(undefended)
    subset = TensorDataset(*(t[:512] for t in digits.train.tensors))  # type: ignore[attr-defined]
    adversarial_train(
        model,
        TrainingPlan(epochs=1, lr=0.002, loss=loss),
        ThreatModel(0.2, 0.07, 3),
        lambda e: make_loader(subset, 32, shuffle=True, epoch=e),
        device=CPU,
        show_progress=False,
    )
    after, clean = pgd_loss_gap(model, x, y)
    assert after < 0.5 * before, (before, after)
    if loss is RobustLoss.MART:
        assert clean > 0.8


def test_resume_from_checkpoint_gives_the_same_weights(digits: DatasetBundle, tmp_path: Path) -> None:
    subset = TensorDataset(*(t[:256] for t in digits.train.tensors))  # type: ignore[attr-defined]
    plan = TrainingPlan(epochs=3, lr=0.05, loss=RobustLoss.TRADES)
    threat = ThreatModel(0.2, 0.05, 3)

    def loader(epoch: int) -> torch.utils.data.DataLoader:
        return make_loader(subset, 32, shuffle=True, seed=3, epoch=epoch)

    straight = new_model(digits)
    adversarial_train(straight, plan, threat, loader, device=CPU, seed=3, stage="pretrain", show_progress=False)

    interrupted = new_model(digits)

    def crashing_loader(epoch: int) -> torch.utils.data.DataLoader:
        if epoch == 2:
            raise KeyboardInterrupt  # the process dies after two completed epochs
        return loader(epoch)

    with pytest.raises(KeyboardInterrupt):
        adversarial_train(
            interrupted,
            plan,
            threat,
            crashing_loader,
            device=CPU,
            seed=3,
            checkpoint_dir=tmp_path,
            stage="pretrain",
            show_progress=False,
        )
    resumed = new_model(digits)
    adversarial_train(
        resumed,
        plan,
        threat,
        loader,
        device=CPU,
        seed=3,
        checkpoint_dir=tmp_path,
        stage="pretrain",
        resume=True,
        show_progress=False,
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_checkpoint_of_another_architecture_is_refused(digits: DatasetBundle, tmp_path: Path) -> None:
    path = save_checkpoint({"model": new_model(digits, "digits_resnet").state_dict()}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match=r"resnet.pt: does not fit the model architecture"):
        load_model_weights(new_model(digits), path)


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model_weights(torch.nn.Linear(2, 2), path)
