"""A bound on what onnxruntime may allocate while running a graph (``evaluate.max_session_memory_mb``).

An ONNX file is input, and a few bytes of it (a ``Tile``, ``Expand`` or ``ConstantOfShape`` to a huge
shape) can ask for tens of gigabytes at run time. Under the bound such a request fails at once in
onnxruntime's arena, before any of it is allocated, and the session reports it as bad input.

- CPU: onnxruntime has no per-session arena limit, so one arena with ``max_mem`` is registered in
  its environment (``create_and_register_allocator``) and every session uses it
  (``session.use_env_allocators``). It is shared by the sessions of the process and registered once:
  the first bound set in a process stays in force (a later, different one is said in a warning).
- CUDA: each session's arena gets ``gpu_mem_limit``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSION_MEMORY_MB = 8192
"""The bound before a recipe sets one: the default of ``evaluate.max_session_memory_mb`` (the recipe
sits above this layer and passes its value; tests/test_layering.py checks that the two agree)."""
MIB = 1 << 20

_requested_mb = DEFAULT_MAX_SESSION_MEMORY_MB
_registered_mb: int | None = None
_registration_failed = False
_said_unchanged: set[int] = set()
_ALLOCATION_FAILURE = re.compile(r"Available memory of \d+ is smaller than requested bytes of (\d+)|Failed to allocate")
_FAILED_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def bound_session_memory(megabytes: int) -> None:
    """Sessions created from now on allocate at most ``megabytes`` MiB (see the module docstring)."""
    global _requested_mb
    _requested_mb = megabytes


def session_memory_bound() -> int:
    """The bound in force for new sessions, in MiB (on CPU: the one registered first in this process)."""
    return _registered_mb if _registered_mb is not None else _requested_mb


def _register_cpu_arena(ort: Any) -> bool:
    global _registered_mb, _registration_failed
    if _registered_mb is None and not _registration_failed:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        try:
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"max_mem": _requested_mb * MIB}))
        except Exception as exc:  # another library registered a CPU allocator first: its limits apply
            _registration_failed = True
            log.warning("onnxruntime: cannot bound the CPU arena (%s); sessions run unbounded", exc)
            return False
        _registered_mb = _requested_mb
    if _registered_mb is not None and _registered_mb != _requested_mb and _requested_mb not in _said_unchanged:
        _said_unchanged.add(_requested_mb)
        log.warning(
            "onnxruntime: the CPU arena of this process is bounded at %d MiB (set first); "
            "evaluate.max_session_memory_mb %d applies in a new process",
            _registered_mb,
            _requested_mb,
        )
    return _registered_mb is not None


def bounded_session_options(ort: Any, options: Any) -> Any:
    """``options`` with the sessions' CPU allocations drawn from the bounded arena."""
    if _register_cpu_arena(ort):
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def bounded_providers(providers: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime providers with the bound on each GPU arena."""
    return [
        (name, {"gpu_mem_limit": str(_requested_mb * MIB)}) if name == "CUDAExecutionProvider" else name
        for name in providers
    ]


def allocation_failure(message: str) -> str | None:
    """What a graph asked for, when onnxruntime's ``message`` is an allocation refused by the bound
    (or by the machine): ``"a Tile node asked for 64.0 GiB"``; else ``None``."""
    found = _ALLOCATION_FAILURE.search(message)
    if found is None:
        return None
    node = _FAILED_NODE.search(message)
    where = f"a {node.group(1)} node{f' {node.group(2)!r}' if node and node.group(2) else ''}" if node else "a node"
    asked = f" asked for {int(found.group(1)) / (1 << 30):.1f} GiB" if found.group(1) else " could not allocate"
    return where + asked
