"""Fast adversarial training (FGSM-RS) and its catastrophic-overfitting guard; the in-place attack loop
gives the textbook loop's examples bit for bit; the training step no longer runs an extra forward pass."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from clitools import sets  # type: ignore[import-not-found]
from conftest import LinearClassifier  # type: ignore[import-not-found]
from torch import nn

from robprune_deploy.attacks import RobustLoss, ThreatModel, craft_adversarial, pgd
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.models import build_model
from robprune_deploy.recipe import Recipe
from robprune_deploy.training import (
    CollapseGuard,
    FastATPlan,
    OnCollapse,
    TrainingPlan,
    adversarial_train,
    fgsm_rs,
)

CPU = torch.device("cpu")
THREAT = ThreatModel(0.2, 0.05, 3)


def textbook_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The attack loop as it was before it updated one buffer in place (a new tensor every step)."""
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target))
    x = x.detach()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        if threat.random_start:
            delta = torch.empty_like(x).uniform_(-threat.eps, threat.eps)
            x_adv = (x + delta).clamp(0.0, 1.0)
        else:
            x_adv = x.clone()
        for _ in range(threat.steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(model(x_adv).float(), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + threat.step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - threat.eps), x + threat.eps).clamp(0.0, 1.0)
    finally:
        for p in params:
            p.requires_grad_(True)
    return x_adv.detach()


