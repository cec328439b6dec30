"""onnxruntime sessions: CUDA first when asked and available, a logged fallback to CPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robprune_deploy.errors import OnnxModelError, ProviderError, ShapeError
from robprune_deploy.evaluation.memory_bound import (
    allocation_failure,
    bounded_providers,
    bounded_session_options,
    session_memory_bound,
)
from robprune_deploy.export import load_onnx
from robprune_deploy.runtime import configure_session_options

log = logging.getLogger(__name__)

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
_PRELOADED = False
_WARNED: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    text = message % args
    if text not in _WARNED:
        _WARNED.add(text)
        log.warning(text)


def _preload_cuda_libraries() -> None:
    """Let onnxruntime-gpu find the CUDA/cuDNN libraries that the torch wheel brings."""
    global _PRELOADED
    if _PRELOADED:
        return
    _PRELOADED = True
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available() and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # a broken CUDA install should fall back, not crash
            log.warning("onnxruntime.preload_dlls() failed: %s", exc)


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map recipe names (``cuda``, ``cpu``) to onnxruntime providers, dropping unavailable ones.

    :raises ProviderError: for an unknown name.
    """
    import onnxruntime as ort
    import torch

    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise ProviderError(f"evaluate.providers: unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
    available = set(ort.get_available_providers())
    chosen = []
    for name in names:
        provider = PROVIDERS[name]
        if name == "cuda" and (provider not in available or not torch.cuda.is_available()):
            _warn_once("onnxruntime: CUDA execution provider requested but no usable GPU; falling back to CPU")
            continue
        chosen.append(provider)
    if not chosen:
        log.warning("onnxruntime: no requested provider is usable; using CPUExecutionProvider")
        chosen = [PROVIDERS["cpu"]]
    return chosen


class OnnxClassifier:
    """An onnxruntime session around a classifier ONNX file with a ``predict`` function.

    :param path: the ONNX file (checked with ``onnx.checker`` first).
    :param providers: recipe provider names in order of preference.
    :param threads: intra-op threads (0: the process's thread policy, ``runtime.threads``; spinning
        follows the policy either way).
    """

    def __init__(
        self, path: str | os.PathLike[str], providers: Sequence[str] = ("cuda", "cpu"), threads: int = 0
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        load_onnx(self.path)
        chosen = resolve_providers(providers)
        if PROVIDERS["cuda"] in chosen:
            _preload_cuda_libraries()
        options = configure_session_options(bounded_session_options(ort, ort.SessionOptions()), threads=threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=bounded_providers(chosen)
            )
        except Exception as exc:
            raise self._failure("onnxruntime cannot load it", exc) from None
        # A failed run becomes one OnnxModelError with onnxruntime's message: its own error log line
        # would only repeat it.
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        used = self.session.get_providers()[0]
        self.provider = next((k for k, v in PROVIDERS.items() if v == used), used)
        if self.provider != (list(providers) or ["cpu"])[0]:
            _warn_once("onnxruntime: running on %s (asked for %s)", used, list(providers))
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        self.input_shape = list(meta.shape)

    def check_input(self, x: np.ndarray) -> None:
        """:raises ShapeError: when ``x`` does not fit the graph's input (batch may vary)."""
        check_input_shape(self.path, self.input_name, self.input_shape, x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        try:
            return np.asarray(self.session.run(None, {self.input_name: x}, self.run_options)[0])
        except Exception as exc:  # the inputs were checked: a graph that fails on them is a bad file
            raise self._failure(f"onnxruntime failed running it on a batch of {len(x)}", exc) from None

    def _failure(self, what: str, exc: Exception) -> OnnxModelError:
        """One line naming the file; a refused allocation names the node and the bound."""
        text = str(exc)
        refused = allocation_failure(text)
        if refused is not None:
            return OnnxModelError(
                f"ONNX file {self.path}: {refused}, more than evaluate.max_session_memory_mb "
                f"({session_memory_bound()} MiB) allows"
            )
        detail = (text.splitlines() or [type(exc).__name__])[0]
        return OnnxModelError(f"ONNX file {self.path}: {what} ({detail[:300]})")


def check_input_shape(path: Path, name: str, expected: Sequence[object], x: np.ndarray) -> None:
    """:raises ShapeError: naming the file when ``x`` does not fit the input ``expected`` (its fixed
    dimensions; the batch may vary). Every runtime checks its inputs with it: one message for all."""
    if x.ndim != len(expected) or any(
        isinstance(d, int) and d != s for d, s in zip(list(expected)[1:], x.shape[1:], strict=False)
    ):
        raise ShapeError(f"ONNX file {path.name}: input {name!r} expects shape {list(expected)}, got {list(x.shape)}")


def create_session(path: str | os.PathLike[str], providers: Sequence[str] = ("cuda", "cpu")) -> OnnxClassifier:
    """An :class:`OnnxClassifier` for ``path`` (see its parameters)."""
    return OnnxClassifier(path, providers)
