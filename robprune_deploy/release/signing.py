"""Ed25519 signatures of release records (``cryptography``).

The signature covers the canonical JSON bytes (:func:`~robprune_deploy.release.canonical.canonical_bytes`)
of the record without its ``signature`` field, so anything else changed in the record, a hash
or a figure, breaks it. The record carries the signer's public key too, for information: only a
public key obtained some other way (``robprune verify --public-key``) says who signed.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robprune_deploy.errors import ReleaseError
from robprune_deploy.release.canonical import canonical_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
SIGNATURE = "signature"


def _pem(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None


def load_private_key(path: Path, option: str = "--sign-key") -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (unencrypted).

    :raises ReleaseError: naming the file, when it is not such a key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_pem(path, option), password=None)
    except TypeError:
        raise ReleaseError(f"{option} {path}: an encrypted key; give an unencrypted Ed25519 PEM key") from None
    except ValueError:
        raise ReleaseError(f"{option} {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{option} {path}: a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


def load_public_key(path: Path, option: str = "--public-key") -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``.

    :raises ReleaseError: naming the file, when it is not such a key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(_pem(path, option))
    except ValueError:
        raise ReleaseError(f"{option} {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ReleaseError(f"{option} {path}: a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def unsigned(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != SIGNATURE}


def sign(record: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``record`` with its ``signature``: the algorithm, the signer's public key and the signature (base64)."""
    body = unsigned(record)
    value = key.sign(canonical_bytes(body))
    public = base64.b64encode(_raw_public(key.public_key())).decode("ascii")
    return {
        **body,
        SIGNATURE: {"algorithm": ALGORITHM, "public_key": public, "value": base64.b64encode(value).decode()},
    }


def signature_problem(record: dict[str, Any], key: Ed25519PublicKey | None) -> str | None:
    """Why the record's signature does not verify with ``key`` (default: the public key it carries), or None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signature = record.get(SIGNATURE)
    if not isinstance(signature, dict):
        return "the record is not signed"
    if signature.get("algorithm") != ALGORITHM:
        return f"algorithm {signature.get('algorithm')!r}, expected {ALGORITHM!r}"
    try:
        value = base64.b64decode(str(signature.get("value", "")).encode("ascii"), validate=True)
        if key is None:
            key = Ed25519PublicKey.from_public_bytes(
                base64.b64decode(str(signature.get("public_key", "")).encode("ascii"), validate=True)
            )
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "not a base64 Ed25519 signature and public key"
    try:
        key.verify(value, canonical_bytes(unsigned(record)))
    except InvalidSignature:
        return "does not verify: the record or its signature was changed, or another key signed it"
    return None


def same_key(record: dict[str, Any], key: Ed25519PublicKey) -> bool:
    """Whether the public key the record carries is ``key``."""
    signature = record.get(SIGNATURE)
    carried = signature.get("public_key") if isinstance(signature, dict) else None
    return carried == base64.b64encode(_raw_public(key)).decode("ascii")
