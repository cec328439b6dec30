"""Run integrity (issue 19): folder ownership and locks, exit codes, numbers checked before they are
trusted, input errors as one line, nothing left behind. Every refusal is one ``error:`` line, exit 2,
and a refused run leaves no ``--out``."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]
from conftest import FAST_RUN, LIGHT_EVAL  # type: ignore[import-not-found]

import robprune_deploy as rp
from robprune_deploy.algorithms import ALGORITHMS, CompressionAlgorithm, Granularity, PruningContext, PruningResult
from robprune_deploy.atomic import atomic_path, write_text
from robprune_deploy.checkpoints import save_checkpoint
from robprune_deploy.errors import NumericalError, OutputError
from robprune_deploy.masking import apply_masks
from robprune_deploy.models import build_model
from robprune_deploy.pipeline.ownership import LOCK_FILE, project_files
from robprune_deploy.surgery import count_model, prunable_layers
from robprune_deploy.training import TrainingPlan, adversarial_train

HYDRA, MRPF, L1 = RECIPES / "digits_hydra.yaml", RECIPES / "digits_mrpf.yaml", RECIPES / "digits_l1_filter.yaml"
OFF = sets("tracking.enabled=false")
QUICK_EVAL = sets("evaluate.num_examples=40", "attack.eval_steps=2", *LIGHT_EVAL, "tracking.enabled=false")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture()
def finished(digits_run: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the finished HYDRA digits run's folder."""
    copy = tmp_path / "hydra-run"
    shutil.copytree(digits_run["out"], copy)
    return copy


# --- 1. an output folder belongs to one recipe, and to one process -------------------------------
def _foreign(finished: Path, digits_run: dict[str, Any], case: str) -> list[object]:
    fast = [s for s in FAST_RUN if not s.startswith("compression.config.epochs")]
    other_weights = finished.parent / "other.pt"
    save_checkpoint({"model": build_model("digits_cnn", 10, 1, [0.5], [0.5]).state_dict()}, other_weights)
    return {
        "resume with the MRPF recipe": ["run", MRPF, "--out", finished, "--resume", *sets(*fast), *OFF],
        "finetune at another ratio": [
            "finetune",
            HYDRA,
            "--out",
            finished,
            *sets(*FAST_RUN, "compression.ratio=0.5"),
            *OFF,
        ],
        "export with the l1_filter recipe": ["export", L1, "--out", finished, *sets(*fast), *OFF],
        "rerun with another seed": ["run", HYDRA, "--out", finished, *sets(*FAST_RUN, "seed=1"), *OFF],
        "evaluate with other weights": [
            "evaluate",
            HYDRA,
            "--out",
            finished,
            *sets(*FAST_RUN, f"model.checkpoint={other_weights}"),
            *OFF,
        ],
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "resume with the MRPF recipe",
        "finetune at another ratio",
        "export with the l1_filter recipe",
        "rerun with another seed",
        "evaluate with other weights",
    ],
)
def test_a_folder_of_another_recipe_is_refused_naming_both(finished, digits_run, capsys, case) -> None:
    before = snapshot(finished)
    code, err = cli(capsys, *_foreign(finished, digits_run, case))
    line = one_error(err, "holds the results of recipe", "digits_hydra.yaml", "--force")
    assert code == 2
    if "recipe" in case:
        assert "digits_mrpf.yaml" in line or "digits_l1_filter.yaml" in line
    else:
        assert "other contents or --set overrides" in line
    assert snapshot(finished) == before  # nothing read as ours, nothing written


@pytest.mark.parametrize("damage", ["no state.json", "state.json of an older version", "garbage", "a list"])
def test_a_folder_whose_owner_is_unknown_or_damaged_is_refused(finished, capsys, damage) -> None:
    state = finished / "state.json"
    if damage == "no state.json":
        state.unlink()
    elif damage == "state.json of an older version":
        state.write_text(json.dumps(json.loads(state.read_text())["stages"]))
    else:
        state.write_text("{ not json" if damage == "garbage" else "[1, 2]")
    code, err = cli(capsys, "run", HYDRA, "--out", finished, "--resume", *sets(*FAST_RUN), *OFF)
    assert code == 2
    one_error(err, "--force")
    assert (finished / "finetuned.pt").is_file()


