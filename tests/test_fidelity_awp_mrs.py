"""Faithfulness to the papers' pipelines: AWP fine-tuning (S2AP's) and the MRPF module robustness
sensitivity (weight-perturbation reading, after RiFT)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from robprune_mrpf.sensitivity import group_kernels, weight_perturbation_sensitivity
from torch import nn
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.attacks import RobustLoss, craft_adversarial
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.errors import RecipeError
from robprune_deploy.masking import apply_masks, fold_masks, masks_of
from robprune_deploy.pipeline.stages import plan_of
from robprune_deploy.recipe import validate_recipe
from robprune_deploy.surgery import ChannelGroups
from robprune_deploy.training import AWPPlan, TrainingPlan, adversarial_train
from robprune_deploy.training.awp import perturb_weights, perturbed_weights

NO_ATTACK = ThreatModel(0.0, 0.01, 0, random_start=False)
THREAT = ThreatModel(0.2, 0.07, 3)


class TwoScalars(nn.Module):
    """``z = b * (a * x)``, logits ``[z, -z]``: two layers of one scalar weight each."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.first = nn.Linear(1, 1, bias=False)
        self.second = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.first.weight.fill_(a)
            self.second.weight.fill_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.second(self.first(x))
        return torch.cat([z, -z], dim=1)


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def gradients(a: float, b: float, x: float = 1.0) -> tuple[float, float]:
    """By hand, for label 0: ``L = log(1 + exp(-2abx))``, ``dL/dz = -2 sigmoid(-2z)``, ``z = abx``."""
    dz = -2 * sigmoid(-2 * a * b * x)
    return dz * b * x, dz * a * x


@pytest.mark.parametrize("base", [RobustLoss.PGD_AT, RobustLoss.TRADES])
@pytest.mark.parametrize("warmup", [0, 1])
def test_awp_step_matches_the_hand_computed_two_parameter_case(base: RobustLoss, warmup: int) -> None:
    a, b, gamma, lr = 2.0, -0.5, 0.1, 0.1
    model = TwoScalars(a, b)
    plan = TrainingPlan(1, lr, momentum=0.0, weight_decay=0.0, loss=base, awp=AWPPlan(gamma, warmup))
    batch = [(torch.tensor([[1.0]]), torch.tensor([0]))]
    adversarial_train(model, plan, NO_ATTACK, lambda e: batch, device=torch.device("cpu"), show_progress=False)

    g_a, g_b = gradients(a, b)  # 0.8808, -3.5232: opposite signs
    if warmup == 0:
        # Layer-wise relative ascent: v_l = ||w_l|| * g_l / ||g_l|| = |w_l| * sign(g_l) for a scalar.
        a_up, b_up = a + gamma * abs(a) * math.copysign(1, g_a), b + gamma * abs(b) * math.copysign(1, g_b)
        assert (a_up, b_up) == pytest.approx((2.2, -0.55))
        g_a, g_b = gradients(a_up, b_up)  # the step uses the gradient at w + gamma * v ...
    # ... and is applied to w itself (the perturbation is taken off again).
    assert float(model.first.weight.detach()) == pytest.approx(a - lr * g_a, abs=1e-6)
    assert float(model.second.weight.detach()) == pytest.approx(b - lr * g_b, abs=1e-6)


def magnitude_masks(model: nn.Module, keep: float) -> dict[str, torch.Tensor]:
    """Keep the ``keep`` fraction of largest-magnitude entries of every kernel."""
    masks = {}
    for name, p in model.named_parameters():
        if p.ndim > 1:
            threshold = p.detach().abs().flatten().kthvalue(int((1 - keep) * p.numel())).values
            masks[name] = p.detach().abs() > threshold
    return masks


def test_awp_never_moves_pruned_weights(digits: DatasetBundle, robust_cnn: nn.Module) -> None:
    masks = magnitude_masks(robust_cnn, 0.3)
    apply_masks(robust_cnn, masks)
    x, y = (t[:32] for t in digits.train.tensors)  # type: ignore[attr-defined]
    robust_cnn.train()
    x_adv = craft_adversarial(robust_cnn, x, y, THREAT, RobustLoss.PGD_AT)
    perturbation = perturb_weights(robust_cnn, x, y, x_adv, RobustLoss.PGD_AT, 0.05)
    weights = perturbed_weights(robust_cnn)
    assert {n for n, _, _ in weights} == {n.replace(".weight", ".parametrizations.weight.original") for n in masks}
    for (name, p, mask), delta in zip(weights, perturbation.deltas, strict=True):
        assert mask is not None
        assert bool((delta[~mask] == 0).all()), name  # pruned entries are not perturbed ...
        assert bool((delta[mask] != 0).any()), name
        kept_norm = float((p.detach() - delta)[mask].norm())  # ... and the radius is the kept weights' norm
        assert float(delta.norm()) == pytest.approx(0.05 * kept_norm, rel=1e-4), name
    perturbation.restore()

    originals = {n: p.detach().clone() for n, p, _ in weights}
    plan = TrainingPlan(1, 0.05, weight_decay=0.0, awp=AWPPlan(0.05))
    loader = make_loader(TensorDataset(*(t[:96] for t in digits.train.tensors)), 32, shuffle=True)  # type: ignore[attr-defined]
    adversarial_train(robust_cnn, plan, THREAT, lambda e: loader, device=torch.device("cpu"), show_progress=False)
    for name, p, mask in perturbed_weights(robust_cnn):
        assert mask is not None
        assert torch.equal(p.detach()[~mask], originals[name][~mask]), name  # bit for bit
        assert not torch.equal(p.detach()[mask], originals[name][mask]), name  # the kept ones trained
    final_masks = masks_of(robust_cnn)
    fold_masks(robust_cnn)
    for name, mask in final_masks.items():
        assert bool((robust_cnn.get_parameter(name)[~mask] == 0).all()), name


