"""`release.json`: a gate's record anyone can verify with `robprune verify`.

One real gate (the suite's adversarially trained digits CNN, registered in a temporary MLflow
store, signed with a fresh Ed25519 key) is verified as written, then with one byte flipped in the
model, in the recipe and in the signature: each is a mismatch (exit 1) naming what changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from clitools import cli, one_error  # type: ignore[import-not-found]
from conftest import overrides  # type: ignore[import-not-found]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from robprune_deploy.cli.main import main
from robprune_deploy.export import export_onnx
from robprune_deploy.gate.staging import onnx_sha256
from robprune_deploy.pipeline import RunContext
from robprune_deploy.recipe import load_recipe
from robprune_deploy.release.canonical import recipe_sha256
from robprune_deploy.release.examples import examples_of
from robprune_deploy.tracking import models as registry

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"
SETS = [
    "evaluate.num_examples=120",
    "evaluate.attacks=pgd",
    "evaluate.square_queries=40",
    "evaluate.square_examples=40",
    "evaluate.curve_steps=0",
    "evaluate.indicator_examples=30",
    "evaluate.latency.repeats=3",
    "evaluate.latency.warmup=1",
    "gate.min_clean_acc=0.3",
    "gate.min_pgd_acc=0.05",
    "gate.max_pgd_drop=0.3",
]
NAME = "digits-release"


def _write_key(folder: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def released(digits, robust_cnn_state, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One signed gate of the trained CNN (dense.onnx beside it: the same weights), registered."""
    from robprune_deploy.models import build_model

    root = tmp_path_factory.mktemp("release")
    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    model.load_state_dict(robust_cnn_state)
    folder = root / "models"
    folder.mkdir()
    onnx = export_onnx(model, folder / "model.onnx", digits.test.tensors[0][:1])
    shutil.copyfile(onnx, folder / "dense.onnx")
    private, public = _write_key(root, "signer")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    report = root / "report"
    args = ["gate", str(onnx), "--recipe", str(RECIPE), "--report", str(report), "--tracking-uri", uri]
    code = main([*args, "--quiet", "--register", NAME, "--sign-key", str(private), *overrides(*SETS)])
    assert code == 0
    return {"model": onnx, "report": report, "uri": uri, "private": private, "public": public, "root": root}


def _verify(capsys, released: dict[str, Any], *extra: object, record: Path | None = None) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", str(record or released["report"] / "release.json"), *[str(e) for e in extra]])
    return code, capsys.readouterr().out


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_the_record_holds_the_hashes_of_the_measured_registered_bytes_and_intervals(released) -> None:
    report = released["report"]
    record = json.loads((report / "release.json").read_text())
    gate = json.loads((report / "gate.json").read_text())
    version = record["model"]["registered"]["version"]
    assert record["model"]["registered"] == {"name": NAME, "version": gate["registered_version"]}
    registered = registry.resolve_onnx(f"models:/{NAME}/{version}", released["uri"])
    assert record["model"]["sha256"] == onnx_sha256(registered) == gate["model_sha256"]
    assert record["model"]["sha256"] == hashlib.sha256(released["model"].read_bytes()).hexdigest()
    assert record["baseline"]["sha256"] == gate["baseline_sha256"]
    # The recipe the gate used, resolved (overrides applied), is the one hashed.
    recipe = load_recipe(RECIPE, SETS)
    assert record["recipe"]["sha256"] == recipe_sha256(recipe)
    assert record["recipe"]["resolved"]["evaluate"]["num_examples"] == 120
    # The examples: 120 indices of the test split and the hash of their tensors, as recomputed here.
    examples = record["examples"]
    assert (examples["count"], examples["split"], examples["dataset"]) == (120, "test", "digits")
    assert len(set(examples["indices"])) == 120
    data = RunContext(recipe, released["root"] / "ctx", show_progress=False).evaluation_data()
    ctx = RunContext(recipe, released["root"] / "ctx", show_progress=False)
    assert examples_of(ctx, data.name, data.batches).sha256 == examples["sha256"]
    # Each accuracy with its count and Wilson 95% interval, the gate's own figure.
    clean = record["figures"]["onnxruntime"]["candidate"]["clean_acc"]
    assert clean["value"] == pytest.approx(gate["candidate"]["clean_acc"])
    assert clean["correct"] == round(clean["value"] * 120) and clean["examples"] == 120
    assert clean["interval"]["low"] < clean["value"] < clean["interval"]["high"]
    assert 0.05 < clean["interval"]["high"] - clean["interval"]["low"] < 0.25  # n = 120
    square = record["figures"]["onnxruntime"]["candidate"]["square_acc"]
    assert square["examples"] == 40
    assert record["verdict"] == {"passed": True, "failures": []}
    assert record["runtime"]["runtimes"]["onnxruntime"]["provider"]
    assert record["code"]["packages"]["cryptography"]
    assert record["signature"]["algorithm"] == "ed25519"


