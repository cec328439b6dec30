"""``release.json``: what a gate measured and decided, in a form anyone can check.

The record holds the SHA-256 of the model bytes the gate measured (and, with ``--register``,
registered: the registered artifact is checked against the same hash), of its baseline, of the
evaluation examples (:mod:`~robprune_deploy.release.examples`) and of the resolved recipe
(:mod:`~robprune_deploy.release.canonical`); the code and package versions; the runtime and the
provider of each runtime; every figure with its 95% interval (:mod:`~robprune_deploy.release.figures`);
the checks and the verdict; and, with a signing key, an Ed25519 signature
(:mod:`~robprune_deploy.release.signing`). ``robprune verify`` checks it.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robprune_deploy.atomic import write_json, write_text
from robprune_deploy.gate.staging import StagedModel
from robprune_deploy.gate.verdict import GateVerdict
from robprune_deploy.recipe import Recipe
from robprune_deploy.release.canonical import canonical_bytes, hashed_recipe, sha256_hex
from robprune_deploy.release.card import render_card
from robprune_deploy.release.examples import Examples
from robprune_deploy.release.figures import figures_of
from robprune_deploy.release.signing import sign

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

RELEASE_JSON, MODEL_CARD = "release.json", "MODEL_CARD.md"
FORMAT = "robprune-release/1"
PACKAGES = (
    "robprune-deploy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "numpy",
    "scipy",
    "mlflow",
    "cryptography",
)
"""Distributions whose versions the record holds (those installed)."""


@dataclass
class ReleaseInputs:
    """What the gate knows beside its verdict: the staged model and baseline it measured (their
    bytes' hashes), the recipe, the examples, the registered name and the signing key."""

    recipe: Recipe
    model: StagedModel
    model_source: str
    examples: Examples
    baseline: StagedModel | None = None
    baseline_source: str | None = None
    registered_name: str | None = None
    sign_key: Ed25519PrivateKey | None = None

    def write(self, verdict: GateVerdict, folder: Path) -> list[Path]:
        """``release.json`` (signed when a key was given) and ``MODEL_CARD.md`` in ``folder``, atomically."""
        return write_release(build_record(self, verdict), folder, self.sign_key)


def _git_commit() -> str | None:
    """The commit of the robprune_deploy source, when it runs from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip() or None
    return None


def versions() -> dict[str, Any]:
    """The code and package versions of this process."""
    from robprune_deploy import __version__

    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    return {
        "robprune_deploy": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": packages,
    }


def _model(staged: StagedModel, source: str) -> dict[str, Any]:
    return {"source": source, "file": staged.source.name, "sha256": staged.sha256}


def build_record(inputs: ReleaseInputs, verdict: GateVerdict) -> dict[str, Any]:
    """The release record (unsigned) of ``verdict``."""
    details = verdict.details
    recipe = hashed_recipe(inputs.recipe)
    model = _model(inputs.model, inputs.model_source)
    registered = inputs.registered_name and details.get("registered_version")
    if registered and not details.get("registration_error"):  # a version whose bytes did not match is not ours
        model["registered"] = {"name": inputs.registered_name, "version": str(details["registered_version"])}
    if details.get("registration_error"):
        model["registration_error"] = details["registration_error"]
    baseline = None
    if inputs.baseline is not None:
        baseline = _model(inputs.baseline, inputs.baseline_source or str(inputs.baseline.source))
    record = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "baseline": baseline,
        "precision": details.get("precision", "fp32"),
        "examples": inputs.examples.to_dict(),
        "recipe": {"sha256": sha256_hex(canonical_bytes(recipe)), "resolved": recipe},
        "code": versions(),
        "runtime": {
            "providers_requested": list(inputs.recipe.evaluate.providers),
            "runtimes": {name: {"provider": v.provider} for name, v in verdict.per_runtime.items()},
        },
        "figures": figures_of(verdict),
        "checks": [c.to_dict() for c in verdict.checks],
        "verdict": {"passed": verdict.passed, "failures": verdict.failures},
    }
    return dict(json.loads(canonical_bytes(record)))  # plain JSON data, as verify will read it back


def write_release(record: dict[str, Any], folder: Path, key: Ed25519PrivateKey | None = None) -> list[Path]:
    """Sign ``record`` with ``key`` (if any) and write it and its model card into ``folder``."""
    if key is not None:
        record = sign(record, key)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_json(folder / RELEASE_JSON, record), write_text(folder / MODEL_CARD, render_card(record))]
