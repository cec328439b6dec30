"""Fashion-MNIST: the IDX reader and its errors, the real files, the validation split, a tiny run."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LIGHT_EVAL, overrides  # type: ignore[import-not-found]

from robprune_deploy.cli.main import main
from robprune_deploy.data import VALIDATION_SEED, build_dataset, validation_split
from robprune_deploy.data.fashion_mnist import DEBIAN_ROOT, FILES, UInt8ImageDataset
from robprune_deploy.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, write_idx
from robprune_deploy.errors import DatasetError
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
REAL_ROOTS = [
    *([Path(os.environ["FASHION_MNIST_ROOT"])] if os.environ.get("FASHION_MNIST_ROOT") else []),
    REPO.parent / "shared" / "datasets" / "fashion-mnist",  # the shared copy beside the checkout
    DEBIAN_ROOT,
]
REAL_ROOT = next((r for r in REAL_ROOTS if (r / "t10k-images-idx3-ubyte.gz").is_file()), None)
needs_real_files = pytest.mark.skipif(
    REAL_ROOT is None, reason=f"Fashion-MNIST IDX files not found in {' or '.join(map(str, REAL_ROOTS))}"
)


def fake_root(root: Path, train: int = 60, test: int = 20, *, gz: bool = True, seed: int = 0) -> Path:
    """A Fashion-MNIST folder in the real format: four IDX files of random 28x28 images."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, count in (("train", train), ("test", test)):
        images, labels = FILES[split]
        write_idx(root / f"{images}{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(root / f"{labels}{suffix}", (np.arange(count) % 10).astype(np.uint8))
    return root


# --- the IDX format ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian_with_the_mnist_magic_numbers(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8)).read_bytes()
    assert int.from_bytes(raw[:4], "big") == IMAGES_MAGIC == 2051
    assert [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3)] == [3, 28, 28]
    assert len(raw) == 16 + 3 * 28 * 28
    labels = write_idx(tmp_path / "labels", np.zeros(3, np.uint8)).read_bytes()
    assert int.from_bytes(labels[:4], "big") == LABELS_MAGIC == 2049


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _gz_truncate(path: Path, keep: int) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:keep]))


IDX_DEFECTS = {
    # name: (file to damage, damage, text the error must contain)
    "wrong magic": (
        "train-labels-idx1-ubyte.gz",
        lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(12))),
        "magic number 2051, expected 2049",
    ),
    "not an IDX header": (
        "t10k-images-idx3-ubyte.gz",
        lambda p: p.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100))),
        "expected 2051",
    ),
    "truncated data": ("train-images-idx3-ubyte.gz", lambda p: _gz_truncate(p, 16 + 28 * 28 * 10 + 5), "truncated"),
    "truncated header": ("t10k-labels-idx1-ubyte.gz", lambda p: _gz_truncate(p, 6), "truncated"),
    "trailing bytes": (
        "t10k-labels-idx1-ubyte.gz",
        lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()) + b"xx")),
        "2 bytes beyond",
    ),
    "cut gzip stream": ("train-images-idx3-ubyte.gz", lambda p: _truncate(p, 200), "not a readable IDX file"),
    "missing file": ("t10k-images-idx3-ubyte.gz", lambda p: p.unlink(), "no such file"),
    "count mismatch": ("t10k-labels-idx1-ubyte.gz", lambda p: write_idx(p, np.zeros(19, np.uint8)), "20 images, but"),
    "label out of range": (
        "train-labels-idx1-ubyte.gz",
        lambda p: write_idx(p, np.full(60, 10, np.uint8)),
        "not a class",
    ),
    "images not 28x28": (
        "train-images-idx3-ubyte.gz",
        lambda p: write_idx(p, np.zeros((60, 32, 32), np.uint8)),
        "expected 28x28",
    ),
}


@pytest.mark.parametrize("defect", list(IDX_DEFECTS))
def test_bad_idx_files_are_one_error_naming_the_file(tmp_path: Path, defect: str) -> None:
    name, damage, needle = IDX_DEFECTS[defect]
    root = fake_root(tmp_path / "fmnist")
    damage(root / name)
    with pytest.raises(DatasetError) as info:
        build_dataset("fashion_mnist", root)
    message = str(info.value)
    assert needle in message and name.removesuffix(".gz") in message and "\n" not in message, message


