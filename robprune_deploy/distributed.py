"""Multi-process training with PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node N -m robprune_deploy.cli.main run ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`initialize` then joins the process group with NCCL when the recipe's
device is CUDA and Gloo otherwise. Only rank 0 logs, checkpoints and talks to MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process stands in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_ENV = DistributedEnv()


def current() -> DistributedEnv:
    """The environment set by :func:`initialize` (single process before that)."""
    return _ENV


def initialize(device: torch.device) -> tuple[DistributedEnv, torch.device]:
    """Join the ``torchrun`` process group if the environment asks for one.

    :returns: the environment and this process's device (``cuda:LOCAL_RANK`` on GPU jobs).
    """
    global _ENV
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _ENV, device
    if dist.is_initialized():
        return _ENV, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _ENV = DistributedEnv(rank, world_size, local_rank)
    return _ENV, device


def shutdown() -> None:
    global _ENV
    if dist.is_initialized():
        dist.destroy_process_group()
    _ENV = DistributedEnv()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when distributed, else unchanged.

    DDP synchronizes the gradients of whatever requires grad at wrap time: the weights during
    (pre)training and fine-tuning, the importance scores during a mask search.
    """
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (for logging global epoch metrics)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def all_mean_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` in place over all ranks (a no-op in a single process)."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(world)


def all_mean_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a ``{name: value}`` mapping over all ranks (same keys, same order on every rank)."""
    if not dist.is_initialized() or not values:
        return values
    names = list(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(names, tensor.tolist(), strict=True))


def gather_objects(obj: object) -> list[object]:
    """``obj`` from every rank, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank.

    DDP keeps gradients in sync and re-broadcasts buffers at the start of each forward, but the
    BatchNorm statistics of the last local forward (and of attack passes on the bare module) stay
    rank-local; a stage ends with this so every rank leaves it with the identical model.
    """
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)
