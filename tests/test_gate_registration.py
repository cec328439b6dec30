"""The gate registers exactly what it measured (issue 24): an MLflow model URI stands for the file its
ONNX flavor serves, the gate measures and registers one staging copy identified by its SHA-256,
URIs (and tags holding URIs) stay inside the artifact store, and no alias stays on a failed version."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import onnx
import pytest
from clitools import ROOT, cli, one_error, sets  # type: ignore[import-not-found]
from mlflow import MlflowClient
from test_gate_integrity import HYDRA, NO_THRESHOLDS, SMALL, constant_prediction, edited  # type: ignore[import-not-found]

EXPERIMENT = "robprune-digits"  # the HYDRA recipe's tracking.experiment
PASS = (*NO_THRESHOLDS, *sets("gate.min_clean_acc=0.3"))
FAIL = (*NO_THRESHOLDS, *sets("gate.min_clean_acc=0.999"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CONCURRENT_WRITES = ("mlruns/", ".hypothesis/")
"""Where other tests write while this one runs beside them (pytest -n): MLflow's default artifact folder
of stores the tests make themselves (runs through robprune keep theirs beside the store), and
hypothesis's cache of the constants in the code. The gate under test cannot write there: its working
folder is the fixture's own, checked empty afterwards."""


def _tree_state() -> str:
    """The repository's files as git sees them, ignored ones (mlflow.db, ...) included."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(line for line in status.splitlines() if not line[3:].startswith(CONCURRENT_WRITES))


@pytest.fixture()
def store(digits_run, tmp_path, monkeypatch) -> Iterator[str]:
    """A fresh MLflow sqlite store whose artifacts, like the gate's temporary folders, live in tmp_path;
    nothing outside tmp_path changes (the repository's files, the user's model files)."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # restored (unset) afterwards
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    before = (_tree_state(), sha256(digits_run["out"] / "model.onnx"), sha256(digits_run["out"] / "dense.onnx"))
    yield uri
    assert (_tree_state(), sha256(digits_run["out"] / "model.onnx"), sha256(digits_run["out"] / "dense.onnx")) == before
    assert not list((tmp_path / "tmp").glob("robprune-gate-*"))  # the staging copies went with the gate
    assert not list((tmp_path / "cwd").iterdir())


def gate(capsys, uri: str, model: Path | str, report: Path, *extra: str) -> tuple[int, list[str]]:
    return cli(
        capsys, "gate", model, "--recipe", HYDRA, "--report", report, "--quiet", "--tracking-uri", uri, *SMALL, *extra
    )


def register(path: Path, name: str, tags: dict[str, str] | None = None, extra_files: list[str] | None = None) -> str:
    """Log ``path`` as an MLflow ONNX model (one self-contained data file) and register it under ``name``."""
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load(str(path)), name="onnx_model", save_as_external_data=False, extra_files=extra_files
        )
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)


def flavor_file(name: str, version: str, into: Path) -> Path:
    """The ONNX flavor's file of a registered version, as MLflow serves it."""
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(into)))
    return folder / mlflow.models.Model.load(str(folder)).flavors["onnx"]["data"]


