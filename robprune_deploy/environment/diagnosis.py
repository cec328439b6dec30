"""The doctor's verdict: is what a recipe asks for usable in this environment, and if not, why.

A recipe asks for an execution provider list (``evaluate.providers``), runtimes
(``evaluate.runtimes``), a torch device, bf16 attack passes and an MLflow store. Each becomes one
:class:`Check`: ``ok``, ``warn`` (it runs, but not as asked: e.g. ``[cuda, cpu]`` falls back to CPU) or
``fail`` (it cannot run as asked: ``[cuda]`` alone without a working CUDA provider, ``device: cuda``
without a GPU, a runtime that does not load, an unreachable tracking server). The environment is
usable when no check fails.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from robprune_deploy.environment.accelerators import TorchProbe, probe_torch
from robprune_deploy.environment.packages import Installed, OnnxruntimeBuilds, installed, onnxruntime_builds
from robprune_deploy.environment.providers import OnnxruntimeProbe, probe_onnxruntime
from robprune_deploy.environment.tracking_probe import TrackingProbe, probe_tracking_uri
from robprune_deploy.evaluation.runtimes import RUNTIMES
from robprune_deploy.evaluation.sessions import PROVIDERS
from robprune_deploy.pipeline.recipe_threads import apply_recipe_threads
from robprune_deploy.recipe import Recipe
from robprune_deploy.runtime import ThreadChoice

# Distributions a pipeline run imports (mlflow only when tracking is enabled).
REQUIRED = ("torch", "torchvision", "onnx", "onnxscript", "nncf", "torch-pruning", "onnx2torch", "pydantic")


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One requirement of the recipe (or of the environment), judged."""

    name: str
    status: Status
    detail: str


@dataclass
class Diagnosis:
    python: str
    platform: str
    packages: dict[str, list[Installed]]
    onnxruntime_builds: OnnxruntimeBuilds
    torch: TorchProbe
    onnxruntime: OnnxruntimeProbe
    tracking: TrackingProbe
    threads: ThreadChoice
    checks: list[Check] = field(default_factory=list)
    runtimes: dict[str, list[str]] = field(default_factory=dict)
    """Each registered runtime's devices here (an entry ``error: ...`` when it does not load)."""

    @property
    def usable(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``robprune doctor --json``)."""
        data = asdict(self)
        data["onnxruntime_builds"]["warning"] = self.onnxruntime_builds.warning()
        data["checks"] = [{"name": c.name, "status": c.status.value, "detail": c.detail} for c in self.checks]
        data["usable"] = self.usable
        return data


def _check_providers(recipe: Recipe, ort: OnnxruntimeProbe) -> Check:
    asked = list(recipe.evaluate.providers)
    working = [name for name in asked if ort.works(PROVIDERS[name])]
    failing = {name: ort.reason(PROVIDERS[name]) for name in asked if name not in working}
    why = "; ".join(f"{name}: {reason}" for name, reason in failing.items())
    if not working:
        return Check("evaluate.providers", Status.FAIL, f"none of {asked} is usable ({why})")
    if working[0] != asked[0]:
        return Check("evaluate.providers", Status.WARN, f"{asked}: runs on {working[0]}, falling back ({why})")
    return Check("evaluate.providers", Status.OK, f"{asked}: runs on {PROVIDERS[working[0]]}")


def _check_device(recipe: Recipe, gpus: TorchProbe) -> tuple[Check, bool]:
    """The device check and whether the recipe's training runs on CUDA."""
    device = recipe.device
    if device == "cpu":
        return Check("device", Status.OK, "cpu"), False
    if device == "auto":
        if gpus.cuda:
            return Check("device", Status.OK, f"auto: cuda:0 ({gpus.gpus[0].name})"), True
        return Check("device", Status.OK, f"auto: cpu ({gpus.reason})"), False
    index = int(device.split(":")[1]) if ":" in device else 0
    if not gpus.cuda:
        return Check("device", Status.FAIL, f"{device}: {gpus.reason}"), False
    if index >= len(gpus.gpus):
        return Check("device", Status.FAIL, f"{device}: torch sees {len(gpus.gpus)} GPU(s)"), False
    return Check("device", Status.OK, f"{device}: {gpus.gpus[index].name}"), True


def _check_bf16(recipe: Recipe, gpus: TorchProbe, on_cuda: bool) -> Check | None:
    if not recipe.attack.bf16:
        return None
    if not on_cuda:
        return Check("attack.bf16", Status.WARN, "bf16 autocast applies on CUDA only; attack passes run in fp32 here")
    index = int(recipe.device.split(":")[1]) if ":" in recipe.device else 0
    if gpus.gpus[index].bf16:
        return Check("attack.bf16", Status.OK, f"{gpus.gpus[index].name} supports bf16")
    return Check("attack.bf16", Status.FAIL, f"{gpus.gpus[index].name} has no bf16 support")


