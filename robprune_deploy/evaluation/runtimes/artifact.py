"""Artifacts, the runtime interface and the runtime registry (see the package's docstring)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from robprune_deploy.registry import Registry

ENTRY_POINT_GROUP = "robprune_deploy.runtimes"
DEFAULT_RUNTIME = "onnxruntime"


@runtime_checkable
class Predictor(Protocol):
    """A model file opened by a runtime.

    :ivar provider: where it runs, in the recipe's words (``cpu``, ``cuda``), for reports.
    """

    provider: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 batch of images in [0, 1]."""
        ...


class Runtime:
    """One way to serve a model file. Subclasses implement :meth:`open` and may list :meth:`devices`."""

    def open(self, file: Path, providers: Sequence[str] = ("cuda", "cpu"), threads: int = 0) -> Predictor:
        """``file`` as a :class:`Predictor`, on the first usable of ``providers`` (recipe names).

        :param threads: intra-op threads (0: the process's thread policy, ``runtime.threads``).
        :raises OnnxModelError: for a file the runtime cannot load, naming it.
        """
        raise NotImplementedError

    def devices(self) -> list[str]:
        """The devices this runtime can use here (``robprune doctor`` lists them)."""
        return ["cpu"]


RUNTIMES: Registry[type[Runtime]] = Registry(
    "runtime", entry_point_group=ENTRY_POINT_GROUP, home_distribution="robprune-deploy"
)
"""Every registered runtime class by name."""


def runtime(name: str) -> Runtime:
    """The registered runtime ``name``. :raises UnknownNameError: listing the known runtimes."""
    return RUNTIMES.get(name)()


@dataclass(frozen=True)
class Artifact:
    """A deployable model: ``file`` at ``precision``, served by ``runtime`` on the first usable of
    ``providers`` (``cuda``, ``cpu``; a runtime without CUDA takes the CPU)."""

    file: Path
    precision: str = "fp32"
    runtime: str = DEFAULT_RUNTIME
    providers: tuple[str, ...] = ("cuda", "cpu")

    @classmethod
    def of(
        cls,
        file: str | os.PathLike[str],
        precision: str = "fp32",
        runtime: str = DEFAULT_RUNTIME,
        providers: Sequence[str] = ("cuda", "cpu"),
    ) -> Artifact:
        return cls(Path(file), precision, runtime, tuple(providers))

    def open(self, threads: int = 0) -> Predictor:
        """This artifact as a batch predict function (see :meth:`Runtime.open`)."""
        return runtime(self.runtime).open(self.file, self.providers, threads)

    def on(self, runtime_name: str) -> Artifact:
        """The same file and precision served by another runtime."""
        return replace(self, runtime=runtime_name)

    def describe(self) -> str:
        return f"{self.file.name} ({self.precision}, {self.runtime})"
