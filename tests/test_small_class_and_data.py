"""Binary and 3-class classifiers through the attacks and the whole pipeline; data read right.

The attack half checks the losses each class count gets (DLR needs 3 classes; a 2-class model's
APGD-T runs on the margin) on linear classifiers, whose exact adversarial distances are known, and
runs a real 2-class pipeline end to end. The data half writes real files: 16-bit PNGs and TIFFs,
symbolic link loops and escapes, FIFOs, and checks what is read or refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]
from conftest import LinearClassifier  # type: ignore[import-not-found]
from onnx import TensorProto, helper
from PIL import Image
from torch import nn

from robprune_deploy.attacks.apgd import apgd
from robprune_deploy.attacks.losses import dlr, dlr_targeted, margin_loss, margin_targeted
from robprune_deploy.data import build_dataset
from robprune_deploy.data.images import load_image
from robprune_deploy.errors import DatasetError, OnnxModelError
from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.evaluation.ensemble import EnsembleBudget, plan_member, run_ensemble
from robprune_deploy.evaluation.indicators import measure_indicators
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import export_onnx

HYDRA = RECIPES / "digits_hydra.yaml"
OFF = sets("tracking.enabled=false")
TINY_EVAL = sets(
    "attack.eps=0.1",
    "attack.step_size=0.03",
    "attack.eval_steps=3",
    "evaluate.num_examples=60",
    "evaluate.providers=[cpu]",
    "evaluate.apgd_steps=10",
    "evaluate.apgd_targets=3",
    "evaluate.square_queries=5",
    "evaluate.square_examples=10",
    "evaluate.curve_steps=0",
    "evaluate.indicator_examples=20",
    "evaluate.latency.repeats=1",
    "evaluate.latency.warmup=0",
)
TINY_RUN = (
    sets(
        "data.name=imagefolder",
        "data.image_size=16",
        "pretrain.epochs=4",
        "pretrain.lr=0.02",
        "compression.config.epochs=1",
        "finetune.epochs=1",
    )
    + TINY_EVAL
)
"""A 2-class digits pipeline in about 15 s on 2 cores (the model learns: dense clean accuracy > 0.9)."""
MARGIN = "margin loss: targeted DLR needs >= 4 classes"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a loaded 2-core machine two threads spin-wait on each other (the 2-class
    run took 350 s instead of 22 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits_folder(root: Path, classes: tuple[int, ...]) -> Path:
    """scikit-learn's digits of ``classes`` as a real ImageFolder of 8-bit PNGs (every 4th image in val/)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    for label in classes:
        for k, i in enumerate(np.flatnonzero(raw.target == label)):
            folder = root / ("val" if k % 4 == 0 else "train") / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((raw.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


# --- the losses and the members per class count ---------------------------------------------------


def linear_case(classes: int, n: int = 60) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """A linear classifier, inputs in [0.4, 0.6] (the box never binds below eps 0.4), their labels,
    the exact distance of each to its nearest boundary, and an eps that splits them."""
    torch.manual_seed(classes)
    weight = torch.randn(classes, 16) * 0.1
    model = LinearClassifier(weight).eval()
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    distances = torch.stack(
        [(logits[:, c] - logits.gather(1, y[:, None]).squeeze(1)).abs() / (weight[c] - weight[y]).abs().sum(1)
         for c in range(classes)], 1,
    )  # fmt: skip
    exact = distances.scatter(1, y[:, None], float("inf")).min(1).values
    return model, x, y, exact, min(float(exact.median()), 0.35)


def test_dlr_needs_three_classes_targeted_dlr_four_and_the_margins_stand_in() -> None:
    two = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match=r"^the DLR loss needs at least 3 classes, the logits have 2$"):
        dlr(two, torch.tensor([0, 1]))
    assert margin_loss(two, torch.tensor([0, 1])).tolist() == [-1.0, -3.0]
    three = torch.tensor([[4.0, 1.0, 0.0]])
    assert dlr(three, torch.tensor([0])).item() == pytest.approx(-0.75)  # -(4 - 1) / (4 - 0)
    with pytest.raises(ValueError, match=r"^the targeted DLR loss needs at least 4 classes, the logits have 3$"):
        dlr_targeted(three, torch.tensor([0]), torch.tensor([2]))
    assert margin_targeted(three, torch.tensor([0]), torch.tensor([2])).item() == -4.0
    four = torch.tensor([[4.0, 1.0, 0.0, -2.0]])
    # the paper's: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -3 / (4 + 1)
    assert dlr_targeted(four, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(-0.6)


@pytest.mark.parametrize(
    ("classes", "loss", "targets", "label"),
    [
        (2, "margin-targeted", 1, MARGIN),
        (3, "margin-targeted", 2, MARGIN),
        (4, "dlr-targeted", 3, "targeted DLR"),
        (10, "dlr-targeted", 9, "targeted DLR"),
    ],
)
def test_each_class_count_gets_a_loss_it_admits_and_at_most_classes_minus_one_targets(
    classes, loss, targets, label
) -> None:
    budget = EnsembleBudget.of("autoattack")  # 9 targets each
    plan = plan_member("apgd-t", budget, classes)
    assert (plan.loss, plan.targets, plan.label) == (loss, targets, label)
    assert plan_member("fab-t", budget, classes).targets == targets
    assert plan_member("apgd-ce", budget, classes).loss == "ce"
    assert f"apgd-t 100 steps x {targets} targets ({label})" in budget.describe(("apgd-ce", "apgd-t"), classes)


@pytest.mark.parametrize("classes", [2, 3])
def test_apgd_on_two_and_three_class_logits_breaks_exactly_what_is_within_reach(classes) -> None:
    model, x, y, exact, eps = linear_case(classes)
    with torch.no_grad():
        logits = model(x)
    weight = model.fc.weight
    gaps = torch.stack(
        [(logits.gather(1, y[:, None]).squeeze(1) - logits[:, c]) / (weight[y] - weight[c]).abs().sum(1)
         for c in range(classes)], 1,
    )  # fmt: skip
    nearest = gaps.scatter(1, y[:, None], float("inf")).argmin(1)  # the class whose boundary is at `exact`
    for loss, target in (("ce", None), ("margin-targeted", nearest)):
        outcome = apgd(model, x, y, eps, steps=30, loss=loss, target=target)  # type: ignore[arg-type]
        assert bool(outcome.success[exact < eps - 1e-3].all()), loss
        assert not bool(outcome.success[exact > eps + 1e-3].any()), loss
        assert float((outcome.x_adv - x).abs().max()) <= eps + 1e-6


@pytest.mark.parametrize("classes", [2, 3])
def test_the_ensemble_and_the_indicators_run_on_two_and_three_classes(classes, tmp_path) -> None:
    model, x, y, exact, eps = linear_case(classes, n=40)
    path = export_onnx(model, tmp_path / "linear.onnx", x[:1])
    session = OnnxClassifier(path, ["cpu"])
    budget = EnsembleBudget(apgd_steps=20, apgd_targets=9, fab_steps=10, fab_targets=9, square_queries=10)
    result = run_ensemble("autoattack", model, session, x, y, eps, budget=budget, show_progress=False)
    clear = (exact - eps).abs() > 1e-3
    assert (result.robust[clear.numpy()] == (exact > eps)[clear].numpy()).all()
    apgd_t = result.record("apgd-t")
    assert apgd_t is not None and apgd_t.attacked > 0 and apgd_t.cost > 0
    assert apgd_t.loss == MARGIN
    assert f"apgd-t 20 steps x {classes - 1} targets ({MARGIN})" in result.description
    assert f"fab-t 10 steps x {classes - 1} targets" in result.description
    indicators = measure_indicators(model, session, x, y, eps, blackbox_gain=0.0, steps=10, show_progress=False)
    unavailable = indicators["unavailable_gradients"]
    assert unavailable.value == 0.0
    second = "margin (DLR needs >= 3 classes)" if classes == 2 else "DLR"
    assert unavailable.detail == f"CE or {second} input gradient all zero or not finite"


def test_a_two_class_run_finishes_and_its_gate_names_the_loss(tmp_path, capsys) -> None:
    root = digits_folder(tmp_path / "digits01", (0, 1))
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, "--quiet", *TINY_RUN, *sets(f"data.root={root}"), *OFF)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["torch.dense_clean_acc"] > 0.9  # it learned: not a constant predictor on 2 classes
    budget = f"apgd-ce 10 steps (CE), apgd-t 10 steps x 1 targets ({MARGIN}), square 5 queries"
    assert summary["onnx.attack_budget"] == budget
    gate = (out / "gate.md").read_text()
    assert f"### Attacks (autoattack-fast: {budget})" in gate
    assert "CE or margin (DLR needs >= 3 classes) input gradient" in gate
    assert 0.0 <= summary["onnx.apgd_t_acc"] <= summary["onnx.apgd_ce_acc"] <= summary["onnx.clean_acc"]


# --- images keep their range ------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_image_is_scaled_by_65535_not_saturated(tmp_path, suffix) -> None:
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_image(str(path))
    assert isinstance(image, torch.Tensor) and image.shape == (3, 2, 2)
    expected = torch.tensor([[0.0, 0.5], [1.0, 1000 / 65535]])
    assert torch.allclose(image, expected.expand(3, 2, 2), atol=1e-4)  # 8-bit reading: 32768 -> 1.0


def test_an_image_folder_of_16_bit_pngs_reaches_the_model_at_its_real_values(tmp_path) -> None:
    for split in ("train", "val"):
        for label, value in (("dark", 32768), ("light", 65535)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(folder / "x.png")
    bundle = build_dataset("imagefolder", tmp_path, 8, augment=True)
    dark, light = bundle.test[0][0], bundle.test[1][0]
    assert dark.shape == (3, 8, 8)
    assert float((dark - 0.5).abs().max()) < 1e-4 and float((light - 1.0).abs().max()) < 1e-4
    inner = bundle.train[0][0][:, 1:-1, 1:-1]  # a random crop shifts by at most 1 pixel, padding with zeros
    assert float((inner - 0.5).abs().max()) < 1e-4


def test_float_and_32_bit_tiffs_keep_their_range_and_a_float_outside_0_1_is_refused(tmp_path) -> None:
    Image.fromarray(np.array([[0.25, 0.75]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert torch.allclose(load_image(str(tmp_path / "f.tif"))[0], torch.tensor([[0.25, 0.75]]))  # type: ignore[index]
    wide = np.array([[0, 2**31 - 1]], dtype=np.int32)  # signed 32-bit: -2^31 -> 0, 2^31 - 1 -> 1
    Image.fromarray(wide).save(tmp_path / "i.tif")
    assert torch.allclose(load_image(str(tmp_path / "i.tif"))[0], torch.tensor([[0.5, 1.0]]), atol=1e-6)  # type: ignore[index]
    Image.fromarray(np.array([[0.5, 2.0]], dtype=np.float32)).save(tmp_path / "hot.tif")
    with pytest.raises(DatasetError) as caught:
        load_image(str(tmp_path / "hot.tif"))
    assert str(caught.value) == (
        f"data.root: image {tmp_path / 'hot.tif'}: floating-point pixels must be finite and within [0, 1] "
        "(found 0.5 to 2)"
    )


# --- links, FIFOs and devices in the data --------------------------------------------------------
def _loop_to_the_split(root: Path) -> tuple[Path, str]:
    link = root / "train" / "digit0" / "again"
    link.symlink_to("..")  # train/digit0/again -> train/: os.walk(followlinks=True) repeats train/ forever
    return link, f"is a symbolic link loop (it points to {root / 'train'}, a folder that holds it)"


def _link_to_itself(root: Path) -> tuple[Path, str]:
    link = root / "train" / "digit1" / "self.png"
    link.symlink_to("self.png")
    return link, "is a symbolic link loop"


def _link_out_of_root(root: Path) -> tuple[Path, str]:
    elsewhere = root.parent / "private"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(elsewhere / "secret.png")
    link = root / "train" / "digit1" / "secret.png"
    link.symlink_to(elsewhere / "secret.png")
    return link, f"is a symbolic link to {elsewhere / 'secret.png'}, outside data.root {root}"


def _link_across_splits(root: Path) -> tuple[Path, str]:
    link = root / "train" / "digit0" / "tests"
    link.symlink_to(root / "val" / "digit0")
    return link, (
        f"is a symbolic link to {root / 'val' / 'digit0'}, outside {root / 'train'} "
        "(a link may not carry images across splits)"
    )


def _fifo_image(root: Path) -> tuple[Path, str]:
    fifo = root / "val" / "digit1" / "stuck.png"
    os.mkfifo(fifo)
    return fifo, "is a FIFO, not an image file"


@pytest.mark.parametrize(
    "make", [_loop_to_the_split, _link_to_itself, _link_out_of_root, _link_across_splits, _fifo_image]
)
def test_an_image_folder_with_a_bad_link_or_a_fifo_exits_2_naming_it(tmp_path, capsys, make) -> None:
    root = digits_folder(tmp_path.resolve() / "digits01", (0, 1))
    entry, reason = make(root)
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, *TINY_RUN, *sets(f"data.root={root}"), *OFF)
    assert code == 2
    assert one_error(err) == f"error: data.root: {entry} {reason}"
    assert not out.exists()


def test_a_fifo_or_a_device_as_data_root_is_named_for_what_it_is(tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for root, kind in ((fifo, "a FIFO"), (Path("/dev/null"), "a device")):
        code, err = cli(capsys, "run", HYDRA, "--out", tmp_path / "out", *TINY_RUN, *sets(f"data.root={root}"), *OFF)
        assert code == 2
        assert one_error(err) == f"error: data.root: {root} is {kind}, not a folder"


def test_a_fifo_among_the_data_files_is_named_and_never_opened(tmp_path) -> None:
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)  # opening it for reading would block this test forever
    with pytest.raises(DatasetError) as caught:
        load_image(str(fifo))
    assert str(caught.value) == f"data.root: image {fifo} is a FIFO, not a regular file"
    fashion = tmp_path / "fashion"
    fashion.mkdir()
    os.mkfifo(fashion / "train-images-idx3-ubyte.gz")
    with pytest.raises(DatasetError) as caught:
        build_dataset("fashion_mnist", fashion)
    assert str(caught.value) == f"{fashion / 'train-images-idx3-ubyte.gz'} is a FIFO, not a regular file"


# --- the torch twin's failure names the file and its role ------------------------------------------
def _unconvertible(path: Path) -> Path:
    """A digits-shaped classifier with a Shrink node: onnxruntime runs it, onnx2torch cannot convert it."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [256, 10], rng.normal(size=2560).astype(np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], np.array([-1, 256], np.int64))
    nodes = [
        helper.make_node("Shrink", ["input"], ["shrunk"], lambd=0.0),
        helper.make_node("Reshape", ["shrunk", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "shrink", [x], [y], [w, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    return path


def test_a_twin_that_cannot_be_built_names_the_file_and_whether_candidate_or_baseline(tmp_path, capsys) -> None:
    path = _unconvertible(tmp_path / "shrink.onnx")
    with pytest.raises(OnnxModelError, match=f"^baseline {path}: cannot build a torch twin for the white-box"):
        torch_twin(onnx.load(str(path)), f"baseline {path}")
    code, err = cli(
        capsys, "gate", path, "--recipe", HYDRA, "--report", tmp_path / "report", "--quiet", *TINY_EVAL, *OFF
    )
    assert code == 2
    one_error(err, f"error: candidate {path}: cannot build a torch twin for the white-box attacks (")
