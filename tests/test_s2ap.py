"""S2AP and HYDRA: exact sparsity, the gamma = 0 identity, the ascent, frozen weights, removability."""

from __future__ import annotations

import copy

import nncf
import pytest
import torch
from robprune_s2ap.scores import keep_count
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, Granularity, PruningContext, PruningResult, ThreatModel, prune
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.models import build_model
from robprune_deploy.surgery import count_model

THREAT = ThreatModel(0.2, 0.07, 2)


def context(digits: DatasetBundle, ratio: float, *, seed: int = 0, batches: int = 6, scope=None) -> PruningContext:
    data = TensorDataset(*(t[: 32 * batches] for t in digits.train.tensors))  # type: ignore[attr-defined]
    x, _ = digits.test[0]
    return PruningContext(
        train_data=make_loader(data, 32, shuffle=True, seed=seed),
        epoch_loader=lambda e: make_loader(data, 32, shuffle=True, seed=seed, epoch=e),
        ratio=ratio,
        threat=THREAT,
        example_inputs=x.unsqueeze(0),
        seed=seed,
        ignored_scope=scope,
    )


def run(name: str, model: torch.nn.Module, ctx: PruningContext, **options: object) -> PruningResult:
    cls = ALGORITHMS.get(name)
    # The Hessian's power iteration costs more than these tiny searches: only the tests about it measure it.
    config = {"epochs": 2, "hessian_eigenvalue": False, **options}
    return cls(cls.Config.model_validate(config)).apply(model, ctx)


def eval_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    a.eval(), b.eval()
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@pytest.mark.parametrize("ratio", [0.9, 0.99])
def test_unstructured_local_topk_is_exact_per_layer(digits, robust_cnn, ratio) -> None:
    result = run("s2ap", robust_cnn, context(digits, ratio), gamma=0.1, warmup_epochs=1)
    masks = result.masks()
    assert len(masks) == 6  # 4 convs + 2 linears, the classifier included
    for name, mask in masks.items():
        assert int(mask.sum()) == keep_count(mask.numel(), ratio), name
    stats = result.statistics()
    assert stats.sparsity == pytest.approx(ratio, abs=0.005)
    assert stats.params_pruned < 0.2 * stats.params_dense
    assert len(stats.extra["epochs"]) == 2