def test_the_model_card_is_written_and_logged_in_the_gate_run(released) -> None:
    from mlflow import MlflowClient

    card = (released["report"] / "MODEL_CARD.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card
    for section in ("## Model details", "## Uses", "## Evaluation", "## Robustness", "## Limitations"):
        assert section in card
    record = json.loads((released["report"] / "release.json").read_text())
    assert record["model"]["sha256"] in card
    client = MlflowClient(released["uri"])
    run_id = client.get_model_version(NAME, record["model"]["registered"]["version"]).run_id
    logged = {a.path for a in client.list_artifacts(run_id, "gate")}
    assert {"gate/release.json", "gate/MODEL_CARD.md"} <= logged


def test_verify_passes_on_the_untouched_files(released, capsys) -> None:
    code, out = _verify(capsys, released, released["model"], "--public-key", released["public"],
                        "--recipe", RECIPE, *overrides(*SETS))  # fmt: skip
    assert code == 0, out
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "ok model",
        "ok recipe (in the record)",
        "ok recipe",
        "ok signature",
    ]


def test_one_flipped_byte_of_the_model_fails_naming_the_model(released, capsys, tmp_path) -> None:
    data = released["model"].read_bytes()
    changed = tmp_path / "model.onnx"
    changed.write_bytes(_flip(data, len(data) // 2))
    code, out = _verify(capsys, released, changed, "--public-key", released["public"])
    assert code == 1
    assert [line for line in out.splitlines() if line.startswith("MISMATCH")] == [
        next(line for line in out.splitlines() if line.startswith("MISMATCH model:"))
    ]


def test_one_flipped_byte_of_the_recipe_fails_naming_the_recipe(released, capsys, tmp_path) -> None:
    text = RECIPE.read_bytes()
    at = text.index(b"eps: 0.2") + len(b"eps: 0.")  # 0.2 -> 0.3: still a valid recipe, another one
    changed = tmp_path / "recipe.yaml"
    changed.write_bytes(_flip(text, at))
    code, out = _verify(capsys, released, released["model"], "--recipe", changed, *overrides(*SETS))
    assert code == 1
    mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatches) == 1 and mismatches[0].startswith("MISMATCH recipe:"), out


def test_one_flipped_byte_of_the_signature_fails_naming_the_signature(released, capsys, tmp_path) -> None:
    record = json.loads((released["report"] / "release.json").read_text())
    value = base64.b64decode(record["signature"]["value"])
    record["signature"]["value"] = base64.b64encode(_flip(value, 10)).decode()
    changed = tmp_path / "release.json"
    changed.write_text(json.dumps(record))
    for key in ((), ("--public-key", released["public"])):  # with the signer's key, and with the record's
        code, out = _verify(capsys, released, released["model"], *key, record=changed)
        assert code == 1
        mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
        assert len(mismatches) == 1 and mismatches[0].startswith("MISMATCH signature:"), out


def test_a_changed_figure_breaks_the_signature_and_a_wrong_key_fails(released, capsys, tmp_path) -> None:
    record = json.loads((released["report"] / "release.json").read_text())
    record["figures"]["onnxruntime"]["candidate"]["pgd_acc"]["value"] = 0.99
    changed = tmp_path / "release.json"
    changed.write_text(json.dumps(record))
    code, out = _verify(capsys, released, released["model"], "--public-key", released["public"], record=changed)
    assert code == 1 and "MISMATCH signature:" in out
    _, other = _write_key(tmp_path, "other")
    code, out = _verify(capsys, released, released["model"], "--public-key", other)
    assert code == 1 and "MISMATCH signature:" in out and "MISMATCH model" not in out


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing record", "cannot be read"),
        ("gate.json as the record", "not a release record"),
        ("missing model", "no such file"),
        ("a private key as the public key", "not a PEM public key"),
        ("--set without --recipe", "--set needs --recipe"),
    ],
)
def test_bad_input_exits_2_with_one_line(released, capsys, tmp_path, case, needle) -> None:
    record, model = released["report"] / "release.json", released["model"]
    extra: list[object] = []
    if case == "missing record":
        record = tmp_path / "none.json"
    elif case == "gate.json as the record":
        record = released["report"] / "gate.json"
    elif case == "missing model":
        model = tmp_path / "none.onnx"
    elif case == "a private key as the public key":
        extra = ["--public-key", released["private"]]
    else:
        extra = ["--set", "seed=1"]
    code, lines = cli(capsys, "verify", record, model, *extra)
    assert code == 2
    one_error(lines, needle)


