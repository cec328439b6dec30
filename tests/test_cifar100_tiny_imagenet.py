"""CIFAR-100 and Tiny-ImageNet readers on small files written here in the real formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robprune_deploy.cli.main import main
from robprune_deploy.data import build_dataset


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 6, **overrides: object) -> Path:
    """``cifar-100-python/{train,test,meta}``: pickled dicts with the real keys and layouts."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        document = {
            "filenames": [f"img_{i}.png" for i in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            **overrides,
        }
        (folder / split).write_bytes(pickle.dumps(document, protocol=2))
    meta = {
        "fine_label_names": [f"class{i}" for i in range(100)],
        "coarse_label_names": [f"super{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_tiny_imagenet(root: Path, wnids: tuple[str, ...] = ("n01443537", "n01629819")) -> Path:
    """``tiny-imagenet-200``: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)

    def jpeg(path: Path, gray: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (64, 64) if gray else (64, 64, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, "JPEG")

    (folder).mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for i in range(2):
            jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", gray=i == 1)  # a few real ones are gray
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for i, wnid in enumerate(wnids[::-1] * 2):
        jpeg(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cifar100_reads_fine_labels_and_channel_major_pixels(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path)
    bundle = build_dataset("cifar100", root, None, augment=False)
    assert bundle.num_classes == 100 and bundle.input_shape == (3, 32, 32)
    assert len(bundle.train) == 12 and len(bundle.test) == 6  # type: ignore[arg-type]
    document = pickle.loads((root / "cifar-100-python" / "train").read_bytes())
    x, y = bundle.train[3]
    assert y == document["fine_labels"][3]
    # the row is 1024 red, then 1024 green, then 1024 blue values of a 32x32 image
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(document["data"][3].reshape(3, 32, 32)))


def test_tiny_imagenet_reads_train_folders_and_val_annotations(tmp_path: Path) -> None:
    root = write_tiny_imagenet(tmp_path)
    bundle = build_dataset("tiny_imagenet", root, 16, augment=False)
    assert bundle.num_classes == 2 and bundle.input_shape == (3, 16, 16)
    assert [y for _, y in bundle.train] == [0, 0, 1, 1]  # type: ignore[attr-defined]
    assert [y for _, y in bundle.test] == [1, 0, 1, 0]  # type: ignore[attr-defined]  # wnids in val_annotations.txt
    assert bundle.train[1][0].shape == (3, 16, 16)  # a gray JPEG comes out RGB


def broken_cifar_data(t: Path) -> Path:
    return write_cifar100(t, data=np.zeros((12, 100), dtype=np.uint8))


def cifar_without_test(t: Path) -> Path:
    root = write_cifar100(t)
    (root / "cifar-100-python" / "test").unlink()
    return root


def cifar_that_would_run_code(t: Path) -> Path:
    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("this would run arbitrary code",))

    root = write_cifar100(t)
    (root / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": Exploit()}))
    return root


def tiny_with_unknown_val_wnid(t: Path) -> Path:
    root = write_tiny_imagenet(t)
    annotations = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace("n01629819", "n99999999", 1))
    return root


def tiny_without_a_class_folder(t: Path) -> Path:
    root = write_tiny_imagenet(t)
    (root / "tiny-imagenet-200" / "wnids.txt").write_text("n01443537\nn01629819\nn02058221\n")
    return root


def empty_folder(t: Path) -> Path:
    t.mkdir(parents=True)
    return t


MALFORMED = {
    "cifar100 data of the wrong shape": ("cifar100", broken_cifar_data, "must be uint8 of shape (N, 3072)"),
    "cifar100 without its test file": ("cifar100", cifar_without_test, "test is missing"),
    "cifar100 pickle that would run code": ("cifar100", cifar_that_would_run_code, "refused global"),
    "cifar100 root without the folder": ("cifar100", empty_folder, "has no cifar-100-python/ folder"),
    "tiny_imagenet val wnid not in wnids.txt": ("tiny_imagenet", tiny_with_unknown_val_wnid, "line 1"),
    "tiny_imagenet class without images": ("tiny_imagenet", tiny_without_a_class_folder, "n02058221"),
    "tiny_imagenet root without wnids.txt": ("tiny_imagenet", empty_folder, "has no tiny-imagenet-200/wnids.txt"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_dataset_root_exits_2_with_one_line_naming_it(case: str, tmp_path: Path, capsys) -> None:
    name, make, needle = MALFORMED[case]
    root = make(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"name": name, "root": str(root), "image_size": None}}))
    out = tmp_path / "out"
    code = main(["run", str(recipe), "--out", str(out), "--quiet", "--set", "tracking.enabled=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: data.root: ") and "\n" not in err and needle in err, err
    assert str(root.resolve()) in err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
