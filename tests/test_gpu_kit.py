"""The offline GPU kit (benchmarks/gpu): build from local wheels, split, reassemble, verify, install;
and the GPU check's dry run. No network: the wheels are made here."""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, GPU / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A real, installable pure-Python wheel holding module ``name`` with ``VERSION``."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("kit")
    house = root / "wheelhouse"
    house.mkdir()
    _wheel(house, "kitdemo_app", "1.0", ("kitdemo_lib>=1.0", "kitdemo_base", 'kitdemo_win; sys_platform == "win32"'))
    _wheel(house, "kitdemo_lib", "1.0")
    _wheel(house, "kitdemo_lib", "2.0")
    machine = root / "machine_site"  # what the offline machine already has
    with zipfile.ZipFile(_wheel(house, "kitdemo_base", "1.0")) as archive:
        archive.extractall(machine)
    (root / "pip_list.txt").write_text("Package      Version\n------------ -------\nkitdemo-base 1.0\ntorch 2.11.0\n")
    dataset = root / "fmnist"
    dataset.mkdir()
    build_kit = _load("build_kit")
    for i, name in enumerate(build_kit.DATASET_FILES):
        (dataset / name).write_bytes(os.urandom(1500 + 700 * i))
    out = root / "out"
    code = build_kit.main(
        [
            "--out", str(out), "--find-links", str(house), "--no-index", "--no-project",
            "--requirement", "kitdemo_app", "--requirement", "kitdemo_lib<2",
            "--target-list", str(root / "pip_list.txt"), "--dataset", str(dataset), "--part-size", "4K",
        ]
    )  # fmt: skip
    assert code == 0
    return {"root": root, "out": out, "machine": machine, "manifest": json.loads((out / "manifest.json").read_text())}


def _install(kit_dir: Path, target: Path, machine: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(machine)}
    command = ["bash", str(GPU / "install_kit.sh"), str(kit_dir), str(target), "--no-doctor"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_kit_carries_what_the_target_lacks_in_checksummed_parts(kit) -> None:
    manifest, parts = kit["manifest"], kit["out"] / "parts"
    assert manifest["carried"] == {"kitdemo-app": "1.0", "kitdemo-lib": "1.0"}  # lib<2 honoured, base left out
    assert manifest["left_out"] == {"kitdemo-base": "on the target"}
    assert len(manifest["parts"]) >= 3
    assert all(p["size"] <= 4096 for p in manifest["parts"])
    for part in manifest["parts"]:
        assert hashlib.sha256((parts / part["name"]).read_bytes()).hexdigest() == part["sha256"]
    joined = b"".join((parts / p["name"]).read_bytes() for p in manifest["parts"])
    assert hashlib.sha256(joined).hexdigest() == manifest["archive"]["sha256"]
    assert {f["path"] for f in manifest["files"]} >= {
        "wheels/kitdemo_app-1.0-py3-none-any.whl",
        "datasets/fashion-mnist/train-images-idx3-ubyte.gz",
    }


def test_kit_reassembles_installs_offline_and_refuses_a_tampered_part(kit, tmp_path) -> None:
    staged = tmp_path / "staged"  # parts staged one by one next to the manifest, as on the GPU machine
    staged.mkdir()
    (staged / "manifest.json").write_bytes((kit["out"] / "manifest.json").read_bytes())
    for part in kit["manifest"]["parts"]:
        (staged / part["name"]).write_bytes((kit["out"] / "parts" / part["name"]).read_bytes())
    target = tmp_path / "site"
    done = _install(staged, target, kit["machine"])
    assert done.returncode == 0, done.stderr + done.stdout
    assert (target / "kitdemo_app").is_dir() and (target / "kitdemo_lib").is_dir()
    assert not (target / "kitdemo_base").exists()  # the machine's own copy is used
    assert len(list((target / "datasets" / "fashion-mnist").glob("*.gz"))) == 4
    imported = subprocess.run(
        [sys.executable, "-c", "import kitdemo_app, kitdemo_lib, kitdemo_base; print(kitdemo_lib.VERSION)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{target}:{kit['machine']}"},
    )
    assert imported.stdout.strip() == "1.0", imported.stderr

    first = staged / kit["manifest"]["parts"][1]["name"]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    tampered = _install(staged, tmp_path / "site2", kit["machine"])
    assert tampered.returncode != 0
    assert f"{first.name}: checksum mismatch" in tampered.stderr
    assert not (tmp_path / "site2").exists()


def test_part_size_takes_bytes_or_a_size_with_a_unit(capsys) -> None:
    build_kit = _load("build_kit")
    assert build_kit.DEFAULT_PART_SIZE == 60 * 2**20
    sizes = {"4096": 4096, "4K": 4096, "60M": 60 * 2**20, "60 MiB": 60 * 2**20, "1.5G": 3 * 2**29, "100MB": 10**8}
    assert {text: build_kit.part_size(text) for text in sizes} == sizes
    for bad in ("1000", "0.5K", "60X", "-5M", "M", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            build_kit.part_size(bad)
    with pytest.raises(SystemExit) as exit_info:  # refused before anything is built
        build_kit.main(["--no-project", "--no-dataset", "--part-size", "60X"])
    assert exit_info.value.code == 2
    assert "--part-size: '60X': expected bytes or a size such as 60M" in capsys.readouterr().err


def _stage(stage: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(GPU / "stage_part.sh"), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "STAGE": str(stage)}, timeout=60)


def test_parts_are_staged_in_any_order_and_a_damaged_copy_is_dropped(kit, tmp_path) -> None:
    parts = [kit["out"] / "parts" / p["name"] for p in kit["manifest"]["parts"]]
    stage = tmp_path / "stage"
    assert _stage(stage, parts[1]).returncode != 0  # no manifest yet
    first = _stage(stage, kit["out"] / "manifest.json", parts[-1], parts[1])
    assert first.returncode == 0, first.stderr
    assert f"staged 2/{len(parts)} parts" in first.stdout
    assert f"missing: {' '.join(p.name for p in parts if p not in (parts[1], parts[-1]))}" in first.stdout
    damaged = tmp_path / "copy" / parts[0].name
    damaged.parent.mkdir()
    damaged.write_bytes(b"x" + parts[0].read_bytes()[1:])
    refused = _stage(stage, damaged)
    assert refused.returncode != 0 and f"{parts[0].name}: checksum mismatch, removed" in refused.stderr
    assert not (stage / parts[0].name).exists() and damaged.exists()  # the copy is kept where it arrived
    done = _stage(stage, *parts)
    assert done.returncode == 0 and "missing: none" in done.stdout
    assert all(p.exists() for p in parts)  # staging copies, it never moves
    installed = _install(stage, tmp_path / "site", kit["machine"])
    assert installed.returncode == 0, installed.stderr + installed.stdout


def test_install_and_check_stages_installs_and_writes_its_results(kit, tmp_path) -> None:
    parts = [kit["out"] / "parts" / p["name"] for p in kit["manifest"]["parts"]]
    stage, results = tmp_path / "stage", tmp_path / "results"
    assert _stage(stage, kit["out"] / "manifest.json", *parts[:-1]).returncode == 0
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3: this interpreter
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(kit["machine"]), str(GPU.parent.parent), os.environ.get("PYTHONPATH", "")]),
        "STAGE": str(stage),
        "SITE": str(tmp_path / "site"),
        "RESULTS": str(results),
        "CHECK_ARGS": "--dry-run",  # the check itself is tested below; here, that it is reached
    }
    command = ["bash", str(GPU / "install_and_check.sh"), str(parts[-1])]  # the last part arrives with the call
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"staged {len(parts)}/{len(parts)} parts" in done.stdout and "gpu_check exit 0" in done.stdout
    assert {"install.log", "doctor.txt", "gpu_check.json", "gpu_check.md"} <= {p.name for p in results.iterdir()}
    assert (tmp_path / "site" / "kitdemo_app").is_dir()
    assert json.loads((results / "gpu_check.json").read_text())["mode"] == "dry-run"


