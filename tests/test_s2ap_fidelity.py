"""S2AP/HYDRA against the papers' pipelines: the search's own loss (TRADES, as HYDRA's trainer/adv.py),
BatchNorm's affine parameters trained in the search, the calibrated radius, the score-space Hessian
and the cross-run mask distance."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from clitools import RECIPES, cli, one_error, sets
from robprune_s2ap import HYDRA, HydraConfig, S2APConfig
from robprune_s2ap.scores import top_k_mask
from robprune_s2ap.search import search_objective
from robprune_s2ap.setup_scores import attach_channel, attach_unstructured
from robprune_s2ap.sharpness import top_hessian_eigenvalue
from robprune_s2ap.stability import final_masks, load_masks, mask_distance, mask_hamming, mask_sha256
from torch import nn
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, PruningResult, ThreatModel
from robprune_deploy.attacks import RobustLoss
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.surgery import ChannelGroups

THREAT = ThreatModel(0.2, 0.07, 2)  # tests/test_s2ap.py's budget


def context(digits: DatasetBundle, ratio: float, *, seed: int = 0, batches: int = 6) -> PruningContext:
    data = TensorDataset(*(t[: 32 * batches] for t in digits.train.tensors))  # type: ignore[attr-defined]
    return PruningContext(
        train_data=make_loader(data, 32, shuffle=True, seed=seed),
        epoch_loader=lambda e: make_loader(data, 32, shuffle=True, seed=seed, epoch=e),
        ratio=ratio,
        threat=THREAT,
        example_inputs=digits.test[0][0].unsqueeze(0),
        seed=seed,
    )


def run(name: str, model: nn.Module, ctx: PruningContext, **options: object) -> PruningResult:
    cls = ALGORITHMS.get(name)
    config = {"hessian_eigenvalue": False, **options}  # measured where a test is about it
    return cls(cls.Config.model_validate(config)).apply(model, ctx)


def _two_layer() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.rand(16, 5, dtype=torch.float64)
    x_adv = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)  # fixed: the objective, not the attack, is tested
    return model, x, torch.randint(0, 3, (16,)), x_adv


def _ste(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """HYDRA's GetSubnet written out: hard top-k forward, identity backward to |s|."""
    magnitude = scores.abs()
    return top_k_mask(scores, keep).to(scores.dtype) + magnitude - magnitude.detach()


