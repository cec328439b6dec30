"""Every kind of bad input: exit code 2, one line naming the field or file, nothing written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from robprune_deploy.cli.main import main
from robprune_deploy.data.datasets import check_images
from robprune_deploy.errors import DatasetError
from robprune_deploy.models import build_model


def recipe_file(tmp_path: Path, document: object, raw: str | None = None) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(document))
    return path


def image_folder(root: Path, splits: tuple[str, ...]) -> Path:
    from PIL import Image

    for split in splits:
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "x.png")
    return root


def empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def text_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    path.write_text("these are not tensors")
    return path


def exploit_checkpoint(tmp_path: Path) -> Path:
    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("this would run arbitrary code",))

    path = tmp_path / "exploit.pt"
    path.write_bytes(pickle.dumps({"model": Exploit()}))
    return path


def resnet_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "resnet.pt"
    torch.save({"model": build_model("digits_resnet", 10, 1, [0.5], [0.5]).state_dict()}, path)
    return path


CASES = {
    "malformed YAML": (lambda t: recipe_file(t, None, "model: {name: digits_cnn\n"), "malformed YAML"),
    "unknown field": (lambda t: recipe_file(t, {"pretrain": {"epoch": 3}}), "pretrain.epoch: unknown field"),
    "wrong type": (lambda t: recipe_file(t, {"data": {"batch_size": "big"}}), "data.batch_size"),
    "ratio above 1": (lambda t: recipe_file(t, {"compression": {"ratio": 1.2}}), "compression.ratio"),
    "ratio zero": (lambda t: recipe_file(t, {"compression": {"ratio": 0}}), "compression.ratio"),
    "negative eps": (lambda t: recipe_file(t, {"attack": {"eps": -0.01}}), "attack.eps"),
    "unknown algorithm": (lambda t: recipe_file(t, {"compression": {"algorithm": "obs"}}), "unknown algorithm 'obs'"),
    "unknown model": (lambda t: recipe_file(t, {"model": {"name": "resnet1000"}}), "unknown model 'resnet1000'"),
    "unknown torchvision model": (
        lambda t: recipe_file(t, {"model": {"name": "torchvision:nope"}, "data": {"name": "digits"}}),
        "unknown torchvision classifier 'nope'",
    ),
    "missing data root": (
        lambda t: recipe_file(t, {"data": {"name": "cifar10", "root": str(t / "nowhere")}}),
        "data.root",
    ),
    "empty data root": (  # torchvision's "You can use download=True" must not leak: nothing is downloaded
        lambda t: recipe_file(t, {"data": {"name": "cifar10", "root": str(empty_folder(t / "empty"))}}),
        "has no readable CIFAR-10",
    ),
    "dataset without its root": (lambda t: recipe_file(t, {"data": {"name": "svhn"}}), "set data.root"),
    "imagefolder without val split": (
        lambda t: recipe_file(t, {"data": {"name": "imagefolder", "root": str(image_folder(t / "img", ("train",)))}}),
        "needs a train/ folder and a val/ or test/",
    ),
    "checkpoint of another architecture": (
        lambda t: recipe_file(t, {"model": {"checkpoint": str(resnet_checkpoint(t))}}),
        "does not fit the model architecture",
    ),
    "checkpoint that is not a tensor file": (
        lambda t: recipe_file(t, {"model": {"checkpoint": str(text_checkpoint(t))}}),
        "not a torch tensor file",
    ),
    "checkpoint that would execute code": (
        lambda t: recipe_file(t, {"model": {"checkpoint": str(exploit_checkpoint(t))}}),
        "refused",
    ),
    "missing checkpoint": (lambda t: recipe_file(t, {"model": {"checkpoint": str(t / "absent.pt")}}), "no such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_run_with_bad_input_exits_2_with_one_line(case: str, tmp_path: Path, capsys) -> None:
    make, needle = CASES[case]
    recipe = make(tmp_path)
    out = tmp_path / "out"
    code = main(["run", str(recipe), "--out", str(out), "--quiet", "--set", "tracking.enabled=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert "download=True" not in err, err
    written = [p.name for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == [], written


def test_gate_on_an_onnx_with_the_wrong_input_shape_exits_2(tmp_path: Path, capsys) -> None:
    """A 3-channel 32x32 model cannot be gated on 1-channel digits: a ShapeError, not a crash."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3 * 32 * 32, 10], np.zeros(3 * 32 * 32 * 10, np.float32))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], np.array([-1, 3 * 32 * 32], np.int64))
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "wrong",
        [x],
        [y],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    path = tmp_path / "rgb.onnx"
    onnx.save(model, str(path))
    recipe = recipe_file(tmp_path, {"evaluate": {"num_examples": 20, "square_queries": 0, "providers": ["cpu"]}})
    code = main(["gate", str(path), "--recipe", str(recipe), "--report", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "expects shape" in err and "[20, 1, 16, 16]" in err and "\n" not in err


@pytest.mark.parametrize(
    ("images", "needle"),
    [
        (torch.full((4, 1, 16, 16), float("nan")), "NaN or inf"),
        (torch.rand(4, 3, 16, 16), "expected (1, 16, 16)"),
        (torch.rand(4, 1, 8, 8), "expected (1, 16, 16)"),
        (torch.rand(4, 1, 16, 16) * 255, "must lie in [0, 1]"),
    ],
)
def test_dataset_images_are_checked(images: torch.Tensor, needle: str) -> None:
    with pytest.raises(DatasetError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_images(torch.utils.data.TensorDataset(images, torch.zeros(4)), (1, 16, 16), "my data")
