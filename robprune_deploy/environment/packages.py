"""Installed distributions, read from their metadata (nothing is imported).

``onnxruntime``, ``onnxruntime-gpu`` and the other onnxruntime builds all install the same import
package, ``onnxruntime/``. Two of them in one folder overwrite each other's files, and even in two
folders only the first one on ``sys.path`` is imported, so the version pip reports may not be the
build that runs. :func:`onnxruntime_builds` finds every build and which one ``import onnxruntime``
would load.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Distributions whose versions the doctor reports, in the order shown.
REPORTED = (
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-gpu",
    "nncf",
    "mlflow",
    "torch-pruning",
    "timm",
    "onnx2torch",
    "pydantic",
    "robprune-deploy",
)
# Full onnxruntime builds: each ships the import package ``onnxruntime``. Plugin and add-on
# packages (onnxruntime-extensions, onnxruntime-genai*, onnxruntime-ep-*) do not.
ONNXRUNTIME_BUILDS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-training",
    "onnxruntime-rocm",
    "onnxruntime-migraphx",
    "onnxruntime-cann",
    "onnxruntime-qnn",
    "onnxruntime-trt-rtx",
    "onnxruntime-webgpu",
)


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name (``Torch_Pruning`` -> ``torch-pruning``)."""
    return name.lower().replace("_", "-").replace(".", "-")


@dataclass(frozen=True)
class Installed:
    """One installed distribution: its name, version and the folder that holds its metadata."""

    name: str
    version: str
    location: str


def installed(names: tuple[str, ...] = REPORTED) -> dict[str, list[Installed]]:
    """Every installed copy of each distribution in ``names``, first on ``sys.path`` first."""
    wanted = {normalize(n): n for n in names}
    found: dict[str, list[Installed]] = {n: [] for n in names}
    seen: set[tuple[str, str]] = set()
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"] or "")
        if name not in wanted:
            continue
        location = str(Path(str(dist.locate_file(""))).resolve())
        if (name, location) in seen:  # the same folder reached through two sys.path entries
            continue
        seen.add((name, location))
        found[wanted[name]].append(Installed(wanted[name], dist.version, location))
    return found


def version_of(name: str) -> str | None:
    """The version ``import`` would see for distribution ``name`` (the first copy), or None."""
    copies = installed((name,))[name]
    return copies[0].version if copies else None


@dataclass(frozen=True)
class OnnxruntimeBuilds:
    """The onnxruntime builds installed and the one that ``import onnxruntime`` loads.

    :param builds: every installed build (distribution name, version, folder).
    :param imported_from: the folder holding the ``onnxruntime`` package that is imported, or None.
    :param imported_build: the build that owns that folder's package (None when unknown).
    """

    builds: list[Installed]
    imported_from: str | None
    imported_build: str | None

    @property
    def conflict(self) -> bool:
        return len(self.builds) > 1

    @property
    def overwritten(self) -> bool:
        """Two builds in one folder: their files overwrote each other."""
        folders = [b.location for b in self.builds]
        return len(folders) != len(set(folders))

    def warning(self) -> str | None:
        """One line for the user when more than one build is installed."""
        if not self.conflict:
            return None
        listing = ", ".join(f"{b.name} {b.version} ({b.location})" for b in self.builds)
        if self.overwritten:
            return (
                f"several onnxruntime builds are installed in one folder and overwrote each other's files: {listing}; "
                "uninstall all of them, then install only onnxruntime-gpu (Linux x86-64) or onnxruntime"
            )
        return (
            f"several onnxruntime builds are installed: {listing}; `import onnxruntime` loads "
            f"{self.imported_build or 'an unknown build'} from {self.imported_from}; uninstall the others"
        )


def onnxruntime_builds() -> OnnxruntimeBuilds:
    """Find every onnxruntime build and the one ``import onnxruntime`` would load (without importing it)."""
    builds = [b for copies in installed(ONNXRUNTIME_BUILDS).values() for b in copies]
    builds.sort(key=lambda b: _path_rank(b.location))
    spec = importlib.util.find_spec("onnxruntime") if "onnxruntime" not in sys.modules else None
    origin = sys.modules["onnxruntime"].__file__ if "onnxruntime" in sys.modules else (spec.origin if spec else None)
    imported_from = str(Path(origin).resolve().parent.parent) if origin else None
    owners = [b.name for b in builds if b.location == imported_from]
    imported_build = owners[0] if len(owners) == 1 else _build_of_package(imported_from)
    return OnnxruntimeBuilds(builds, imported_from, imported_build)


def _path_rank(location: str) -> int:
    entries = [str(Path(p or ".").resolve()) for p in sys.path]
    return entries.index(location) if location in entries else len(entries)


def _build_of_package(folder: str | None) -> str | None:
    """The build named by the imported package's own build info (``onnxruntime-gpu`` or ``onnxruntime``)."""
    if folder is None:
        return None
    info = Path(folder) / "onnxruntime" / "capi" / "build_and_package_info.py"
    try:
        for line in info.read_text().splitlines():
            if line.startswith("package_name"):
                return line.split("=", 1)[1].strip().strip("'\"")
    except OSError:
        return None
    return None
