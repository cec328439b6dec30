"""OpenVINO: the runtime of the NNCF stack, reading the exported ONNX file (FP32, or the INT8 QDQ model).

OpenVINO's ONNX front end converts the graph when the file is opened; the compiled model runs on the
CPU device with the thread policy (``INFERENCE_NUM_THREADS``, see
:func:`~robprune_deploy.runtime.thread_policy.openvino_config`); an FP32 model runs in FP32 arithmetic (not
bf16), a QDQ model with OpenVINO's INT8 kernels, so a figure measured here differs from onnxruntime's
only by what the two runtimes' kernels compute. OpenVINO has no CUDA
device: ``cuda`` in ``evaluate.providers`` is skipped (said once), the CPU serves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robprune_deploy.errors import OnnxModelError, ProviderError
from robprune_deploy.evaluation.runtimes.artifact import RUNTIMES, Predictor, Runtime
from robprune_deploy.evaluation.sessions import PROVIDERS, check_input_shape
from robprune_deploy.export import load_onnx
from robprune_deploy.runtime import openvino_config

log = logging.getLogger(__name__)

DEVICES = {"cpu": "CPU"}
"""Recipe provider names OpenVINO serves, and its device for each."""
_SAID: set[str] = set()


@functools.cache
def _core() -> Any:
    """The process's one ``openvino.Core``, shared by every compiled model: creating and querying
    many Cores in one process is reported to crash OpenVINO (ultralytics/ultralytics#25864), and a
    process that evaluates many models (a test suite, a sweep's gates) would create one per model."""
    import openvino as ov

    return ov.Core()


def _first_line(exc: Exception) -> str:
    return ((str(exc).splitlines() or [type(exc).__name__])[0])[:300]


class OpenVinoClassifier:
    """A compiled OpenVINO model of a classifier ONNX file with a ``predict`` function.

    :param providers: recipe provider names in order of preference (``cuda`` is skipped).
    :param threads: intra-op threads (0: the process's thread policy).
    """

    def __init__(self, path: Path, providers: Sequence[str] = ("cuda", "cpu"), threads: int = 0) -> None:
        unknown = [n for n in providers if n not in PROVIDERS]
        if unknown:
            raise ProviderError(f"evaluate.providers: unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
        self.path = Path(path)
        proto = load_onnx(self.path)  # a missing or corrupted file is one error naming it, as for onnxruntime
        initializers = {i.name for i in proto.graph.initializer}
        image = next(v for v in proto.graph.input if v.name not in initializers)
        self.input_name = image.name
        self.input_shape: list[Any] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in image.type.tensor_type.shape.dim
        ]
        self.provider = next((name for name in providers if name in DEVICES), "cpu")
        if self.provider != (list(providers) or ["cpu"])[0] and "cuda" not in _SAID:
            _SAID.add("cuda")
            log.info("openvino: no CUDA device in OpenVINO; running on its CPU device")
        try:
            core = _core()
            self.compiled = core.compile_model(
                core.read_model(str(self.path)), DEVICES[self.provider], openvino_config(threads=threads)
            )
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise OnnxModelError(f"ONNX file {self.path}: OpenVINO cannot load it ({_first_line(exc)})") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 batch (a copy: the request's output buffer is reused by the next call)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_input_shape(self.path, self.input_name, self.input_shape, x)
        try:
            result = self.request.infer([x])
        except Exception as exc:  # the inputs were checked: a graph that fails on them is a bad file
            raise OnnxModelError(
                f"ONNX file {self.path}: OpenVINO failed running it on a batch of {len(x)} ({_first_line(exc)})"
            ) from None
        return np.array(result[self.output], copy=True)


@RUNTIMES.register("openvino")
class OpenVino(Runtime):
    """OpenVINO on its CPU device (see the module docstring)."""

    def open(self, file: Path, providers: Sequence[str] = ("cuda", "cpu"), threads: int = 0) -> Predictor:
        return OpenVinoClassifier(file, providers, threads)

    def devices(self) -> list[str]:
        core = _core()
        return [f"{d}: {core.get_property(d, 'FULL_DEVICE_NAME')}" for d in core.available_devices]