def digits_cnn(digits: DatasetBundle, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("digits_cnn", digits.num_classes, 1, digits.mean, digits.std)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("random_start", [True, False])
def test_the_in_place_attack_loop_gives_the_textbook_examples_bit_for_bit(
    digits: DatasetBundle, robust_cnn: nn.Module, training: bool, random_start: bool
) -> None:
    # Digits hold many pixels at exactly 0 and 1, where the projection's clamps decide.
    x, y = next(iter(make_loader(digits.test, 64, shuffle=False)))
    threat = ThreatModel(0.2, 0.05, 5, random_start=random_start)
    robust_cnn.train(training)
    for seed in range(3):
        twin = copy.deepcopy(robust_cnn)  # train-mode passes move BatchNorm statistics: one copy each
        torch.manual_seed(seed)
        ours = pgd(robust_cnn, x, y, threat)
        torch.manual_seed(seed)
        reference = textbook_pgd(twin, x, y, threat)
        assert torch.equal(ours, reference), seed
        for a, b in zip(robust_cnn.state_dict().values(), twin.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert all(p.requires_grad for p in robust_cnn.parameters())


@pytest.mark.parametrize("kind", [RobustLoss.TRADES, RobustLoss.MART])
def test_trades_and_mart_crafts_are_unchanged_by_the_in_place_loop(
    digits: DatasetBundle, robust_cnn: nn.Module, kind: RobustLoss
) -> None:
    x, y = next(iter(make_loader(digits.test, 48, shuffle=False)))
    torch.manual_seed(1)
    ours = craft_adversarial(robust_cnn, x, y, THREAT, kind)
    # The same crafts written with the textbook loop: eval mode, small Gaussian start, then projection.
    robust_cnn.eval()
    torch.manual_seed(1)
    start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    inner = ThreatModel(THREAT.eps, THREAT.step_size, THREAT.steps, random_start=False)
    if kind is RobustLoss.TRADES:
        with torch.no_grad():
            p_clean = F.softmax(robust_cnn(x), dim=1)
        reference = textbook_pgd(
            robust_cnn, start, y, inner, lambda z, _: F.kl_div(F.log_softmax(z, dim=1), p_clean, reduction="batchmean")
        )
    else:
        reference = textbook_pgd(robust_cnn, start, y, inner)
    reference = torch.min(torch.max(reference, x - THREAT.eps), x + THREAT.eps).clamp(0, 1)
    assert torch.equal(ours, reference)


def test_fgsm_rs_is_the_hand_computed_step_on_a_linear_model() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 6)
    model = LinearClassifier(weight.clone())
    x = torch.rand(4, 6)
    x[0, :2] = torch.tensor([0.0, 1.0])  # pixels at the ends of the range: the clamp decides there
    y = torch.tensor([0, 1, 2, 1])
    eps, alpha = 0.1, 1.25
    torch.manual_seed(7)
    ours = fgsm_rs(model, x, y, eps, alpha)
    # By hand: the same uniform start, then the cross-entropy gradient of a linear model,
    # d/dx mean_i CE(W x_i, y_i) = (softmax(W x_i) - onehot(y_i)) W / n, whose sign is the step.
    torch.manual_seed(7)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    probabilities = torch.softmax(start @ weight.T, dim=1)
    gradient = (probabilities - F.one_hot(y, 3).float()) @ weight / len(y)
    stepped = start + alpha * eps * gradient.sign()
    expected = torch.min(torch.max(stepped, x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6)
    assert float((ours - x).abs().max()) <= eps + 1e-6
    # The step is 1.25 eps from the start, so some coordinates end on the ball's boundary.
    assert bool(((ours - x).abs() > eps - 1e-6).any())


def test_fast_plan_is_a_one_step_pgd_with_uniform_start() -> None:
    threat = FastATPlan().threat(ThreatModel(0.1, 0.025, 10))
    assert (threat.eps, threat.step_size, threat.steps, threat.random_start) == (0.1, pytest.approx(0.125), 1, True)
    assert FastATPlan(alpha=2.0).threat(ThreatModel(0.8, 0.1, 7)).step_size == 1.0  # capped to the pixel range
    with pytest.raises(ValueError, match="not trades"):
        TrainingPlan(epochs=1, lr=0.1, loss=RobustLoss.TRADES, fast=FastATPlan())


def make_guard(**options: object) -> CollapseGuard:
    batch = (torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long))
    return CollapseGuard(batch, THREAT, **options)  # type: ignore[arg-type]


def test_the_guard_flags_a_drop_below_the_best_and_a_pgd_far_below_fgsm() -> None:
    guard = make_guard(drop=0.2, gap=0.3)
    assert guard.observe(0, 0.30, 0.40) == (True, None)
    assert guard.observe(1, 0.45, 0.55) == (True, None)
    assert guard.observe(2, 0.40, 0.50) == (False, None)  # a dip within the tolerance
    improved, reason = guard.observe(3, 0.20, 0.50)  # 0.25 below the best: the drop rule
    assert not improved and reason is not None and "below its best (0.450)" in reason
    assert (guard.best_epoch, guard.best_pgd_acc, guard.collapsed_epoch) == (1, 0.45, 3)
    # Collapse before PGD accuracy was ever high: only the gap to FGSM shows it.
    early = make_guard(drop=0.2, gap=0.3)
    assert early.observe(0, 0.10, 0.20) == (True, None)
    improved, reason = early.observe(1, 0.02, 0.70)
    assert not improved and reason is not None and "FGSM accuracy 0.700" in reason
    # Either rule can be turned off.
    assert make_guard(drop=None, gap=None).collapse_reason(0.0, 1.0) is None
    lenient = make_guard(drop=None, gap=0.3)
    lenient.observe(0, 0.9, 0.9)
    assert lenient.collapse_reason(0.1, 0.3) is None


class ScriptedGuard(CollapseGuard):
    """A guard whose measurements are given: the training around it is real, the collapse is injected."""

    def __init__(self, script: list[tuple[float, float]], **options: object) -> None:
        super().__init__((torch.zeros(1, 1, 16, 16), torch.zeros(1, dtype=torch.long)), THREAT, **options)  # type: ignore[arg-type]
        self.script = list(script)
        self.measured = 0

    def measure(self, model: nn.Module) -> tuple[float, float]:
        self.measured += 1
        return self.script.pop(0)


class CountingNet(nn.Module):
    """A real digits CNN that counts its train-mode forward passes (attack and loss passes)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.passes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += int(self.training)
        return self.body(x)


COLLAPSE = [(0.30, 0.35), (0.40, 0.45), (0.05, 0.60), (0.5, 0.5)]
"""Epoch 1 is the best; epoch 2 collapses (0.35 below the best, and 0.55 below FGSM)."""


def train_fast(
    digits: DatasetBundle,
    guard: CollapseGuard,
    epochs: int = 4,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    model: CountingNet | None = None,
) -> tuple[nn.Module, list[dict[str, float]], list[dict[str, torch.Tensor]], list[int]]:
    """``(model, per-epoch metrics, per-epoch weights, per-epoch train-mode passes)`` of FGSM-RS pretraining."""
    net = model if model is not None else CountingNet(digits_cnn(digits))
    data = torch.utils.data.TensorDataset(*(t[:96] for t in digits.train.tensors))  # type: ignore[attr-defined]
    metrics: list[dict[str, float]] = []
    weights: list[dict[str, torch.Tensor]] = []
    passes: list[int] = []

    def record(epoch: int, values: dict[str, float]) -> None:
        metrics.append(values)
        weights.append({k: v.clone() for k, v in net.state_dict().items()})
        passes.append(net.passes)

    adversarial_train(
        net,
        TrainingPlan(epochs=epochs, lr=0.05, fast=FastATPlan()),
        ThreatModel(0.2, 0.05, 4),
        lambda e: make_loader(data, 32, shuffle=True, epoch=e),
        device=CPU,
        stage="pretrain",
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        on_epoch_end=record,
        show_progress=False,
        guard=guard,
    )
    return net, metrics, weights, passes


def test_a_collapse_stops_training_with_the_best_epochs_weights(digits: DatasetBundle) -> None:
    guard = ScriptedGuard(COLLAPSE, on_collapse=OnCollapse.STOP)
    model, metrics, weights, passes = train_fast(digits, guard)
    assert len(metrics) == 3 and guard.measured == 3  # epoch 3 never ran
    assert guard.collapsed_epoch == 2 and guard.best_epoch == 1
    assert metrics[2]["fast_collapsed"] == 1.0 and "fast_collapsed" not in metrics[1]
    assert metrics[2]["guard_pgd_acc"] == 0.05 and metrics[2]["guard_fgsm_acc"] == 0.60
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[1][key]), key  # the best epoch's weights, not the collapsed ones
    assert not torch.equal(weights[1]["body.body.classifier.3.weight"], weights[0]["body.body.classifier.3.weight"])
    # FGSM-RS: per batch one attack pass and one loss pass (3 batches per epoch), no third pass.
    assert passes[0] == 3 * 2


def test_a_collapse_falls_back_to_pgd_from_the_best_epoch(digits: DatasetBundle) -> None:
    guard = ScriptedGuard(COLLAPSE, on_collapse=OnCollapse.PGD)
    model, metrics, weights, passes = train_fast(digits, guard, epochs=5)
    assert len(metrics) == 5 and guard.measured == 3  # no guard once PGD-AT took over
    for key, value in weights[2].items():
        assert torch.equal(value, weights[1][key]), key  # epoch 2 ended with epoch 1's weights restored
    per_epoch = [b - a for a, b in zip([0, *passes], passes, strict=False)]
    assert per_epoch == [6, 6, 6, 3 * (4 + 1), 3 * (4 + 1)]  # FGSM-RS, then PGD-4: 4 attack passes + the loss's
    assert "guard_pgd_acc" not in metrics[3]
    assert not torch.equal(
        model.state_dict()["body.body.classifier.3.weight"], weights[1]["body.body.classifier.3.weight"]
    )


def test_a_run_resumed_after_the_fallback_ends_where_the_uninterrupted_run_ends(
    digits: DatasetBundle, tmp_path: Path
) -> None:
    whole, _, _, _ = train_fast(digits, ScriptedGuard(COLLAPSE, on_collapse=OnCollapse.PGD), epochs=5)
    # The same run interrupted after its 4th epoch (checkpoint written), then resumed from another init.
    folder = tmp_path / "checkpoints"
    interrupted = CountingNet(digits_cnn(digits))

    class Interrupt(Exception):
        pass

    def stop_at_last_epoch(epoch: int, values: dict[str, float]) -> None:
        if epoch == 3:
            raise Interrupt

    data = torch.utils.data.TensorDataset(*(t[:96] for t in digits.train.tensors))  # type: ignore[attr-defined]
    plan = TrainingPlan(epochs=5, lr=0.05, fast=FastATPlan())
    threat = ThreatModel(0.2, 0.05, 4)
    with pytest.raises(Interrupt):
        adversarial_train(
            interrupted,
            plan,
            threat,
            lambda e: make_loader(data, 32, shuffle=True, epoch=e),
            device=CPU,
            stage="pretrain",
            checkpoint_dir=folder,
            on_epoch_end=stop_at_last_epoch,
            show_progress=False,
            guard=ScriptedGuard(COLLAPSE, on_collapse=OnCollapse.PGD),
        )
    assert (folder / "pretrain_fast_best.pt").is_file()
    resumed_guard = ScriptedGuard([], on_collapse=OnCollapse.PGD)  # a resumed run measures nothing more
    resumed, _, _, _ = train_fast(
        digits, resumed_guard, epochs=5, checkpoint_dir=folder, resume=True, model=CountingNet(digits_cnn(digits, 5))
    )
    assert resumed_guard.collapsed_epoch == 2 and resumed_guard.best_epoch == 1
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_the_pretrain_section_takes_fgsm_rs_and_finetune_does_not() -> None:
    from robprune_deploy.errors import RobPruneError
    from robprune_deploy.pipeline.stages import plan_of

    recipe = Recipe.model_validate(
        {"pretrain": {"loss": "fgsm_rs", "fgsm_alpha": 1.0, "fgsm_on_collapse": "pgd", "channels_last": True}}
    )
    plan = plan_of(recipe.pretrain)
    assert plan.loss is RobustLoss.PGD_AT and plan.fast == FastATPlan(1.0) and plan.channels_last
    assert recipe.pretrain.model_dump(mode="json")["loss"] == "fgsm_rs"
    assert plan_of(Recipe().pretrain).fast is None
    with pytest.raises((ValueError, RobPruneError), match=r"finetune\.loss"):
        Recipe.model_validate({"finetune": {"loss": "fgsm_rs"}})


def test_channels_last_training_matches_the_default_layout_and_hands_back_a_contiguous_model(
    digits: DatasetBundle,
) -> None:
    # Without an attack: PGD's sign() would turn last-bit differences into whole steps.
    data = torch.utils.data.TensorDataset(*(t[:64] for t in digits.train.tensors))  # type: ignore[attr-defined]
    models, start = [], {}
    for channels_last in (False, True):
        model = digits_cnn(digits)
        start = {key: value.clone() for key, value in model.state_dict().items()}
        adversarial_train(
            model,
            TrainingPlan(epochs=1, lr=0.05, channels_last=channels_last),
            ThreatModel(0.0, 0.05, 0),
            lambda e: make_loader(data, 32, shuffle=True, epoch=e),
            device=CPU,
            show_progress=False,
        )
        models.append(model)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        assert b.is_contiguous(), key
        if not a.is_floating_point():
            assert torch.equal(a, b), key
            continue
        # The same algorithm, other rounding: kernels of the two layouts sum in other orders (and,
        # with several threads, break max-pool near-ties differently), measured at up to 1% of what
        # training moved a tensor; a layout bug moves it by a whole update.
        moved = float((a - start[key]).norm())
        assert float((a - b).norm()) <= 0.05 * moved + 1e-7, key


def test_the_pretrain_stage_runs_fgsm_rs_with_its_guard_on_the_validation_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from robprune_deploy.cli.main import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"
    options = [
        "pretrain.loss=fgsm_rs",
        "pretrain.epochs=2",
        "pretrain.fgsm_guard_examples=64",
        "data.train_subset=192",
        "data.val_size=100",
        "attack.val_steps=2",
        "attack.eval_steps=2",
        "evaluate.num_examples=40",
        "tracking.enabled=false",
    ]
    capsys.readouterr()
    assert main(["pretrain", str(recipe), "--out", str(tmp_path / "out"), "--quiet", *sets(*options)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pretrain.fast_collapsed_epoch"] == -1
    assert (tmp_path / "out" / "checkpoints" / "pretrain_fast_best.pt").is_file()
    assert 0.0 <= summary["val.dense_pgd_acc"] <= summary["val.dense_clean_acc"] <= 1.0