def test_recipe_awp_reaches_the_training_plan_and_the_search_keeps_the_base_loss() -> None:
    recipe = validate_recipe({"finetune": {"loss": "awp", "awp_base": "trades", "awp_gamma": 0.01, "awp_warmup": 2}})
    plan = plan_of(recipe.finetune)
    assert plan.loss is RobustLoss.TRADES and plan.awp == AWPPlan(0.01, 2)
    assert recipe.finetune.robust_loss is RobustLoss.TRADES
    plain = validate_recipe({"finetune": {"loss": "mart", "awp_gamma": 0.01}})
    assert plan_of(plain.finetune).awp is None and plan_of(plain.finetune).loss is RobustLoss.MART
    assert plan_of(plain.pretrain).awp is None
    default = validate_recipe({"finetune": {"loss": "awp"}}).finetune
    assert (default.awp_base, default.awp_gamma, default.awp_warmup) == (RobustLoss.PGD_AT, 0.005, 0)
    with pytest.raises(RecipeError) as info:
        validate_recipe({"finetune": {"loss": "awq"}})
    assert str(info.value) == (
        "<recipe>: finetune.loss: Input should be 'pgd_at', 'trades', 'mart' or 'awp' (got 'awq')"
    )


def calibration(digits: DatasetBundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(make_loader(TensorDataset(*(t[:64] for t in digits.train.tensors)), 32, shuffle=False))  # type: ignore[attr-defined]


DIGITS_CNN_GROUPS = ["body.features.0", "body.features.3", "body.features.7", "body.features.10", "body.classifier.1"]
"""The prunable groups of the digits CNN in forward order (its classifier output layer is never pruned)."""


def test_weight_perturbation_mrs_is_the_default_and_positive_and_a_silenced_group_drops_below_its_consumers(
    digits: DatasetBundle, robust_cnn: nn.Module
) -> None:
    groups = ChannelGroups(robust_cnn, digits.test.tensors[0][:1])  # type: ignore[attr-defined]
    batches = calibration(digits)
    mrs = weight_perturbation_sensitivity(robust_cnn, groups, batches, THREAT, 0.1, 3, 0)
    assert sorted(mrs) == sorted(DIGITS_CNN_GROUPS)
    assert all(math.isfinite(v) and v > 0 for v in mrs.values()), mrs

    # The MRPF algorithm uses it by default, on the same calibration set.
    context = PruningContext(
        train_data=batches,
        ratio=0.5,
        threat=THREAT,
        example_inputs=digits.test.tensors[0][:1],  # type: ignore[attr-defined]
    )
    mrpf = ALGORITHMS.get("mrpf")
    result = mrpf(mrpf.Config.model_validate({"calibration_size": 64, "perturbation_steps": 3})).apply(
        copy.deepcopy(robust_cnn), context
    )
    assert result.extra["mrs"] == pytest.approx(mrs, rel=1e-9)

    # Scale the most sensitive group's kernels to near zero: its BatchNorm (eval statistics) then
    # passes almost nothing of it on, and a ball relative to its tiny norm can hardly move the loss.
    # The groups upstream fall silent with it (their signal goes through it); the groups downstream
    # still carry the loss, so the silenced group must now rank far below every one of them.
    most = max(mrs, key=mrs.__getitem__)
    downstream = DIGITS_CNN_GROUPS[DIGITS_CNN_GROUPS.index(most) + 1 :]
    assert downstream, f"{most} is the last group: nothing to compare with"
    with torch.no_grad():
        for kernel in group_kernels(robust_cnn, groups.by_name()[most]):
            kernel.mul_(1e-3)
    silenced = weight_perturbation_sensitivity(robust_cnn, groups, batches, THREAT, 0.1, 3, 0)
    assert silenced[most] < mrs[most] / 100
    assert all(silenced[most] < silenced[name] / 100 for name in downstream), silenced


def test_weight_perturbation_mrs_is_invariant_to_a_function_preserving_rescale(
    digits: DatasetBundle, robust_cnn: nn.Module
) -> None:
    """The ball is relative: multiplying a conv's kernel by 100 and its BatchNorm's running mean by
    100 and variance by 100^2 computes the same function and must give the same MRS everywhere
    (an absolute radius would make that group 100 times less sensitive)."""
    groups = ChannelGroups(robust_cnn, digits.test.tensors[0][:1])  # type: ignore[attr-defined]
    batches = calibration(digits)
    before = weight_perturbation_sensitivity(robust_cnn, groups, batches, THREAT, 0.1, 3, 0)
    conv, bn = robust_cnn.get_submodule("body.features.7"), robust_cnn.get_submodule("body.features.8")
    with torch.no_grad():
        conv.weight.mul_(100)
        bn.running_mean.mul_(100)
        bn.running_var.mul_(100**2)
    after = weight_perturbation_sensitivity(robust_cnn, groups, batches, THREAT, 0.1, 3, 0)
    # Equal up to float rounding, which PGD's sign steps amplify (0.3% seen with 2 threads); an
    # absolute radius would be off by a factor near 100.
    assert after == pytest.approx(before, rel=2e-2)