def test_force_clears_only_what_robprune_wrote_and_starts_over(finished, digits_run, capsys) -> None:
    assert {p.relative_to(finished) for p in finished.rglob("*") if p.is_file()} == {
        p.relative_to(finished) for p in project_files(finished)
    }, "--force must know every file a run writes"
    (finished / "notes.txt").write_text("mine")
    (finished / "plots" / "README.txt").write_text("mine too")
    (finished / "data").mkdir()
    (finished / "data" / "keep.pt").write_bytes(b"x")
    pretrained = digits_run["out"] / "pretrained.pt"
    code, err = cli(
        capsys, "pretrain", MRPF, "--out", finished, "--force", *sets(f"model.checkpoint={pretrained}"), *QUICK_EVAL
    )
    assert code == 0, err
    left = {str(p.relative_to(finished)) for p in finished.rglob("*") if p.is_file()}
    assert left == {"notes.txt", "plots/README.txt", "data/keep.pt", "state.json", "pretrained.pt"}
    state = json.loads((finished / "state.json").read_text())
    assert state["owner"]["recipe"].endswith("digits_mrpf.yaml") and list(state["stages"]) == ["pretrain"]


def test_force_refuses_to_delete_the_runs_own_checkpoint(finished, capsys) -> None:
    code, err = cli(
        capsys,
        "pretrain",
        MRPF,
        "--out",
        finished,
        "--force",
        *sets(f"model.checkpoint={finished / 'pretrained.pt'}"),
        *OFF,
    )
    assert code == 2
    one_error(err, "--force would delete", "pretrained.pt")
    assert (finished / "finetuned.pt").is_file()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["this live process", "a live child", "another host"])
def test_a_folder_held_by_another_process_is_refused(finished, capsys, holder) -> None:
    child = subprocess.Popen(["sleep", "30"]) if holder == "a live child" else None
    try:
        pid = child.pid if child else (1 if holder == "another host" else os.getpid())
        host = "elsewhere.example" if holder == "another host" else socket.gethostname()
        lock = finished / LOCK_FILE
        lock.write_text(json.dumps({"pid": pid, "host": host, "started": "2025-01-01T00:00:00+00:00"}))
        code, err = cli(capsys, "export", HYDRA, "--out", finished, *sets(*FAST_RUN), *OFF)
        assert code == 2
        one_error(err, f"in use by process {pid} on {host}", str(lock))
        assert json.loads(lock.read_text())["pid"] == pid  # not taken from a live holder
    finally:
        if child:
            child.send_signal(signal.SIGKILL)
            child.wait()


@pytest.mark.parametrize("lock_text", ["dead pid", "unreadable and old"])
def test_a_stale_lock_is_taken_over_and_released(digits_run, tmp_path, capsys, lock_text) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_FILE
    if lock_text == "dead pid":
        lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "x"}))
    else:
        lock.write_text("\x00garbage")
        os.utime(lock, (0, 0))
    pretrained = digits_run["out"] / "pretrained.pt"
    code, err = cli(capsys, "pretrain", HYDRA, "--out", out, *sets(f"model.checkpoint={pretrained}"), *QUICK_EVAL)
    assert code == 0, err
    assert not lock.exists() and (out / "pretrained.pt").is_file()


# --- 3. exit codes a CI job can trust (the gate's own cases are in test_gate_integrity) -------------
class _Crashing(CompressionAlgorithm):
    """A third-party algorithm with a bug: an internal error, not bad input."""

    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return {}["masks"]  # type: ignore[no-any-return]


class _WrongResult(CompressionAlgorithm):
    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return None  # type: ignore[return-value]