def test_a_bad_signing_key_is_refused_before_measuring(released, capsys, tmp_path) -> None:
    code, lines = cli(capsys, "gate", released["model"], "--recipe", RECIPE, "--report", tmp_path / "r",
                      "--sign-key", released["public"], "--quiet")  # fmt: skip
    assert code == 2
    one_error(lines, "--sign-key", "not a PEM private key")
    assert not (tmp_path / "r" / "gate.json").exists()


def test_remeasure_finds_every_figure_inside_its_interval(released, capsys) -> None:
    code, out = _verify(capsys, released, released["model"], "--remeasure", "--quiet")
    assert code == 0, out
    figures = [line for line in out.splitlines() if line.startswith("ok figure onnxruntime.")]
    assert any(".candidate.clean_acc" in line for line in figures)
    assert any(".baseline.pgd_acc" in line for line in figures)
    assert "ok examples:" in out and "ok baseline:" in out


def test_an_unsigned_record_passes_without_a_key_and_fails_with_one(released, capsys, tmp_path) -> None:
    record = json.loads((released["report"] / "release.json").read_text())
    del record["signature"]
    unsigned = tmp_path / "release.json"
    unsigned.write_text(json.dumps(record))
    code, out = _verify(capsys, released, released["model"], record=unsigned)
    assert code == 0 and "signature" not in out
    code, out = _verify(capsys, released, released["model"], "--public-key", released["public"], record=unsigned)
    assert code == 1 and "MISMATCH signature: the record is not signed" in out
    # Unsigned, a recipe changed inside the record no longer matches the recorded hash.
    record["recipe"]["resolved"]["attack"]["eps"] = 0.3
    unsigned.write_text(json.dumps(record))
    code, out = _verify(capsys, released, released["model"], record=unsigned)
    assert code == 1 and "MISMATCH recipe (in the record):" in out


def test_the_wilson_interval_is_the_textbook_one() -> None:
    from robprune_deploy.errors import ArgumentError
    from robprune_deploy.statistics import wilson_interval

    low, high = wilson_interval(8, 10)  # Newcombe (1998), Table I: 0.4902 - 0.9433
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ArgumentError, match="successes"):
        wilson_interval(11, 10)
