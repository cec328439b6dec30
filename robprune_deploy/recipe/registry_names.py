"""MLflow's rules for registered model names and aliases, checked before anything runs.

MLflow rejects a reserved alias (``latest``, ``v3``) or a name with ``/`` only when the registry is
called, which for a pipeline or a gate is after minutes of work. The same rules, checked on the
recipe and the command line, turn that late failure into one ``error:`` line up front. They mirror
``mlflow.utils.validation`` (``_validate_model_name``, ``_validate_model_alias_name`` and
``_validate_model_alias_name_reserved``); a test keeps them in agreement.
"""

from __future__ import annotations

import posixpath
import re

_ALIAS = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
MAX_ALIAS_LENGTH = 255


def model_name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a registered model name, or None."""
    if not name.strip():
        return "a registered model name cannot be empty"
    if "/" in name or ":" in name:
        return "a registered model name cannot contain '/' or ':'"
    normalized = posixpath.normpath(name)
    if normalized != name or normalized == "." or normalized.startswith(("..", "/")):
        return "a registered model name must be a plain name (no '.', '..' or repeated separators)"
    return None


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse ``alias`` as a registered model alias, or None."""
    if not alias:
        return "an alias cannot be empty"
    if not _ALIAS.match(alias):
        return "an alias may hold only letters, digits, '_' and '-'"
    if len(alias) > MAX_ALIAS_LENGTH:
        return f"an alias has at most {MAX_ALIAS_LENGTH} characters"
    if alias.lower() == "latest":
        return "the alias 'latest' is reserved by MLflow"
    if _VERSION_ALIAS.match(alias):
        return f"aliases of the form v<number> ({alias!r}) are reserved by MLflow for versions"
    return None