def _masked(model: torch.nn.Module, context: PruningContext, keep: float, poison: bool = False) -> PruningResult:
    """An unstructured result keeping the first ``keep`` fraction of every layer's weights."""
    dense = count_model(model, context.example_inputs)
    masks = {}
    for name, layer in prunable_layers(model).items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[: int(keep * weight.numel())] = True
        masks[f"{name}.weight"] = mask.view_as(weight)
    if poison:
        with torch.no_grad():
            next(iter(prunable_layers(model).values())).weight.fill_(float("nan"))  # type: ignore[operator]
    apply_masks(model, masks)
    return PruningResult(
        model,
        algorithm="plugin",
        granularity=Granularity.UNSTRUCTURED,
        ratio=context.ratio,
        example_inputs=context.example_inputs,
        dense_count=dense,
    )


class _Lazy(CompressionAlgorithm):
    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return _masked(model, context, keep=1.0)


class _Greedy(CompressionAlgorithm):
    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return _masked(model, context, keep=0.0)


class _Poisoned(CompressionAlgorithm):
    def apply(self, model: torch.nn.Module, context: PruningContext) -> PruningResult:
        return _masked(model, context, keep=1 - context.ratio, poison=True)


PLUGINS = {"crashing": _Crashing, "wrong_result": _WrongResult, "lazy": _Lazy, "greedy": _Greedy, "poisoned": _Poisoned}


def _prune_with(plugin: str, digits_run, tmp_path, capsys, monkeypatch) -> tuple[int, list[str], Path]:
    monkeypatch.setitem(ALGORITHMS._items, plugin, PLUGINS[plugin])
    out = tmp_path / "out"
    pretrained = digits_run["out"] / "pretrained.pt"
    code, err = cli(
        capsys,
        "prune",
        HYDRA,
        "--out",
        out,
        *sets(f"compression.algorithm={plugin}", "compression.config={}", f"model.checkpoint={pretrained}"),
        *QUICK_EVAL,
    )
    return code, err, out


@pytest.mark.parametrize("plugin", ["crashing", "wrong_result"])
def test_an_internal_error_exits_3_with_its_traceback_in_a_log(
    digits_run, tmp_path, capsys, monkeypatch, plugin
) -> None:
    code, err, out = _prune_with(plugin, digits_run, tmp_path, capsys, monkeypatch)
    assert code == 3
    # A bug in a plugin is named as one (issue 24: plugins cannot pass for the core).
    line = one_error(err, f"plugin bug: algorithm '{plugin}'", f"traceback in {out / 'robprune-error.log'}")
    assert "Traceback" in (out / "robprune-error.log").read_text() and line.count("\n") == 0
    assert not (out / LOCK_FILE).exists()


# --- 4. numbers are checked before they are trusted ---------------------------------------------------
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("pretrain.lr=.nan", "pretrain.lr"),
        ("finetune.weight_decay=.inf", "finetune.weight_decay"),
        ("attack.step_size=-.inf", "attack.step_size"),
        ("gate.max_parity_error=.nan", "gate.max_parity_error"),
        ("compression.config.lr=.nan", "compression.config.lr"),
        ("compression.tolerance=.inf", "compression.tolerance"),
        ("pretrain.epochs=1000000", "pretrain.epochs"),
        ("attack.eval_steps=1000000", "attack.eval_steps"),
        ("evaluate.square_queries=1000000000", "evaluate.square_queries"),
        ("data.batch_size=100000000", "data.batch_size"),
        ("data.num_workers=100000", "data.num_workers"),
        (f"data.num_workers={(os.cpu_count() or 1) + 1}", "data.num_workers"),
        ("seed=4294967296", "seed"),
        ("seed=-1", "seed"),
        ("evaluate.subset_seed=18446744073709551616", "evaluate.subset_seed"),
    ],
)
def test_non_finite_and_unbounded_numbers_are_refused(tmp_path, capsys, override, field) -> None:
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, *sets(override), *OFF)
    assert code == 2
    one_error(err, field)
    assert not out.exists()