def _check_packages(recipe: Recipe, packages: dict[str, list[Installed]], builds: OnnxruntimeBuilds) -> list[Check]:
    checks = []
    needed = REQUIRED + (("mlflow",) if recipe.tracking.enabled else ())
    missing = [name for name in needed if not packages.get(name)]
    if not builds.builds:
        missing.append("onnxruntime-gpu (Linux x86-64) or onnxruntime")
    if missing:
        checks.append(Check("packages", Status.FAIL, "not installed: " + ", ".join(missing)))
    else:
        checks.append(Check("packages", Status.OK, "all installed"))
    warning = builds.warning()
    if warning:
        checks.append(Check("onnxruntime builds", Status.WARN, warning))
    return checks


def _check_data(recipe: Recipe) -> Check | None:
    """A dataset other than the embedded digits needs its local root (nothing is ever downloaded)."""
    data = recipe.data
    if data.name == "digits":
        return None
    if data.root is None:
        return Check("data.root", Status.FAIL, f"data.name {data.name} needs data.root (a local folder)")
    if not data.root.is_dir():
        return Check("data.root", Status.FAIL, f"{data.root} is not a folder")
    return Check("data.root", Status.OK, str(data.root))


def _check_tracking(recipe: Recipe, probe: TrackingProbe) -> Check:
    if not recipe.tracking.enabled:
        return Check("tracking", Status.OK, f"disabled (would use {probe.uri})")
    if probe.answers is None:
        return Check("tracking", Status.WARN, f"{probe.uri}: {probe.detail}")
    return Check("tracking", Status.OK if probe.answers else Status.FAIL, f"{probe.uri}: {probe.detail}")


def _check_threads(choice: ThreadChoice) -> Check:
    if not choice.spinning:  # it runs, but a busy machine makes threads wait for each other
        return Check("runtime.threads", Status.WARN, f"{choice.describe()}; more threads than free cores")
    return Check("runtime.threads", Status.OK, choice.describe())


def runtime_devices() -> dict[str, list[str]]:
    """The devices of every registered runtime (OpenVINO lists its own: ``CPU: <name>``, ``GPU``)."""
    devices: dict[str, list[str]] = {}
    for name in RUNTIMES.names():
        try:
            devices[name] = RUNTIMES.get(name)().devices()
        except Exception as exc:  # a runtime that does not import here is the finding, not a crash
            devices[name] = [f"error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"]
    return devices


def _check_runtimes(recipe: Recipe, devices: dict[str, list[str]]) -> list[Check]:
    """Each runtime of ``evaluate.runtimes``: registered, and loading here."""
    checks = []
    for name in recipe.evaluate.runtimes:
        found = devices.get(name)
        if found is None:
            known = ", ".join(devices) or "none"
            checks.append(Check(f"runtime {name}", Status.FAIL, f"not a registered runtime (known: {known})"))
        elif any(d.startswith("error: ") for d in found):
            checks.append(Check(f"runtime {name}", Status.FAIL, "; ".join(found)))
        else:
            checks.append(Check(f"runtime {name}", Status.OK, f"devices: {', '.join(found) or 'none'}"))
    return checks


def diagnose(recipe: Recipe | None = None, timeout: float = 3.0) -> Diagnosis:
    """Probe this environment and judge ``recipe`` (default: the default recipe) against it.

    :param timeout: seconds the tracking-store probe waits for an answer.
    """
    from robprune_deploy.tracking.store_checks import default_tracking_uri

    recipe = recipe or Recipe()
    threads = apply_recipe_threads(recipe, announce=False)  # before the probes open their sessions
    packages = installed()
    builds = onnxruntime_builds()
    gpus = probe_torch()
    ort = probe_onnxruntime()
    tracking = probe_tracking_uri(recipe.tracking.tracking_uri or default_tracking_uri(), timeout)
    devices = runtime_devices()
    device, on_cuda = _check_device(recipe, gpus)
    checks = [
        *_check_packages(recipe, packages, builds),
        device,
        _check_bf16(recipe, gpus, on_cuda),
        _check_providers(recipe, ort),
        _check_data(recipe),
        _check_tracking(recipe, tracking),
        _check_threads(threads),
        *_check_runtimes(recipe, devices),
    ]
    return Diagnosis(
        python=sys.version.split()[0],
        platform=f"{platform.system()} {platform.machine()}",
        packages=packages,
        onnxruntime_builds=builds,
        torch=gpus,
        onnxruntime=ort,
        tracking=tracking,
        threads=threads,
        checks=[c for c in checks if c is not None],
        runtimes=devices,
    )
