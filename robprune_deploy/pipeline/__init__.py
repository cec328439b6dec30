"""The pipeline: stages that read and write files so they can run alone, resume, or chain.

``robprune_deploy.pipeline.driver`` holds the whole-pipeline driver (it depends on the gate, which in
turn uses the stage context defined here, so it is imported from its module, not re-exported).

:class:`RunContext`, :class:`RunData` and :class:`RunState` are imported on first use: the light
modules of this package (``ownership``, which names the folder's files) load without torch, so
``robprune --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robprune_deploy.pipeline.context import RunContext
    from robprune_deploy.pipeline.run_data import RunData, resolve_device
    from robprune_deploy.pipeline.run_state import RunState

_MODULES = {
    "RunContext": "context",
    "RunData": "run_data",
    "RunState": "run_state",
    "resolve_device": "run_data",
}
__all__ = ["RunContext", "RunData", "RunState", "resolve_device"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = getattr(importlib.import_module(f"robprune_deploy.pipeline.{_MODULES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