@pytest.mark.parametrize(
    ("key", "value"), [("body.features.0.weight", float("nan")), ("body.features.1.running_var", float("inf"))]
)
def test_a_checkpoint_with_non_finite_tensors_is_refused(tmp_path, capsys, key, value) -> None:
    state = build_model("digits_cnn", 10, 1, [0.5], [0.5]).state_dict()
    assert key in state, sorted(state)
    state[key].view(-1)[0] = value
    path = tmp_path / "weights.pt"
    torch.save({"model": state}, path)
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, *sets(f"model.checkpoint={path}"), *OFF)
    assert code == 2
    one_error(err, str(path), "NaN or inf", key)
    assert not out.exists()


def test_a_diverging_loss_stops_the_run_naming_stage_and_epoch(tmp_path, capsys) -> None:
    code, err = cli(
        capsys,
        "pretrain",
        HYDRA,
        "--out",
        tmp_path / "out",
        *sets("pretrain.lr=1e30", "data.train_subset=64"),
        *QUICK_EVAL,
    )
    assert code == 2
    one_error(err, "pretrain: epoch 1:")


def test_non_finite_inputs_stop_training_and_mask_search_naming_stage_and_epoch(digits, robust_cnn) -> None:
    x, y = digits.train.tensors[0][:16].clone(), digits.train.tensors[1][:16]
    x[3, 0, 4, 4] = float("nan")
    plan = TrainingPlan(epochs=2, lr=0.01)
    threat = rp.ThreatModel(0.1, 0.05, 1)
    with pytest.raises(NumericalError, match="finetune: epoch 1: an input batch holds NaN or inf"):
        adversarial_train(robust_cnn, plan, threat, lambda e: [(x, y)], device=torch.device("cpu"), stage="finetune")
    context = PruningContext(train_data=[(x, y)], ratio=0.5, threat=threat, example_inputs=x[:1])
    with pytest.raises(NumericalError, match="prune: epoch 1: an input batch holds NaN or inf"):
        ALGORITHMS.get("hydra")(ALGORITHMS.get("hydra").Config(epochs=1)).apply(robust_cnn, context)


@pytest.mark.parametrize(
    ("plugin", "error"), [("lazy", "reached 0.0000"), ("greedy", "reached 1.0000"), ("poisoned", "NaN or inf")]
)
def test_a_result_that_misses_its_target_or_is_not_finite_is_an_error(
    digits_run, tmp_path, capsys, monkeypatch, plugin, error
) -> None:
    code, err, out = _prune_with(plugin, digits_run, tmp_path, capsys, monkeypatch)
    assert code == 2
    one_error(err, error)
    assert not (out / "pruned.pt").exists()


# --- 7. every input error is one line, exit 2 ----------------------------------------------------------
@pytest.mark.parametrize(
    "case", ["a file", "under a file", "not writable", "a NUL", "NUL in the recipe path", "--force with --resume"]
)
def test_unusable_out_folders_are_refused(tmp_path, capsys, case) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    out: object = {
        "a file": afile,
        "under a file": afile / "out",
        "not writable": Path("/proc/robprune-out/x"),
        "a NUL": f"{tmp_path}/o\x00ut",
        "NUL in the recipe path": tmp_path / "out",
        "--force with --resume": tmp_path / "out",
    }[case]
    recipe = f"{HYDRA}\x00" if case == "NUL in the recipe path" else HYDRA
    flags = ["--force", "--resume"] if case.startswith("--force") else []
    code, err = cli(capsys, "run", recipe, "--out", out, *flags, *OFF)
    assert code == 2
    one_error(err, "NUL" if "NUL" in case else ("--force" if flags else "--out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ('data.root="/data/c\\0ifar"', "data.root: Value error, contains a NUL character"),
        ('model.checkpoint="w\\0.pt"', "model.checkpoint"),
        ("device=cuda", "device: cuda"),
        ("device=cuda:7", "device: cuda:7"),
        ("tracking.alias=latest", "tracking.alias"),
        ("tracking.registered_model=a/b", "tracking.registered_model"),
    ],
)
def test_unusable_recipe_values_are_one_line(tmp_path, capsys, override, needle) -> None:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if override.startswith("device") and gpus > (7 if override.endswith(":7") else 0):
        pytest.skip("this machine has that GPU")
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, *sets(override), *OFF)
    assert code == 2
    one_error(err, needle)
    assert not out.exists()


