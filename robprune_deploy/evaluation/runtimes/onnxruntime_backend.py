"""onnxruntime: the runtime a model is exported for (CUDA first when asked and usable, else CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robprune_deploy.evaluation.runtimes.artifact import RUNTIMES, Predictor, Runtime
from robprune_deploy.evaluation.sessions import PROVIDERS, OnnxClassifier


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """An :class:`~robprune_deploy.evaluation.sessions.OnnxClassifier` session: the thread policy and
    its spinning rule, the session memory bound, and a logged fallback from CUDA to CPU."""

    def open(self, file: Path, providers: Sequence[str] = ("cuda", "cpu"), threads: int = 0) -> Predictor:
        return OnnxClassifier(file, providers, threads)

    def devices(self) -> list[str]:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        return [name for name, provider in PROVIDERS.items() if provider in available]
