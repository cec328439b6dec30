"""Which onnxruntime execution providers really run a model here, and why the others do not.

``onnxruntime.get_available_providers()`` lists the providers a build was *compiled* with; a
CUDA provider is listed even on a machine without a GPU or with a mismatched CUDA/cuDNN, and a
session asked for it silently falls back to CPU. The probe builds a one-node model in memory,
opens a session on each GPU provider and reads ``session.get_providers()``. onnxruntime writes its
loader errors from C++ straight to the process's stderr, so the probe captures file descriptors 1
and 2 while the session is created and keeps those lines as the reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from robprune_deploy.evaluation.sessions import PROVIDERS
from robprune_deploy.runtime import configure_session_options

# GPU providers worth a real session; the CPU provider always works when onnxruntime imports.
PROBED = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class ProviderProbe:
    """The outcome of opening a session on one provider.

    :param provider: onnxruntime's provider name.
    :param works: the session really runs on it (first in ``session.get_providers()``) and ran the model.
    :param reason: why not, from onnxruntime's own log lines or exception (empty when it works).
    """

    provider: str
    works: bool
    reason: str = ""


@dataclass
class OnnxruntimeProbe:
    """onnxruntime as this process sees it."""

    version: str | None = None
    package: str | None = None
    cuda_build: str | None = None
    available: list[str] = field(default_factory=list)
    probes: dict[str, ProviderProbe] = field(default_factory=dict)
    preload: str = ""
    error: str = ""

    def works(self, provider: str) -> bool:
        if provider == PROVIDERS["cpu"]:
            return not self.error and provider in self.available
        probe = self.probes.get(provider)
        return bool(probe and probe.works)

    def reason(self, provider: str) -> str:
        if self.error:
            return self.error
        if provider not in self.available:
            return f"this onnxruntime build ({self.package} {self.version}) has no {provider}"
        probe = self.probes.get(provider)
        return probe.reason if probe else ""


def tiny_model() -> bytes:
    """A one-node ONNX model (y = x + x, float32[2]): enough to create a session on any provider."""
    from onnx import TensorProto, helper

    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph(
        [node],
        "doctor_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    return bytes(model.SerializeToString())


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """Capture what C++ code and Python write to file descriptors 1 and 2 (and ``sys.stdout/err``)."""
    text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield text
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


def _reason_from_log(log: str) -> str:
    """The loader's explanation: onnxruntime's error and warning lines, without colours and timestamps."""
    lines = []
    for raw in _ANSI.sub("", log).splitlines():
        line = raw.strip()
        if not line or line.startswith("*****") or line.startswith("Falling back to") or line.startswith("when using"):
            continue
        line = re.sub(r"^\d{4}-\d\d-\d\d [\d:.]+ \[[EWI]:onnxruntime:[^\]]*\]\s*", "", line)
        line = line.replace("EP Error ", "")
        # Drop the C++ source location and function signature, keep onnxruntime's message.
        line = re.sub(r"^/onnxruntime_src/\S+:\d+\s+(?:[\w:&<>,*\s]+\([^)]*\)\s*)?", "", line)
        line = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
        line = line.split(" Please install all dependencies")[0]
        if line not in lines:
            lines.append(line)
    return " | ".join(lines)


def probe_provider(ort: object, model: bytes, provider: str) -> ProviderProbe:
    """Open a session that asks for ``provider`` (CPU as fallback), run it, and see where it ran."""
    import numpy as np

    session_options = configure_session_options(ort.SessionOptions())  # type: ignore[attr-defined]
    session_options.log_severity_level = 2  # warnings and errors carry the loader's reasons
    error = ""
    used: list[str] = []
    with captured_output() as log:
        try:
            session = ort.InferenceSession(  # type: ignore[attr-defined]
                model, sess_options=session_options, providers=[provider, PROVIDERS["cpu"]]
            )
            used = list(session.get_providers())
            if used and used[0] == provider:
                out = session.run(None, {"x": np.array([1.0, 2.0], dtype=np.float32)})[0]
                if not np.allclose(out, [2.0, 4.0]):
                    error = f"{provider} computed {out.tolist()} for 2*[1, 2]"
        except Exception as exc:  # any failure is the finding, reported with onnxruntime's words
            error = f"{type(exc).__name__}: {exc}"
    works = bool(used) and used[0] == provider and not error
    if works:
        return ProviderProbe(provider, True)
    reason = "; ".join(filter(None, [error, _reason_from_log(log.getvalue())]))
    if not reason:
        reason = f"the session fell back to {used[0] if used else 'nothing'} without a message"
    return ProviderProbe(provider, False, reason)


def _preload(ort: object) -> str:
    """Let onnxruntime-gpu find the CUDA/cuDNN libraries that came with torch (as the sessions do)."""
    try:
        import torch

        if not torch.cuda.is_available() or not hasattr(ort, "preload_dlls"):
            return "not attempted (no CUDA device for torch)" if hasattr(ort, "preload_dlls") else ""
        with captured_output() as log:
            ort.preload_dlls()
        return "done" + (f" ({_reason_from_log(log.getvalue())})" if log.getvalue().strip() else "")
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"


def probe_onnxruntime(providers: tuple[str, ...] = PROBED) -> OnnxruntimeProbe:
    """Import onnxruntime, list its providers, and open a real session on each listed GPU provider."""
    result = OnnxruntimeProbe()
    try:
        with captured_output() as log:
            import onnxruntime as ort
    except Exception as exc:
        result.error = f"onnxruntime does not import: {type(exc).__name__}: {exc} {_reason_from_log(log.getvalue())}"
        return result
    result.version = getattr(ort, "__version__", None)
    try:
        from onnxruntime.capi import build_and_package_info as info

        result.package = getattr(info, "package_name", None)
        result.cuda_build = getattr(info, "cuda_version", None) or None
    except ImportError:
        result.package = "onnxruntime"
    result.available = list(ort.get_available_providers())
    gpu = [p for p in providers if p in result.available]
    if gpu:
        result.preload = _preload(ort)
        model = tiny_model()
        for provider in gpu:
            result.probes[provider] = probe_provider(ort, model, provider)
    return result
