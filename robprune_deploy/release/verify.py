"""Checking a release record: the model's and the recipe's hashes, and the signature.

Each check is one :class:`Finding` that names what it checked (``model``, ``recipe``,
``signature``...), so a failed verification says which part did not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robprune_deploy.errors import ReleaseError
from robprune_deploy.gate.staging import onnx_sha256
from robprune_deploy.recipe import Recipe
from robprune_deploy.release.canonical import recipe_sha256
from robprune_deploy.release.record import FORMAT
from robprune_deploy.release.signing import SIGNATURE, same_key, signature_problem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_REQUIRED = ("model", "recipe", "examples", "figures", "verdict")


@dataclass(frozen=True)
class Finding:
    """One check of a record: ``name`` (what was checked), whether it matched, and how."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'MISMATCH'} {self.name}: {self.detail}"


def load_record(path: Path) -> dict[str, Any]:
    """The release record in ``path``.

    :raises ReleaseError: for a missing or unreadable file, or one that is not a release record.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ReleaseError(f"release record {path}: cannot be read ({reason})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"release record {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ReleaseError(f'release record {path}: not a release record (no "format": "{FORMAT}")')
    missing = [key for key in _REQUIRED if not isinstance(record.get(key), dict)]
    if missing or not isinstance(record["model"].get("sha256"), str):
        raise ReleaseError(
            f"release record {path}: not a release record (missing {', '.join(missing) or 'model.sha256'})"
        )
    return record


def check_model(record: dict[str, Any], model: Path) -> Finding:
    """The SHA-256 of ``model`` (computed as the gate does, external data inlined) against the record's."""
    if not model.is_file():
        raise ReleaseError(f"MODEL {model}: no such file")
    held, recorded = onnx_sha256(model), record["model"]["sha256"]
    if held == recorded:
        return Finding("model", True, f"{model} has the recorded sha256 {recorded}")
    return Finding("model", False, f"{model} has sha256 {held}, the record says {recorded}")


def check_recipe(record: dict[str, Any], recipe: Recipe | None) -> list[Finding]:
    """The recorded recipe's hash against the recipe the record holds and, when given, ``recipe``."""
    recorded = record["recipe"].get("sha256")
    findings = []
    resolved = record["recipe"].get("resolved")
    if isinstance(resolved, dict):
        held = recipe_sha256(resolved)
        findings.append(
            Finding("recipe (in the record)", True, f"sha256 {held}")
            if held == recorded
            else Finding(
                "recipe (in the record)", False, f"the resolved recipe hashes to {held}, the record says {recorded}"
            )
        )
    if recipe is not None:
        held = recipe_sha256(recipe)
        findings.append(
            Finding("recipe", True, f"--recipe resolves to the recorded sha256 {recorded}")
            if held == recorded
            else Finding("recipe", False, f"--recipe resolves to sha256 {held}, the record says {recorded}")
        )
    return findings


def check_signature(record: dict[str, Any], key: Ed25519PublicKey | None) -> Finding | None:
    """The signature, with ``key`` (``--public-key``) or else with the key the record carries; None
    for an unsigned record checked without a key."""
    if key is None and SIGNATURE not in record:
        return None
    problem = signature_problem(record, key)
    if problem is not None:
        return Finding("signature", False, problem)
    if key is None:
        return Finding(
            "signature", True, "valid for the public key in the record (give --public-key to check the signer)"
        )
    note = "" if same_key(record, key) else " (the record names another key)"
    return Finding("signature", True, f"valid for --public-key{note}")


def verify_record(
    record: dict[str, Any], model: Path, recipe: Recipe | None = None, key: Ed25519PublicKey | None = None
) -> list[Finding]:
    """Every hash and signature check of ``record`` against ``model`` (and ``recipe``, ``key``)."""
    findings = [check_model(record, model), *check_recipe(record, recipe)]
    signature = check_signature(record, key)
    return findings + ([signature] if signature is not None else [])
