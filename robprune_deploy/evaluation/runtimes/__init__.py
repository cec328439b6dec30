"""Deployable artifacts and the runtimes that serve them.

An :class:`Artifact` is data: a model file, its precision, the runtime that serves it and that
runtime's device preferences. A runtime is one class registered in :data:`RUNTIMES` (a decorator
registry, as for algorithms) whose :meth:`Runtime.open` turns a file into a :class:`Predictor`: a batch
predict function, numpy images in, logits out, with the process's thread policy applied
(``runtime.threads``). Evaluation, the gate and the latency comparison only ever call ``predict``, so
adding a runtime is one module::

    @RUNTIMES.register("myruntime")
    class MyRuntime(Runtime):
        def open(self, file, providers, threads=0):
            return MyPredictor(file)

Other distributions can register runtimes through the ``robprune_deploy.runtimes`` entry-point group.
"""

# The built-in runtimes register themselves on import.
import robprune_deploy.evaluation.runtimes.onnxruntime_backend
import robprune_deploy.evaluation.runtimes.openvino_backend  # noqa: F401
from robprune_deploy.evaluation.runtimes.artifact import (
    DEFAULT_RUNTIME,
    ENTRY_POINT_GROUP,
    RUNTIMES,
    Artifact,
    Predictor,
    Runtime,
    runtime,
)

__all__ = ["DEFAULT_RUNTIME", "ENTRY_POINT_GROUP", "RUNTIMES", "Artifact", "Predictor", "Runtime", "runtime"]
