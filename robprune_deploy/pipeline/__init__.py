"""The pipeline: stages that read and write files so they can run alone, resume, or chain.

``robprune_deploy.pipeline.driver`` holds the whole-pipeline driver (it depends on the gate, which in
turn uses the stage context defined here, so it is imported from its module, not re-exported).

:class:`RunContext` is imported on first use: the light modules of this package (``ownership``,
which names the folder's files) load without torch, so ``robprune --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robprune_deploy.pipeline.context import RunContext, resolve_device

__all__ = ["RunContext", "resolve_device"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("robprune_deploy.pipeline.context"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
