"""The bytes a release record hashes and signs: canonical JSON, and the digests built on it.

Canonical JSON here is ``json.dumps`` with sorted keys, no whitespace, UTF-8 and no NaN (a
non-finite number is written ``null``): the same data gives the same bytes on any machine and any
Python, so a hash or a signature over it can be checked anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from robprune_deploy.recipe import Recipe, recipe_to_dict

UNHASHED_RECIPE_FIELDS = (("tracking", "tracking_uri"),)
"""Recipe fields left out of its hash: where the results are recorded, not what is measured (the
gate takes ``--tracking-uri`` and ``MLFLOW_TRACKING_URI`` into the recipe, and a CI job verifying
the record has another)."""


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def canonical_bytes(data: Any) -> bytes:
    """The canonical JSON bytes of ``data`` (see the module's docstring)."""
    return json.dumps(finite(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashed_recipe(recipe: Recipe | dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe as the record holds it: plain data, less :data:`UNHASHED_RECIPE_FIELDS`."""
    document = json.loads(json.dumps(finite(recipe_to_dict(recipe) if isinstance(recipe, Recipe) else recipe)))
    for section, name in UNHASHED_RECIPE_FIELDS:
        if isinstance(document.get(section), dict):
            document[section].pop(name, None)
    return dict(document)


def recipe_sha256(recipe: Recipe | dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the resolved recipe (see :func:`hashed_recipe`)."""
    return sha256_hex(canonical_bytes(hashed_recipe(recipe)))