def test_gamma_zero_reproduces_hydra_bit_for_bit(digits, robust_cnn) -> None:
    other = copy.deepcopy(robust_cnn)
    s2ap = run("s2ap", robust_cnn, context(digits, 0.9, seed=3), gamma=0.0, warmup_epochs=0)
    hydra = run("hydra", other, context(digits, 0.9, seed=3))
    for (name, a), b in zip(s2ap.masks().items(), hydra.masks().values(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), b in zip(s2ap.model.state_dict().items(), hydra.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    losses = [e["robust_loss"] for e in s2ap.extra["epochs"]]
    assert losses == [e["robust_loss"] for e in hydra.extra["epochs"]]


def test_perturbed_score_loss_is_at_least_the_unperturbed_loss(digits, robust_cnn) -> None:
    result = run("s2ap", robust_cnn, context(digits, 0.9), gamma=0.5, warmup_epochs=0)
    for epoch in result.extra["epochs"]:
        assert epoch["ascent_steps"] > 0
        assert epoch["min_ascent_gain"] >= 0.0, epoch
        assert epoch["perturbed_loss"] >= epoch["robust_loss"]


def test_scores_change_and_weights_do_not_during_mask_search(digits, robust_cnn) -> None:
    before = {k: v.clone() for k, v in robust_cnn.state_dict().items()}
    # train_bn off: nothing but the scores moves (with it, BatchNorm's affine parameters move too;
    # tests/test_s2ap_fidelity.py checks that).
    hydra_init = run("hydra", copy.deepcopy(robust_cnn), context(digits, 0.9), epochs=1, lr=1e-12, train_bn=False)
    result = run("hydra", robust_cnn, context(digits, 0.9), epochs=2, lr=0.1, train_bn=False)
    after = result.model.state_dict()
    for key, value in before.items():
        if "running_" in key or "num_batches" in key:
            continue  # BatchNorm statistics are buffers, not weights
        stored = after.get(key, after.get(key.replace(".weight", ".parametrizations.weight.original")))
        assert stored is not None and torch.equal(stored, value), key
    flips = sum(int((a != b).sum()) for a, b in zip(hydra_init.masks().values(), result.masks().values(), strict=True))
    assert flips > 0  # the scores moved away from their magnitude-ranked initialization


@pytest.mark.parametrize("model_name", ["digits_cnn", "digits_resnet"])
def test_channel_strip_removes_parameters_and_keeps_the_function(digits, model_name) -> None:
    torch.manual_seed(0)
    model = build_model(model_name, 10, 1, digits.mean, digits.std)
    result = run("s2ap", model, context(digits, 0.5, batches=3), granularity="channel", gamma=0.1, warmup_epochs=1)
    assert result.granularity is Granularity.CHANNEL and result.channel_keep
    for name, keep in result.channel_keep.items():
        assert int(keep.sum()) == keep_count(keep.numel(), 0.5), name
    stripped = result.strip()
    x = digits.test.tensors[0][:64]  # type: ignore[attr-defined]
    dense_count = count_model(result.model, x)
    pruned_count = count_model(stripped, x)
    assert pruned_count.params < 0.6 * dense_count.params
    assert pruned_count.macs < 0.6 * dense_count.macs
    assert eval_diff(result.model, stripped, x) < 1e-5
    stats = result.statistics()
    assert stats.params_pruned == pruned_count.params and stats.macs_reduction > 0.4


def test_ignored_scope_keeps_a_layer_dense(digits, robust_cnn) -> None:
    scope = nncf.IgnoredScope(names=["body.classifier.3"])
    result = run("hydra", robust_cnn, context(digits, 0.9, scope=scope), epochs=1)
    assert "body.classifier.3.weight" not in result.masks()
    layer = next(s for s in result.statistics().layers if s.name == "body.classifier.3")
    assert layer.sparsity == 0.0


def test_functional_api_with_nncf_dataset_and_hessian(digits, robust_cnn) -> None:
    data = TensorDataset(*(t[:96] for t in digits.train.tensors))  # type: ignore[attr-defined]
    dataset = nncf.Dataset(make_loader(data, 32, shuffle=False))
    result = prune(
        robust_cnn,
        "s2ap",
        dataset,
        ratio=0.95,
        attack=THREAT,
        epochs=1,
        warmup_epochs=0,
        hessian_eigenvalue=True,
        hessian_iterations=3,
    )
    last = result.extra["epochs"][-1]
    assert torch.isfinite(torch.tensor(last["hessian_top_eigenvalue"]))
    assert result.statistics().sparsity == pytest.approx(0.95, abs=0.005)
    deployable = result.strip()
    assert not any("parametrizations" in k for k in deployable.state_dict())
    x = digits.test.tensors[0][:32]  # type: ignore[attr-defined]
    assert eval_diff(result.model, deployable, x) < 1e-6


class _Killed(Exception):
    """Stands in for a crash right after an epoch's checkpoint was written."""


def test_an_interrupted_search_resumes_to_the_uninterrupted_result(digits, robust_cnn, tmp_path) -> None:
    options = {"epochs": 3, "gamma": 0.1, "warmup_epochs": 1}
    reference = run("s2ap", copy.deepcopy(robust_cnn), context(digits, 0.9), **options)

    def crash_after_epoch_1(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise _Killed

    killed = context(digits, 0.9)
    killed.checkpoint_dir, killed.on_epoch_end = tmp_path, crash_after_epoch_1
    with pytest.raises(_Killed):
        run("s2ap", copy.deepcopy(robust_cnn), killed, **options)
    resumed_ctx = context(digits, 0.9)
    resumed_ctx.checkpoint_dir, resumed_ctx.resume = tmp_path, True
    logged: list[int] = []
    resumed_ctx.on_epoch_end = lambda stage, epoch, metrics: logged.append(epoch)
    resumed = run("s2ap", copy.deepcopy(robust_cnn), resumed_ctx, **options)

    assert logged == [2]  # epochs 0 and 1 came from the checkpoint
    for (name, a), b in zip(reference.masks().items(), resumed.masks().values(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics
    assert [e["robust_loss"] for e in resumed.extra["epochs"]] == [e["robust_loss"] for e in reference.extra["epochs"]]

    # A checkpoint of another search (here another gamma) is not resumed: all three epochs run.
    logged.clear()
    run("s2ap", copy.deepcopy(robust_cnn), resumed_ctx, **{**options, "gamma": 0.2})
    assert logged == [0, 1, 2]


def test_ascent_every_reuses_the_direction_between_fresh_gradients(digits, robust_cnn) -> None:
    exact = run("s2ap", copy.deepcopy(robust_cnn), context(digits, 0.9), epochs=1, gamma=0.5, warmup_epochs=0)
    cheap = run("s2ap", robust_cnn, context(digits, 0.9), epochs=1, gamma=0.5, warmup_epochs=0, ascent_every=3)
    first, reused = exact.extra["epochs"][0], cheap.extra["epochs"][0]
    assert first["ascent_steps"] == first["fresh_ascent_steps"] == 6  # 6 batches, each with its own gradient
    assert reused["ascent_steps"] == 6 and reused["fresh_ascent_steps"] == 2  # steps 0 and 3
    assert reused["min_ascent_gain"] >= 0.0  # on fresh steps the perturbed loss is still the larger
    assert any(not torch.equal(a, b) for a, b in zip(exact.masks().values(), cheap.masks().values(), strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_k_mask_is_a_stable_sorts_first_k_ties_included(dtype: torch.dtype) -> None:
    from robprune_s2ap.scores import kth_smallest, top_k_mask

    generator = torch.Generator().manual_seed(0)
    for trial in range(40):
        size = int(torch.randint(1, 400, (1,), generator=generator))
        # Few distinct magnitudes (and both signs) in half the trials: many ties at the threshold.
        values = torch.randn(size, generator=generator, dtype=dtype)
        if trial % 2:
            values = torch.round(values * 2) / 2
        keep = int(torch.randint(1, size + 1, (1,), generator=generator))
        order = torch.sort(values.abs(), descending=True, stable=True).indices
        expected = torch.zeros(size, dtype=torch.bool)
        expected[order[:keep]] = True
        assert torch.equal(top_k_mask(values.view(1, -1), keep).flatten(), expected), (trial, size, keep)
        k = int(torch.randint(1, size + 1, (1,), generator=generator))
        assert torch.equal(kth_smallest(values, k), torch.kthvalue(values, k).values)
