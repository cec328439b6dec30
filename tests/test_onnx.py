"""ONNX export, graph audit, parity, onnxruntime sessions and the Square attack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.attacks import ThreatModel as Threat
from robprune_deploy.data import make_loader
from robprune_deploy.errors import OnnxModelError, ProviderError, ShapeError
from robprune_deploy.evaluation import OnnxClassifier, evaluate_onnx, parity, square_attack
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import audit_onnx, export_onnx, load_onnx, torch_weight_params
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, adversarial_train


def conv_out_channels(path: Path) -> list[int]:
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    return [inits[n.input[1]].dims[0] for n in proto.graph.node if n.op_type == "Conv"]


@pytest.fixture(scope="module")
def channel_pruned(digits, robust_cnn_state, tmp_path_factory):
    model = build_model("digits_resnet", 10, 1, digits.mean, digits.std)
    data = TensorDataset(*(t[:128] for t in digits.train.tensors))
    ctx = PruningContext(
        train_data=make_loader(data, 64, shuffle=False),
        epoch_loader=lambda e: make_loader(data, 64, shuffle=False),
        ratio=0.5,
        threat=ThreatModel(0.2, 0.07, 2),
        example_inputs=digits.test.tensors[0][:1],
    )
    result = ALGORITHMS.get("l1_filter")().apply(model, ctx)
    folder = tmp_path_factory.mktemp("onnx")
    dense = build_model("digits_resnet", 10, 1, digits.mean, digits.std)
    stripped = result.strip()
    return {
        "stripped": stripped,
        "pruned_path": export_onnx(stripped, folder / "model.onnx", ctx.example_inputs),
        "dense_path": export_onnx(dense, folder / "dense.onnx", ctx.example_inputs),
        "folder": folder,
    }


def test_channel_pruned_graph_has_fewer_channels_and_the_audit_matches_torch(channel_pruned) -> None:
    pruned, dense = conv_out_channels(channel_pruned["pruned_path"]), conv_out_channels(channel_pruned["dense_path"])
    assert len(pruned) == len(dense) and sum(pruned) < 0.75 * sum(dense)
    audit = audit_onnx(load_onnx(channel_pruned["pruned_path"]))
    assert audit.weight_params == torch_weight_params(channel_pruned["stripped"])
    dense_audit = audit_onnx(load_onnx(channel_pruned["dense_path"]))
    assert audit.macs == pytest.approx(0.5 * dense_audit.macs, rel=0.03)


def test_parity_and_dynamic_batch(digits, channel_pruned) -> None:
    session = OnnxClassifier(channel_pruned["pruned_path"], ["cpu"])
    batches = list(make_loader(digits.test, 97, shuffle=False))[:3]  # odd batch sizes: the batch axis is dynamic
    check = parity(channel_pruned["stripped"], session, batches)
    assert check.max_abs_diff < 1e-4 and check.argmax_agreement == 1.0
    twin = torch_twin(load_onnx(channel_pruned["pruned_path"]))
    x = batches[0][0]
    assert float((twin(x) - channel_pruned["stripped"].eval()(x)).abs().max()) < 1e-4


def test_square_attack_breaks_an_undefended_model_through_onnxruntime(digits, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    adversarial_train(
        model,
        TrainingPlan(epochs=4, lr=0.05),
        Threat(0.0, 0.01, 0),
        lambda e: make_loader(digits.train, 32, shuffle=True, epoch=e),
        device=torch.device("cpu"),
        show_progress=False,
    )
    path = export_onnx(model, tmp_path / "undefended.onnx", digits.test.tensors[0][:1])
    x, y = digits.test.tensors[0][:100].numpy(), digits.test.tensors[1][:100].numpy()
    session = OnnxClassifier(path, ["cpu"])
    clean = float((session.predict(x).argmax(1) == y).mean())
    result = square_attack(session.predict, x, y, eps=0.2, n_queries=200, p_init=0.8, seed=0)
    assert clean > 0.85
    assert result.accuracy < clean - 0.4
    assert float(np.abs(result.x_adv - x).max()) <= 0.2 + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.queries.max() <= 200


def test_evaluate_onnx_reports_white_and_black_box_accuracy(digits, channel_pruned) -> None:
    batches = list(make_loader(digits.test, 64, shuffle=False))[:2]
    report = evaluate_onnx(
        channel_pruned["pruned_path"],
        batches,
        torch_model=channel_pruned["stripped"],
        threat=Threat(0.2, 0.05, 5),
        providers=["cuda", "cpu"],
        square_queries=20,
        square_examples=32,
    )
    assert report.provider in ("cuda", "cpu") and report.examples == 128
    assert report.pgd_acc is not None and report.pgd_acc <= report.clean_acc
    assert report.square_examples == 32 and report.max_abs_diff is not None and report.max_abs_diff < 1e-4


def test_truncated_and_corrupted_onnx_files_are_clear_errors(channel_pruned, tmp_path) -> None:
    data = channel_pruned["pruned_path"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted = tmp_path / "corrupted.onnx"
    corrupted.write_bytes(b"\x00garbage" * 100)
    for path in (truncated, corrupted):
        with pytest.raises(OnnxModelError, match=rf"ONNX file .*{path.name}: unreadable or corrupted"):
            OnnxClassifier(path, ["cpu"])
    with pytest.raises(OnnxModelError, match="no such file"):
        OnnxClassifier(tmp_path / "absent.onnx", ["cpu"])


def test_wrong_input_shape_and_unknown_provider(channel_pruned) -> None:
    session = OnnxClassifier(channel_pruned["pruned_path"], ["cpu"])
    with pytest.raises(ShapeError, match=r"expects shape \[.*1, 16, 16\], got \[2, 3, 16, 16\]"):
        session.predict(np.zeros((2, 3, 16, 16), dtype=np.float32))
    with pytest.raises(ProviderError, match="unknown provider 'tpu'"):
        OnnxClassifier(channel_pruned["pruned_path"], ["tpu"])


def test_exporting_a_masked_model_is_refused(digits, robust_cnn, tmp_path) -> None:
    from robprune_deploy.masking import apply_masks

    apply_masks(robust_cnn, {"body.features.0.weight": torch.ones(32, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(OnnxModelError, match="still carries masks"):
        export_onnx(robust_cnn, tmp_path / "m.onnx", digits.test.tensors[0][:1])
    assert not (tmp_path / "m.onnx").exists()