def test_bad_idx_file_at_the_cli_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    root = fake_root(tmp_path / "fmnist")
    _gz_truncate(root / "t10k-images-idx3-ubyte.gz", 100)
    out = tmp_path / "out"
    recipe = REPO / "recipes" / "fmnist" / "l1_filter_50.yaml"
    code = main(
        ["run", str(recipe), "--out", str(out), "--quiet", *overrides(f"data.root={root}", "tracking.enabled=false")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "t10k-images-idx3-ubyte.gz: truncated" in err, err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_uncompressed_files_and_a_missing_root(tmp_path: Path) -> None:
    bundle = build_dataset("fashion_mnist", fake_root(tmp_path / "plain", gz=False))
    assert len(bundle.train) == 60 and len(bundle.test) == 20 and bundle.input_shape == (1, 28, 28)
    with pytest.raises(DatasetError, match=r"data\.root: .*nowhere does not exist"):
        build_dataset("fashion_mnist", tmp_path / "nowhere")


def test_images_are_kept_as_uint8_and_served_in_unit_range(tmp_path: Path) -> None:
    bundle = build_dataset("fashion_mnist", fake_root(tmp_path / "f"), augment=False)
    assert isinstance(bundle.train, UInt8ImageDataset) and bundle.train.images.dtype == torch.uint8
    x, y = bundle.train[7]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and y == 7
    torch.testing.assert_close(x, bundle.train.images[7].float() / 255)
    batch = torch.utils.data.DataLoader(bundle.test, batch_size=8)
    xb, yb = next(iter(batch))
    assert (
        xb.shape == (8, 1, 28, 28) and float(xb.min()) >= 0 and float(xb.max()) <= 1 and yb.tolist() == list(range(8))
    )


def test_augmentation_is_a_padded_crop_and_a_flip() -> None:
    """Every augmented image is one of the 5 x 5 crops of the 2-pixel zero-padded image, or its mirror,
    and both flips and several offsets occur."""
    images = torch.randint(1, 256, (1, 1, 28, 28), dtype=torch.uint8)
    data = UInt8ImageDataset(images, torch.zeros(1, dtype=torch.long), augment=True)
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))[0]
    crops = {
        (t, left, f): (
            padded[:, t : t + 28, left : left + 28].flip(-1) if f else padded[:, t : t + 28, left : left + 28]
        )
        for t in range(5)
        for left in range(5)
        for f in (0, 1)
    }
    torch.manual_seed(0)
    seen = set()
    for x, _ in data.__getitems__([0] * 200):
        match = [key for key, crop in crops.items() if torch.equal(x, crop)]
        assert len(match) == 1
        seen.add(match[0])
    assert {f for _, _, f in seen} == {0, 1} and len(seen) > 20


# --- the real files ---------------------------------------------------------------------------


