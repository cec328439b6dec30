"""Input normalization as a module, so attacks, ONNX and onnxruntime all see pixels in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std stored as buffers (exported to ONNX).

    :param channels: the channels the network after it expects. On 1-channel (gray) data with
        ``channels > 1``, the normalized gray channel is repeated: a 3-channel torchvision or timm
        network then runs on gray images while the model's (and the ONNX graph's) input keeps the
        data's single channel.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int | None = None) -> None:
        super().__init__()
        data_channels = len(list(mean))
        if channels is not None and channels != data_channels and data_channels != 1:
            raise ValueError(f"only 1-channel data can be repeated to {channels} channels, not {data_channels}")
        self.repeat = 1 if channels is None or data_channels != 1 else channels
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.repeat(1, self.repeat, 1, 1) if self.repeat > 1 else x

    def extra_repr(self) -> str:
        return f"repeat={self.repeat}" if self.repeat > 1 else ""


class NormalizedClassifier(nn.Module):
    """A classifier ``body`` preceded by :class:`Normalize`; takes inputs in [0, 1].

    Layer names of the body appear as ``body.<name>`` (e.g. ``body.classifier.3`` of the digits CNN)
    in ignored scopes, statistics and MLflow tables.

    :param channels: the input channels of ``body`` when they differ from the data's (see
        :class:`Normalize`).
    """

    def __init__(
        self, body: nn.Module, mean: Sequence[float], std: Sequence[float], channels: int | None = None
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std, channels)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))