def _fsize_limit(limit: int) -> Any:
    """The kernel refuses writes past ``limit`` bytes (EFBIG), as a full disk refuses them (ENOSPC)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    def restore() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)

    return restore


def test_a_full_disk_is_one_error_line(digits_run, tmp_path, capsys) -> None:
    """No small file system can be mounted here: /dev/full gives a real ENOSPC inside the atomic
    write layer, and RLIMIT_FSIZE makes the kernel refuse real writes (EFBIG) of torch's writer
    and of a whole CLI command."""
    no_space = pytest.raises(OutputError, match=r"x\.json: cannot be written \(No space left on device\)")
    with no_space, atomic_path(tmp_path / "x.json") as tmp, open("/dev/full", "w") as full:
        tmp.write_text("{}")
        full.write("x" * 4096)
        full.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    restore = _fsize_limit(64_000)
    try:
        with pytest.raises(OutputError, match=r"big\.pt: cannot be written"):
            save_checkpoint({"w": torch.zeros(100_000)}, tmp_path / "big.pt")
        out = tmp_path / "out"
        code, err = cli(
            capsys,
            "pretrain",
            HYDRA,
            "--out",
            out,
            *sets(f"model.checkpoint={digits_run['out'] / 'pretrained.pt'}"),
            *QUICK_EVAL,
        )
    finally:
        restore()
    assert code == 2
    one_error(err, "pretrained.pt: cannot be written")
    assert not (out / "pretrained.pt").exists() and not list(out.glob(".*.tmp"))
    write_text(tmp_path / "after.txt", "the limit is lifted")


def _image_folder(root: Path, damage: str) -> Path:
    from PIL import Image

    for split, count in (("train", 10), ("val", 3)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"x{i}.png")
    victim = {"truncated, late in train": root / "train/b/x9.png", "empty, in val": root / "val/b/x2.png"}.get(
        damage, root / "train/b/x5.png"
    )
    if damage.startswith("truncated"):
        victim.write_bytes(victim.read_bytes()[:60])
    elif damage.startswith("empty"):
        victim.write_bytes(b"")
    else:
        victim.write_bytes(b"GIF89a this is not really an image")
    return victim


@pytest.mark.parametrize("damage", ["truncated, late in train", "empty, in val", "not an image, loaded by a worker"])
def test_a_corrupt_image_anywhere_in_an_image_folder_is_named(tmp_path, capsys, damage) -> None:
    victim = _image_folder(tmp_path / "images", damage)
    workers = "1" if "worker" in damage else "0"
    code, err = cli(
        capsys,
        "pretrain",
        HYDRA,
        "--out",
        tmp_path / "out",
        *sets(
            "data.name=imagefolder",
            f"data.root={tmp_path / 'images'}",
            "data.augment=false",
            "data.batch_size=8",
            f"data.num_workers={workers}",
            "pretrain.epochs=1",
            "attack.train_steps=1",
        ),
        *QUICK_EVAL,
    )
    assert code == 2
    one_error(err, f"image {victim}: cannot be decoded")


# --- 8. nothing left behind ---------------------------------------------------------------------
def test_a_finished_run_leaves_no_temporary_files_and_normal_permissions(digits_run) -> None:
    out = digits_run["out"]
    mask = os.umask(0o022)
    os.umask(mask)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p.name for p in files if ".tmp" in p.name or p.name == LOCK_FILE]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~mask)}
