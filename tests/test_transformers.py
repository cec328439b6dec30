"""Vision transformers from timm: head and MLP groups, MRPF at 50% MACs, strip, ONNX, onnxruntime.

Tiny inputs (16x16, one channel) keep each model a few milliseconds per batch; the normalization
layers get random statistics so that no branch is trivially zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, PruningResult, ThreatModel
from robprune_deploy.data import make_loader
from robprune_deploy.errors import RobPruneError
from robprune_deploy.evaluation import OnnxClassifier, parity
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import audit_onnx, export_onnx, load_onnx, torch_weight_params
from robprune_deploy.masking import masks_of
from robprune_deploy.models import build_model
from robprune_deploy.surgery import ChannelGroups, count_model, prunable_layers

SIZE = 16
VIT = ("timm:vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3})
MOBILEVIT = ("timm:mobilevit_xxs", {})


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "num_heads") and hasattr(m, "qkv")}


def tiny_model(spec: tuple[str, dict]) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(spec[0], 10, 1, [0.45], [0.3], image_size=SIZE, kwargs=spec[1])
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # trained-looking normalization: no branch is zero by construction
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def context(ratio: float = 0.5) -> PruningContext:
    generator = torch.Generator().manual_seed(2)
    data = TensorDataset(
        torch.rand(32, 1, SIZE, SIZE, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    )
    return PruningContext(
        train_data=make_loader(data, 16, shuffle=False),
        epoch_loader=lambda e: make_loader(data, 16, shuffle=False),
        ratio=ratio,
        threat=ThreatModel(0.1, 0.05, 1),
        example_inputs=data.tensors[0][:1],
    )


def run(name: str, model: nn.Module, **options: object) -> PruningResult:
    cls = ALGORITHMS.get(name)
    return cls(cls.Config.model_validate(options)).apply(model, context())


@pytest.fixture(scope="module", params=["vit", "mobilevit"])
def pruned(request, tmp_path_factory) -> dict[str, object]:
    """MRPF at 50% MACs (loss MRS on the ViT, activation MRS on MobileViT), stripped and exported."""
    spec = VIT if request.param == "vit" else MOBILEVIT
    dense = tiny_model(spec)
    heads_before = {n: m.num_heads for n, m in attention_modules(dense).items()}
    estimator = "loss" if request.param == "vit" else "activation"
    result = run("mrpf", dense, calibration_size=16, estimator=estimator)
    stripped = result.strip()
    path = export_onnx(stripped, tmp_path_factory.mktemp(request.param) / "model.onnx", context().example_inputs)
    return {"result": result, "stripped": stripped, "path": path, "heads_before": heads_before}


def test_mrpf_removes_half_the_macs_from_heads_and_mlp_units(pruned) -> None:
    result: PruningResult = pruned["result"]  # type: ignore[assignment]
    assert result.statistics().macs_reduction == pytest.approx(0.5, abs=0.01)
    units, kept, channels = result.extra["units"], result.extra["kept_channels"], result.extra["channels"]
    heads = [n for n, u in units.items() if u == "head"]
    assert heads and any(kept[n] < channels[n] for n in heads)
    assert any(n.endswith("mlp.fc1") and kept[n] < channels[n] for n in units)
    # the residual stream of each transformer passes through LayerNorm: skipped, with the reason
    skipped = result.extra["skipped_groups"]
    assert skipped and all("LayerNorm" in reason for reason in skipped.values())
    assert "Groups left unpruned" in result.statistics().layer_table()


def test_stripped_transformer_computes_the_masked_function(pruned) -> None:
    result: PruningResult = pruned["result"]  # type: ignore[assignment]
    stripped: nn.Module = pruned["stripped"]  # type: ignore[assignment]
    x = torch.rand(24, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    result.model.eval(), stripped.eval()
    with torch.no_grad():
        masked, physical = result.model(x), stripped(x)
    assert float(masked.std()) > 1e-3  # a live function, not a constant
    assert float((masked - physical).abs().max()) < 1e-5
    assert sum(p.numel() for p in stripped.parameters()) < sum(p.numel() for p in result.model.parameters())


def test_head_counts_are_whole_and_consistent_after_removal(pruned) -> None:
    stripped: nn.Module = pruned["stripped"]  # type: ignore[assignment]
    before: dict[str, int] = pruned["heads_before"]  # type: ignore[assignment]
    after = attention_modules(stripped)
    assert set(after) == set(before)
    for name, attn in after.items():
        assert isinstance(attn.num_heads, int) and 1 <= attn.num_heads <= before[name]
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
        assert attn.proj.in_features == attn.num_heads * attn.head_dim
    assert sum(a.num_heads for a in after.values()) < sum(before.values())


def batches_of(*sizes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(4)
    return [(torch.rand(n, 1, SIZE, SIZE, generator=generator), torch.zeros(n, dtype=torch.long)) for n in sizes]


def test_exported_transformer_matches_onnxruntime_and_its_twin(pruned) -> None:
    stripped: nn.Module = pruned["stripped"]  # type: ignore[assignment]
    path: Path = pruned["path"]  # type: ignore[assignment]
    proto = load_onnx(path)
    audit = audit_onnx(proto)
    assert audit.weight_params == torch_weight_params(stripped)
    assert audit.macs == count_model(stripped, batches_of(1)[0][0]).macs  # every token's rows counted
    batches = batches_of(5, 11)
    check = parity(stripped.eval(), OnnxClassifier(path, ["cpu"]), batches)
    assert check.max_abs_diff < 1e-4 and check.argmax_agreement == 1.0
    x = batches[0][0]
    assert float((torch_twin(proto)(x) - stripped(x)).abs().max()) < 1e-4  # the gate's white-box model


def test_s2ap_searches_whole_heads_and_strips_exactly() -> None:
    result = run("s2ap", tiny_model(VIT), granularity="channel", epochs=1, warmup_epochs=0)
    keep = result.channel_keep or {}
    heads = {n: k for n, k in keep.items() if n.endswith("attn.qkv")}
    assert heads and all(k.numel() == 3 for k in heads.values())  # one decision per head
    stripped = result.strip()
    x = torch.rand(8, 1, SIZE, SIZE)
    result.model.eval(), stripped.eval()
    with torch.no_grad():
        assert float((result.model(x) - stripped(x)).abs().max()) < 1e-5
    for name, attn in attention_modules(stripped).items():
        assert attn.num_heads == int(heads[f"{name}.qkv"].sum())


def test_hydra_masks_every_linear_and_conv_of_a_transformer() -> None:
    model = tiny_model(VIT)
    layers = set(prunable_layers(model))
    result = run("hydra", model, epochs=1)
    masked = {name.rsplit(".", 1)[0] for name in masks_of(result.model)}
    assert masked == layers and any(name.endswith("attn.qkv") for name in masked)
    assert result.statistics().sparsity == pytest.approx(0.5, abs=0.01)


def test_an_attention_that_normalizes_its_heads_together_is_skipped() -> None:
    model = tiny_model(VIT)
    attn = model.body.blocks[0].attn
    attn.norm = nn.LayerNorm(attn.qkv.out_features // 3)  # timm's scale_norm
    groups = ChannelGroups(model, torch.rand(1, 1, SIZE, SIZE))
    assert "body.blocks.0.attn.qkv" in groups.skipped
    assert "body.blocks.1.attn.qkv" in {g.name for g in groups if g.unit == "head"}


def test_timm_names_and_kwargs_are_checked() -> None:
    with pytest.raises(RobPruneError, match=r"timm has no model 'vit_tinny_patch16_224'.*vit_tiny_patch16_224"):
        build_model("timm:vit_tinny_patch16_224", 10, 1, [0.5], [0.5], image_size=SIZE)
    with pytest.raises(RobPruneError, match=r"model\.kwargs: only timm"):
        build_model("digits_cnn", 10, 1, [0.5], [0.5], kwargs={"depth": 2})
    with pytest.raises(RobPruneError, match=r"model\.kwargs: pretrained is set by robprune-deploy"):
        build_model("timm:mobilevit_xxs", 10, 1, [0.5], [0.5], kwargs={"pretrained": True})


@pytest.mark.slow
def test_vit_recipe_runs_the_whole_pipeline(tmp_path: Path) -> None:
    """The digits ViT recipe, shortened: pretrain, MRPF, fine-tune, export, onnxruntime, gate, MLflow."""
    import json

    from robprune_deploy.cli.main import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "transformers" / "digits_vit_mrpf.yaml"
    sets = [
        "pretrain.epochs=3",
        "finetune.epochs=1",
        "compression.config.calibration_size=64",
        "evaluate.num_examples=100",
        "evaluate.apgd_steps=10",
        "evaluate.apgd_targets=1",
        "evaluate.curve_steps=0",
        "evaluate.indicator_examples=20",
        "evaluate.square_queries=30",
        "evaluate.square_examples=30",
        "evaluate.latency.repeats=3",
        "gate.min_clean_acc=null",
        "gate.min_pgd_acc=null",
        "gate.max_pgd_drop=null",
    ]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    args = ["run", str(recipe), "--out", str(out), "--tracking-uri", uri, "--quiet"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["macs_pruned"] / summary["macs_dense"] == pytest.approx(0.5, abs=0.01)
    assert summary["onnx.max_abs_diff"] < 1e-4 and summary["gate.passed"] is True
    assert summary["mlflow.model_uri"].startswith("models:/")
