"""A VGG-style CNN sized for Fashion-MNIST (1 x 28 x 28): 0.58 M parameters, 22 M MACs."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FashionCNN(nn.Module):
    """Five 3x3 conv-BN-ReLU layers in three stages (28 -> 14 -> 7 -> 3 pixels), then a two-layer head.

    Channels ``w, 2w, 2w, 4w, 4w`` (``w = 32``: 575,338 parameters, 22.2 M MACs per image). Each
    stage has a different cost and parameter count (most MACs in the middle stages, most parameters
    in the head), so uniform and sensitivity-based channel ratios are distinguishable.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w),
            nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w),
            *_conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_conv_bn(2 * w, 4 * w),
            *_conv_bn(4 * w, 4 * w),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 9, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