@pytest.mark.parametrize("kind", ["trades", "pgd_at"])
def test_the_search_objective_is_the_chosen_loss_with_its_own_beta(kind) -> None:
    model, x, y, x_adv = _two_layer()
    w1, b1, w2, b2 = (p.detach().clone() for p in model.parameters())
    score_set = attach_unstructured(model, 0.5, "local", None)
    score_set.refresh()
    settings = HYDRA(HydraConfig(search_loss=RobustLoss(kind), search_trades_beta=2.5)).search_settings()
    scores = list(score_set.parameters())
    ours = torch.autograd.grad(search_objective(model, x, y, x_adv, settings), scores)

    s1, s2 = (s.detach().clone().requires_grad_(True) for s in scores)

    def logits(inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(F.linear(inputs, w1 * _ste(s1, 15), b1))
        return F.linear(hidden, w2 * _ste(s2, 9), b2)

    if kind == "trades":
        clean, adv = logits(x), logits(x_adv)
        p_clean = F.softmax(clean, dim=1)
        kl = (p_clean * (F.log_softmax(clean, dim=1) - F.log_softmax(adv, dim=1))).sum(dim=1).mean()
        reference = F.cross_entropy(clean, y) + 2.5 * kl
    else:
        reference = F.cross_entropy(logits(x_adv), y)
    expected = torch.autograd.grad(reference, [s1, s2])
    for got, want in zip(ours, expected, strict=True):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_the_search_loss_is_the_algorithms_own_not_the_finetuning_one(digits, robust_cnn) -> None:
    default = S2APConfig()
    assert default.search_loss is RobustLoss.TRADES and default.search_trades_beta == 6.0 and default.train_bn
    runs = {}
    for search_loss, finetune_loss in (("pgd_at", RobustLoss.PGD_AT), ("pgd_at", RobustLoss.TRADES), ("trades", None)):
        ctx = context(digits, 0.9, batches=2)
        if finetune_loss is not None:
            ctx.loss = finetune_loss
        result = run("hydra", copy.deepcopy(robust_cnn), ctx, epochs=1, search_loss=search_loss)
        runs[(search_loss, finetune_loss)] = result.extra
    pgd, pgd_with_trades_finetune, trades = runs.values()
    assert pgd["epochs"][0]["robust_loss"] == pgd_with_trades_finetune["epochs"][0]["robust_loss"]
    assert pgd["final_mask_sha256"] == pgd_with_trades_finetune["final_mask_sha256"]
    assert trades["search_loss"] == "trades" and trades["epochs"][0]["robust_loss"] != pgd["epochs"][0]["robust_loss"]


def _split_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(BatchNorm affine, BatchNorm running statistics, everything else) of a plain or masked model."""
    affine, stats, rest = {}, {}, {}
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for key, value in model.state_dict().items():
        if key.endswith(".0.mask"):
            continue  # the frozen mask the search left (a buffer of the masked model)
        owner, _, leaf = key.rpartition(".")
        owner = owner.removesuffix(".parametrizations.weight").removesuffix(".parametrizations.bias")
        leaf = "weight" if key.endswith("weight.original") else leaf
        if owner in bn and leaf in ("weight", "bias"):
            affine[f"{owner}.{leaf}"] = value.clone()
        elif owner in bn:
            stats[f"{owner}.{leaf}"] = value.clone()
        else:
            rest[key.replace(".parametrizations.weight.original", ".weight")] = value.clone()
    return affine, stats, rest


@pytest.mark.parametrize("train_bn", [True, False])
def test_train_bn_trains_batchnorm_affine_and_nothing_else(digits, robust_cnn, train_bn) -> None:
    affine, stats, rest = _split_state(robust_cnn)
    ctx = context(digits, 0.9, batches=3)
    result = run("s2ap", robust_cnn, ctx, epochs=2, warmup_epochs=1, gamma=0.05, train_bn=train_bn)
    affine_after, stats_after, rest_after = _split_state(result.model)
    assert len(affine) == 8 and affine.keys() == affine_after.keys()
    moved = [k for k in affine if not torch.equal(affine[k], affine_after[k])]
    assert moved == (list(affine) if train_bn else [])
    assert rest.keys() == rest_after.keys()
    for key, value in rest.items():  # conv/linear weights and biases: frozen
        assert torch.equal(value, rest_after[key]), key
    # Running statistics follow the masked network at s only: TRADES's outer loss runs the model in
    # train mode twice (x and x') per step, the attack runs in eval mode, and the perturbed pass of
    # the ascent epoch (its 2 forward passes per step) and the measurements are rolled back.
    for key, value in stats.items():
        if key.endswith("num_batches_tracked"):
            assert int(stats_after[key]) - int(value) == 2 * 3 * 2, key
        else:
            assert not torch.equal(value, stats_after[key]), key


def test_train_bn_trains_masked_batchnorm_under_channel_scores(digits, robust_cnn) -> None:
    affine, _, _ = _split_state(robust_cnn)
    result = run("hydra", robust_cnn, context(digits, 0.5, batches=2), epochs=1, granularity="channel")
    affine_after, _, _ = _split_state(result.model)
    kept = result.channel_keep["body.features.0"]
    weight = "body.features.1.weight"  # the first conv's BatchNorm, masked by its group's channel scores
    assert not torch.equal(affine[weight][kept], affine_after[weight][kept])
    effective = result.model.get_submodule("body.features.1").weight.detach()
    assert torch.equal(effective[~kept], torch.zeros(int((~kept).sum())))  # and still masked with its channels


def test_swap_fraction_calibrates_the_radius_to_the_target(digits, robust_cnn) -> None:
    result = run(
        "s2ap", robust_cnn, context(digits, 0.9), epochs=1, warmup_epochs=0, swap_fraction=0.02, hessian_eigenvalue=True
    )
    epoch = result.extra["epochs"][0]
    assert result.extra["swap_fraction"] == 0.02 and result.extra["gamma"] == 0.0
    assert epoch["swap_fraction"] == pytest.approx(0.02, rel=0.2)
    gammas = result.extra["layer_gamma_per_epoch"][0]
    assert len(gammas) == 6 and all(g > 0 for g in gammas.values())
    assert epoch["gamma_min"] == min(gammas.values()) < epoch["gamma_max"] == max(gammas.values())
    assert epoch["ascent_gain"] >= epoch["min_ascent_gain"] >= 0.0
    assert epoch["hessian_converged"] in (0.0, 1.0) and math.isfinite(epoch["hessian_top_eigenvalue"])


def test_gamma_and_swap_fraction_are_exclusive(tmp_path, capsys) -> None:
    assert S2APConfig().swap_fraction == 0.02 and S2APConfig().gamma is None  # calibrated by default
    assert S2APConfig(gamma=0.01).swap_fraction is None
    overrides = sets("tracking.enabled=false", "compression.config.gamma=0.05")  # the recipe sets swap_fraction
    code, err = cli(capsys, "run", RECIPES / "digits_s2ap.yaml", "--out", tmp_path / "out", *overrides)
    assert code == 2
    one_error(
        err,
        "compression.config.swap_fraction: Value error, set either gamma (a fixed radius) "
        "or swap_fraction (a calibrated one), not both (got 0.02)",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_power_iteration_finds_the_dense_hessians_top_eigenvalue(granularity) -> None:
    model, x, y, _ = _two_layer()
    w1, b1, w2, b2 = (p.detach().clone() for p in model.parameters())
    if granularity == "channel":
        score_set = attach_channel(model, ChannelGroups(model, x[:1], None), 0.5, "local")
    else:
        score_set = attach_unstructured(model, 0.5, "local", None)
    score_set.refresh()
    scores = list(score_set.parameters())

    def loss_fn() -> torch.Tensor:
        score_set.refresh()
        return F.cross_entropy(model(x), y)

    estimate = top_hessian_eigenvalue(loss_fn, scores, iterations=1000, tolerance=1e-10)

    def written_out(*values: torch.Tensor) -> torch.Tensor:
        if granularity == "channel":
            (s,) = values
            rows = _ste(s, 3)
            hidden = torch.tanh(F.linear(x, w1 * rows[:, None], b1 * rows))
            return F.cross_entropy(F.linear(hidden, w2, b2), y)
        s1, s2 = values
        hidden = torch.tanh(F.linear(x, w1 * _ste(s1, 15), b1))
        return F.cross_entropy(F.linear(hidden, w2 * _ste(s2, 9), b2), y)

    blocks = torch.autograd.functional.hessian(written_out, tuple(s.detach().clone() for s in scores))
    sizes = [s.numel() for s in scores]
    dense = torch.cat(
        [torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(sizes))], 1) for i in range(len(sizes))]
    )
    eigenvalues = torch.linalg.eigvalsh(dense)
    dominant = float(eigenvalues[eigenvalues.abs().argmax()])
    assert abs(dominant) > 1e-3
    assert estimate.converged
    assert estimate.value == pytest.approx(dominant, rel=0.01)


def test_mask_distance_compares_final_masks_across_runs(digits, robust_cnn, tmp_path) -> None:
    a = {"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "y": torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)}
    b = {"x": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "y": torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)}
    assert mask_hamming(a, b) == 2 and mask_distance(a, b) == 0.5 and mask_distance(a, a) == 0.0
    with pytest.raises(ValueError, match="x: mask shapes differ"):
        mask_distance(a, {**b, "x": torch.ones(3, dtype=torch.bool)})

    seeds = [
        run("hydra", copy.deepcopy(robust_cnn), context(digits, 0.9, seed=s, batches=2), epochs=1) for s in (0, 1, 0)
    ]
    first, other, again = (final_masks(r) for r in seeds)
    assert mask_distance(first, again) == 0.0 and seeds[0].extra["final_mask_sha256"] == mask_sha256(again)
    assert 0.0 < mask_distance(first, other) < 2.0 and seeds[1].extra["final_mask_sha256"] != mask_sha256(first)

    files = HYDRA().report(seeds[1], tmp_path)
    saved = load_masks(next(f for f in files if f.name == "hydra_final_mask.npz"))
    assert saved.keys() == other.keys() and all(torch.equal(saved[k], other[k]) for k in other)
