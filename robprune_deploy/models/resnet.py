"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet18 as in the adversarial pruning literature and
ResNet-20 (He et al. 2016, section 4.2: three stages of 16/32/64 channels, 3 blocks each), a deep
network whose stages differ in width, so that per-layer pruning ratios have something to allocate."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stages of ``blocks[i]`` basic blocks of ``widths[i]`` channels; every stage after the first
    halves the resolution."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"{len(blocks)} stages of blocks but {len(widths)} widths")
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        # layer1, layer2, ...: the names ResNet checkpoints and ignored scopes already use.
        self.stage_names = [f"layer{i + 1}" for i in range(len(widths))]
        for i, (name, width, count) in enumerate(zip(self.stage_names, widths, blocks, strict=True)):
            self.add_module(name, self._stage(width, count, 1 if i == 0 else 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (count - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            out = getattr(self, name)(out)
        return self.fc(torch.flatten(self.pool(out), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet((3, 3, 3), num_classes, in_channels, widths=(16, 32, 64))