def when_staged(tmp_path: Path, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in a thread as soon as the gate has written its staging copy of the candidate."""
    staged = tmp_path / "tmp"

    def wait_then_act() -> None:
        deadline = time.monotonic() + 120
        while not list(staged.glob("robprune-gate-*/staging/candidate/*.onnx")) and time.monotonic() < deadline:
            time.sleep(0.005)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def test_a_model_uri_is_its_onnx_flavors_file_not_the_first_onnx_file_of_the_folder(
    digits_run, store, tmp_path, capsys
) -> None:
    decoy = tmp_path / "a_decoy.onnx"  # extra_files/a_decoy.onnx sorts before model.onnx
    decoy.write_bytes((digits_run["out"] / "dense.onnx").read_bytes())
    version = register(digits_run["out"] / "model.onnx", "digits-decoy", extra_files=[str(decoy)])
    served = flavor_file("digits-decoy", version, tmp_path / "download")
    assert sorted(served.parent.rglob("*.onnx"))[0].name == "a_decoy.onnx" != served.name

    code, err = gate(
        capsys,
        store,
        f"models:/digits-decoy/{version}",
        tmp_path / "r",
        *PASS,
        "--register",
        "digits-decoy",
        "--alias",
        "production",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    assert report["model_sha256"] == sha256(served) != sha256(decoy)
    assert report["registered_version"] == version and "baseline_sha256" not in report
    assert report["alias"] == [
        {"alias": "production", "action": "moved", "from": None, "to": version, "reason": "the gate passed"}
    ]
    assert err == [f"alias 'production' of 'digits-decoy': set on version {version} (the gate passed)"]
    client = MlflowClient(store)
    tags = client.get_model_version("digits-decoy", version).tags
    assert tags["robprune.sha256"] == sha256(served) and tags["gate.passed"] == "true"
    gate_run = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.stage = 'gate'")
    assert [r.data.tags["robprune.sha256"] for r in gate_run] == [sha256(served)]


@pytest.mark.parametrize(
    ("folder", "needle"),
    [
        ("not_onnx", "an MLflow model without an ONNX flavor (flavors: python_function)"),
        ("two", "ambiguous, an artifact folder with 2 .onnx files (a.onnx, b.onnx)"),
    ],
)
def test_a_model_folder_without_one_onnx_file_to_serve_exits_2(digits_run, store, tmp_path, capsys, folder, needle):
    model = digits_run["out"] / "model.onnx"
    (tmp_path / "not_onnx").mkdir()
    (tmp_path / "not_onnx" / "MLmodel").write_text("flavors:\n  python_function: {loader_module: x}\n")
    shutil.copy(model, tmp_path / "not_onnx" / "model.onnx")
    (tmp_path / "two").mkdir()
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(model, tmp_path / "two" / name)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path / folder), folder)
    uri = f"runs:/{run.info.run_id}/{folder}"
    code, err = gate(capsys, store, uri, tmp_path / "r", *PASS)
    assert code == 2
    one_error(err, f"error: model {uri}: {needle}")
    assert not (tmp_path / "r").exists()


def test_a_file_swapped_while_the_gate_runs_is_never_what_gets_registered(digits_run, store, tmp_path, capsys):
    folder = tmp_path / "candidate"
    folder.mkdir()
    model, dense = folder / "model.onnx", folder / "dense.onnx"
    shutil.copy(digits_run["out"] / "model.onnx", model)
    shutil.copy(digits_run["out"] / "dense.onnx", dense)
    measured_bytes = sha256(model)
    swapped = edited(model, tmp_path / "swapped.onnx", constant_prediction)  # always class 3

    def swap() -> None:
        shutil.copy(swapped, folder / "next.onnx")
        (folder / "next.onnx").replace(model)

    thread = when_staged(tmp_path, swap)
    code, err = gate(capsys, store, model, tmp_path / "r", *PASS, "--register", "digits-swap", "--alias", "production")
    thread.join(5)
    assert sha256(model) == sha256(swapped) != measured_bytes  # the swap did happen, during the gate
    assert code == 0, err  # the measured model is the one read first: a constant model would be at chance
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    assert report["candidate"]["clean_acc"] > 0.5
    assert report["model_sha256"] == measured_bytes
    assert report["baseline_sha256"] == sha256(dense) and report["baseline_model"] == str(dense)
    served = flavor_file("digits-swap", report["registered_version"], tmp_path / "download")
    assert sha256(served) == measured_bytes  # byte for byte what was measured
    tags = MlflowClient(store).get_model_version("digits-swap", report["registered_version"]).tags
    assert tags["robprune.sha256"] == measured_bytes and tags["robprune.baseline_sha256"] == sha256(dense)


def test_a_registered_artifact_changed_during_the_gate_is_a_failed_registration(digits_run, store, tmp_path, capsys):
    version = register(digits_run["out"] / "model.onnx", "digits-tampered")
    served = flavor_file("digits-tampered", version, tmp_path / "download")
    stored = [p for p in (tmp_path / "artifacts").rglob(served.name) if sha256(p) == sha256(served)]
    assert len(stored) == 1  # the file inside the artifact store
    swapped = edited(stored[0], tmp_path / "swapped.onnx", constant_prediction)
    thread = when_staged(tmp_path, lambda: shutil.copy(swapped, stored[0]))
    uri = f"models:/digits-tampered/{version}"
    code, err = gate(
        capsys, store, uri, tmp_path / "r", *PASS, "--register", "digits-tampered", "--alias", "production"
    )
    thread.join(5)
    assert code == 0  # the verdict on the measured bytes stands
    message = (
        f"error: registration as 'digits-tampered' failed, the verdict stands (PASSED): {uri} holds sha256 "
        f"{sha256(swapped)}, not the measured model's {sha256(served)}: version not tagged, alias not moved"
    )
    assert err == [message]
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    assert report["model_sha256"] == sha256(served) and report["registration_error"] == message.split(": ", 2)[2]
    client = MlflowClient(store)
    assert not client.get_registered_model("digits-tampered").aliases
    assert "gate.passed" not in client.get_model_version("digits-tampered", version).tags


def test_a_uri_that_leaves_the_artifact_store_exits_2(digits_run, store, tmp_path, capsys) -> None:
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(digits_run["out"] / "model.onnx"), "x")
    uri = f"runs:/{run.info.run_id}/x/../../{run.info.run_id}/x/model.onnx"
    code, err = gate(capsys, store, uri, tmp_path / "r", *PASS)
    assert code == 2
    one_error(err, f"error: model {uri}: a '..' path component leaves the artifact store")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["absolute", "file", "dotdot"])
def test_a_baseline_tag_outside_the_artifact_store_exits_2_naming_the_tag(
    digits_run, store, tmp_path, capsys, kind
) -> None:
    outside = tmp_path / "elsewhere" / "dense.onnx"  # a real model: only the rule can refuse it
    outside.parent.mkdir()
    shutil.copy(digits_run["out"] / "dense.onnx", outside)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(outside), "baseline")
    value = {
        "absolute": str(outside),
        "file": f"file://{outside}",
        "dotdot": f"runs:/{run.info.run_id}/baseline/../../../elsewhere/dense.onnx",
    }[kind]
    version = register(digits_run["out"] / "model.onnx", "digits-tag", {"robprune.baseline_uri": value})
    problem = (
        "a '..' path component leaves the artifact store"
        if kind == "dotdot"
        else "not a runs:/ or models:/ URI; only the artifact store is read"
    )
    model = f"models:/digits-tag/{version}"
    code, err = gate(capsys, store, model, tmp_path / "r", *PASS)
    assert code == 2
    one_error(err, f"error: model {model}: tag robprune.baseline_uri = {value!r}: {problem}")
    assert not (tmp_path / "r").exists()


def _passed_for_production(client: MlflowClient, name: str, version: str) -> None:
    """What a passing gate with ``--alias production`` leaves on a version."""
    for key, value in (("gate.passed", "true"), ("gate.alias.production", "passed")):
        client.set_model_version_tag(name, version, key, value)


def test_a_failed_gate_takes_the_alias_back_to_the_last_passing_version_or_removes_it(
    digits_run, store, tmp_path, capsys
) -> None:
    client = MlflowClient(store)
    first = register(digits_run["out"] / "model.onnx", "digits-alias")
    second = register(digits_run["out"] / "model.onnx", "digits-alias")
    for version in (first, second):
        _passed_for_production(client, "digits-alias", version)
    client.set_model_version_tag("digits-alias", first, "gate.alias.staging", "passed")  # another alias's record
    client.set_registered_model_alias("digits-alias", "production", second)
    register_args = ("--register", "digits-alias", "--alias", "production")

    code, err = gate(capsys, store, f"models:/digits-alias/{second}", tmp_path / "r2", *FAIL, *register_args)
    assert code == 1
    reason = f"version {second} failed the gate; version {first} is the latest other version that passed it"
    assert err == [f"alias 'production' of 'digits-alias': version {second} -> version {first} ({reason})"]
    report = json.loads((tmp_path / "r2" / "gate.json").read_text())
    assert report["alias"] == [
        {"alias": "production", "action": "moved back", "from": second, "to": first, "reason": reason}
    ]
    assert str(client.get_model_version_by_alias("digits-alias", "production").version) == first
    assert client.get_model_version("digits-alias", second).tags["gate.passed"] == "false"

    # The version it went back to fails too: no other version passed for 'production', so it is removed.
    code, err = gate(capsys, store, f"models:/digits-alias/{first}", tmp_path / "r1", *FAIL, *register_args)
    assert code == 1
    reason = f"version {first} failed the gate and no other version passed it for this alias"
    assert err == [f"alias 'production' of 'digits-alias': removed from version {first} ({reason})"]
    report = json.loads((tmp_path / "r1" / "gate.json").read_text())
    assert report["alias"] == [
        {"alias": "production", "action": "removed", "from": first, "to": None, "reason": reason}
    ]
    assert "production" not in client.get_registered_model("digits-alias").aliases