def test_gpu_check_dry_run_plans_every_step_and_checks_the_fmnist_inputs(tmp_path, capsys) -> None:
    gpu_check = _load("gpu_check")
    code = gpu_check.main(["--out", str(tmp_path / "a"), "--dry-run", "--recipe", str(tmp_path / "missing.yaml")])
    report = json.loads((tmp_path / "a" / "gpu_check.json").read_text())
    assert code == 0 and report["mode"] == "dry-run"
    assert list(report["steps"]) == [s.name for s in gpu_check.STEPS]
    assert report["planned_seconds"] <= gpu_check.BUDGET_S
    statuses = {name: entry["status"] for name, entry in report["steps"].items()}
    assert statuses.pop("fmnist_run") == "skipped" and set(statuses.values()) == {"planned"}
    assert "missing.yaml not found" in report["steps"]["fmnist_run"]["plan"]
    assert "| fmnist_run | skipped |" in (tmp_path / "a" / "gpu_check.md").read_text()

    root = tmp_path / "fmnist"  # a recipe and dataset files that exist: the run is planned
    root.mkdir()
    for name in gpu_check.DATASET_FILES:
        (root / name).write_bytes(b"")
    (tmp_path / "recipe.yaml").write_text("data: {name: digits}\n")
    args = ["--dry-run", "--only", "fmnist_run", "--recipe", str(tmp_path / "recipe.yaml"), "--data-root", str(root)]
    assert gpu_check.main(["--out", str(tmp_path / "b"), *args]) == 0
    fmnist = json.loads((tmp_path / "b" / "gpu_check.json").read_text())["steps"]["fmnist_run"]
    assert fmnist["status"] == "planned" and f"data.root={root}" in fmnist["plan"]
    capsys.readouterr()
