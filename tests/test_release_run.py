"""`robprune run` ends with the same release record as `robprune gate`: the SHA-256 of the bytes the
evaluation measured, the gate checked and MLflow registered (one hash for all three), signed with
`--sign-key`, verifiable with `robprune verify`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from robprune_deploy.cli.main import main
from robprune_deploy.errors import ReleaseError
from robprune_deploy.gate.staging import SHA256_TAG, onnx_sha256
from robprune_deploy.pipeline.release_stages import _staged
from robprune_deploy.tracking import models as registry


def test_a_run_records_and_signs_one_hash_for_the_measured_gated_and_registered_bytes(digits_run, capsys) -> None:
    from mlflow import MlflowClient

    out, summary = digits_run["out"], digits_run["summary"]
    record = json.loads((out / "release.json").read_text())
    measured = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert record["model"]["sha256"] == summary["onnx.sha256"] == summary["gate.model_sha256"] == measured
    assert record["baseline"]["sha256"] == hashlib.sha256((out / "dense.onnx").read_bytes()).hexdigest()
    assert summary["gate.release"] == str(out / "release.json")
    version = record["model"]["registered"]["version"]
    registered = registry.resolve_onnx(f"models:/digits-test/{version}", digits_run["uri"])
    assert onnx_sha256(registered) == measured
    assert MlflowClient(digits_run["uri"]).get_model_version("digits-test", version).tags[SHA256_TAG] == measured
    assert record["signature"]["algorithm"] == "ed25519"
    assert (out / "MODEL_CARD.md").read_text().count(measured) >= 1
    capsys.readouterr()
    code = main(
        ["verify", str(out / "release.json"), str(out / "model.onnx"), "--public-key", str(digits_run["public_key"])]
    )
    assert code == 0, capsys.readouterr().out


def test_a_model_file_that_is_not_the_measured_one_is_not_gated(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the bytes written after the evaluation")
    ctx = SimpleNamespace(summary={"onnx.sha256": hashlib.sha256(b"the bytes evaluated").hexdigest()})
    refused = pytest.raises(ReleaseError, match=r"model\.onnx: its bytes .* are not those the evaluation measured")
    with refused, _staged(ctx, model, "onnx.sha256", None):  # type: ignore[arg-type]
        pass
    ctx.summary["onnx.sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    with _staged(ctx, model, "onnx.sha256", None) as staged:  # type: ignore[arg-type]
        assert (
            staged.model.sha256 == ctx.summary["onnx.sha256"] and staged.model.path.read_bytes() == model.read_bytes()
        )
