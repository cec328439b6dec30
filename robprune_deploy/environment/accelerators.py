"""torch's CUDA build and the GPUs it sees."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field


@dataclass
class Gpu:
    index: int
    name: str
    capability: str
    memory_gib: float
    bf16: bool


@dataclass
class TorchProbe:
    """:param cuda_build: the CUDA version torch was built with (None: a CPU-only build).
    :param cudnn: cuDNN version torch loads (e.g. 91002), None without cuDNN.
    :param reason: why no GPU is usable (torch's own warning when it gives one)."""

    version: str | None = None
    cuda_build: str | None = None
    cudnn: int | None = None
    gpus: list[Gpu] = field(default_factory=list)
    nccl: str | None = None
    reason: str = ""

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)


def probe_torch() -> TorchProbe:
    """What torch reports, including its explanation when CUDA does not initialize."""
    try:
        import torch
    except Exception as exc:
        return TorchProbe(reason=f"torch does not import: {type(exc).__name__}: {exc}")
    probe = TorchProbe(torch.__version__, torch.version.cuda)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            available = torch.cuda.is_available()
        except Exception as exc:  # a broken driver can raise instead of returning False
            available, probe.reason = False, f"{type(exc).__name__}: {exc}"
    if torch.backends.cudnn.is_available():
        probe.cudnn = torch.backends.cudnn.version()
    if not available:
        said = " ".join(str(w.message).splitlines()[0] for w in caught)
        if probe.cuda_build is None:
            probe.reason = probe.reason or "torch is a CPU-only build"
        else:
            probe.reason = probe.reason or said or f"torch (CUDA {probe.cuda_build}) sees no CUDA device"
        return probe
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16 = bool(torch.cuda.is_bf16_supported())
        probe.gpus.append(
            Gpu(index, props.name, f"{props.major}.{props.minor}", round(props.total_memory / 2**30, 1), bf16)
        )
    if torch.distributed.is_available() and torch.distributed.is_nccl_available():
        try:
            probe.nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:
            probe.nccl = "available"
    return probe
