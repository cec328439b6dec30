"""The offline GPU kit (benchmarks/gpu): build from local wheels, split, reassemble, verify, install;
and the GPU check's dry run. No network: the wheels are made here."""

from __future__ import annotations

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
            "--target-list", str(root / "pip_list.txt"), "--dataset", str(dataset), "--part-size", "4096",
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