@needs_real_files
def test_real_files_counts_classes_and_first_test_image() -> None:
    bundle = build_dataset("fashion_mnist", REAL_ROOT)
    assert len(bundle.train) == 60_000 and len(bundle.test) == 10_000
    assert torch.bincount(bundle.test.labels).tolist() == [1_000] * 10
    assert torch.bincount(bundle.train.labels).tolist() == [6_000] * 10
    assert int(bundle.test.images[0].sum()) == 33_456
    raw = read_idx(REAL_ROOT / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    assert raw.shape == (10_000, 28, 28) and int(raw[0].sum(dtype=np.int64)) == 33_456


@needs_real_files
def test_validation_split_is_disjoint_unaugmented_and_fixed_across_runs(tmp_path: Path) -> None:
    recipe = REPO / "recipes" / "fmnist" / "hydra_u95.yaml"
    contexts = []
    for seed in (0, 1):
        sets = [f"data.root={REAL_ROOT}", f"seed={seed}", "tracking.enabled=false", "device=cpu"]
        contexts.append(RunContext(load_recipe(recipe, sets), tmp_path / f"s{seed}", show_progress=False))
    (train0, val0), (train1, val1) = (c.split_indices for c in contexts)
    assert val0 == val1 and train0 == train1, "the validation split must not depend on the run seed"
    assert len(val0) == 5_000 and len(train0) == 55_000 and not set(val0) & set(train0)
    assert sorted(val0 + train0) == list(range(60_000))
    assert (train0, val0) == validation_split(60_000, 5_000, VALIDATION_SEED)
    ctx = contexts[0]
    assert ctx.train_set.indices == train0 and ctx.val_set.indices == val0
    x, _ = ctx.val_set[0]  # no crop or flip on validation images
    torch.testing.assert_close(x, ctx.data.train.images[val0[0]].float() / 255)
    assert torch.bincount(ctx.data.train.labels[val0]).min() > 400  # a random draw covers every class
    # data.eval_split=val (sweeps): the final figures' images, and the export example, are validation images.
    sets = [f"data.root={REAL_ROOT}", "data.eval_split=val", "evaluate.num_examples=50", "tracking.enabled=false"]
    sweep = RunContext(load_recipe(recipe, sets), tmp_path / "sweep", show_progress=False)
    held_out = {bytes(sweep.data.train.images[i].numpy()) for i in val0}
    images = torch.cat([x for x, _ in sweep.eval_subset_batches()] + [sweep.example_inputs])
    assert len(images) == 51 and all(bytes((x * 255).round().to(torch.uint8).numpy()) in held_out for x in images)


# --- the pipeline -----------------------------------------------------------------------------


def test_validation_recipe_fields_are_checked(tmp_path: Path, capsys) -> None:
    recipe = REPO / "recipes" / "digits_hydra.yaml"
    cases = [
        ("data.val_size=0", "finetune.select=best_val_pgd", "finetune.select: best_val_pgd needs a validation split"),
        ("data.val_size=0", "data.eval_split=val", "data.eval_split: val needs a validation split"),
        ("data.val_size=1347", "seed=0", "data.val_size: 1347 leaves nothing to train on"),
    ]
    for val_size, setting, needle in cases:
        out = tmp_path / "out"
        code = main(
            ["run", str(recipe), "--out", str(out), "--quiet", *overrides(val_size, setting, "tracking.enabled=false")]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and "\n" not in err, err
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def _train_scripted(model: torch.nn.Module, digits, checkpoints: Path, values: list[float], *, resume: bool = False):
    """PGD-1 training on 64 digits for 3 epochs whose "validation" metric is read from ``values``
    in turn (an interruption after the last one); returns the selection and each epoch's weights."""
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.data import make_loader
    from robprune_deploy.training import EpochSelection, TrainingPlan, adversarial_train

    subset = torch.utils.data.Subset(digits.train, range(64))
    snapshots: list[dict[str, torch.Tensor]] = []
    scripted = iter(values)

    def evaluate(trained: torch.nn.Module) -> dict[str, float]:
        value = next(scripted, None)
        if value is None:
            raise KeyboardInterrupt  # killed before this epoch's checkpoint
        snapshots.append({k: v.clone() for k, v in trained.state_dict().items()})
        return {"val_pgd_acc": value}

    select = EpochSelection("val_pgd_acc")
    with contextlib.suppress(KeyboardInterrupt):  # the scripted interruption
        adversarial_train(
            model,
            TrainingPlan(epochs=3, lr=0.05),
            ThreatModel(0.2, 0.2, 1),
            lambda e: make_loader(subset, 32, shuffle=True, epoch=e),
            device=torch.device("cpu"),
            stage="select",
            checkpoint_dir=checkpoints,
            resume=resume,
            evaluate=evaluate,
            select=select,
            show_progress=False,
        )
    return select, snapshots


def test_best_val_pgd_keeps_the_best_epoch_also_across_a_resume(digits, robust_cnn_state, tmp_path: Path) -> None:
    from robprune_deploy.models import build_model

    def fresh() -> torch.nn.Module:
        model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
        model.load_state_dict(robust_cnn_state)
        return model

    straight = fresh()
    select, snapshots = _train_scripted(straight, digits, tmp_path / "a", [0.5, 0.9, 0.1])
    assert (select.epoch, select.value) == (1, 0.9)
    kept = straight.state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)
    assert not torch.equal(kept["body.features.0.weight"], snapshots[2]["body.features.0.weight"])
    # Killed during epoch 2 (epoch 1 checkpointed), then resumed from the checkpoints: same weights.
    _train_scripted(fresh(), digits, tmp_path / "b", [0.5, 0.9])
    resumed = fresh()
    select, _ = _train_scripted(resumed, digits, tmp_path / "b", [0.1], resume=True)
    assert (select.epoch, select.value) == (1, 0.9)
    assert all(torch.equal(resumed.state_dict()[k], kept[k]) for k in kept)


@needs_real_files
def test_tiny_fashion_mnist_run_through_export_and_gate(tmp_path: Path) -> None:
    """A few hundred images, one or two epochs per stage: the whole pipeline, with validation-based selection."""
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(REPO / "recipes" / "fmnist" / "l1_filter_50.yaml"),
            "--out",
            str(out),
            "--quiet",
            *overrides(
                f"data.root={REAL_ROOT}",
                "device=cpu",
                "data.train_subset=256",
                "data.val_size=64",
                "data.batch_size=64",
                "attack.train_steps=2",
                "attack.eval_steps=3",
                "attack.val_steps=2",
                "pretrain.epochs=2",
                "finetune.epochs=1",
                "finetune.bn_recalibration_batches=2",
                "evaluate.num_examples=64",
                *LIGHT_EVAL,
                "evaluate.square_queries=10",
                "evaluate.square_examples=16",
                "evaluate.latency.repeats=3",
                "evaluate.latency.warmup=1",
                "tracking.enabled=false",
            ),
        ]
    )
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["data.train_examples"], s["data.val_examples"], s["data.test_examples"]) == (256, 64, 10_000)
    assert s["splits.onnx"] == s["splits.torch"] == s["splits.gate"] == "test" and s["splits.val"] == "val"
    assert s["splits.pretrain"] == "val" and s["pretrain.selected_epoch"] in (0, 1)
    assert s["onnx.examples"] == 64 and s["onnx.clean_acc"] > 0.3  # chance is 0.1
    assert 0 <= s["val.pgd_acc"] <= s["val.clean_acc"] and s["val.pgd_steps"] == 2
    assert s["onnx.weight_params"] < s["onnx.dense_weight_params"] and isinstance(s["gate.passed"], bool)
    assert "validation" in (out / "report.md").read_text()
