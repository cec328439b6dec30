"""The model registry and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torchvision
from torch import nn

from robprune_deploy.errors import RecipeError, RobPruneError, UnknownNameError
from robprune_deploy.models.digits import DigitsCNN, DigitsResNet
from robprune_deploy.models.fmnist import FashionCNN
from robprune_deploy.models.normalize import NormalizedClassifier
from robprune_deploy.models.resnet import resnet18, resnet20
from robprune_deploy.models.timm_models import TIMM_PREFIX, build_timm
from robprune_deploy.models.vgg import VGG16BN
from robprune_deploy.models.wide_resnet import WideResNet
from robprune_deploy.registry import Registry

ModelBuilder = Callable[[int, int], nn.Module]
"""``builder(num_classes, in_channels) -> body`` (normalization is added by :func:`build_model`)."""

MODELS: Registry[ModelBuilder] = Registry("model")

TORCHVISION_PREFIX = "torchvision:"


@MODELS.register("digits_cnn")
def _digits_cnn(num_classes: int, in_channels: int) -> nn.Module:
    return DigitsCNN(num_classes, in_channels)


@MODELS.register("digits_resnet")
def _digits_resnet(num_classes: int, in_channels: int) -> nn.Module:
    return DigitsResNet(num_classes, in_channels)


@MODELS.register("fmnist_cnn")
def _fmnist_cnn(num_classes: int, in_channels: int) -> nn.Module:
    return FashionCNN(num_classes, in_channels)


@MODELS.register("resnet18")
def _resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return resnet18(num_classes, in_channels)


@MODELS.register("resnet20")
def _resnet20(num_classes: int, in_channels: int) -> nn.Module:
    return resnet20(num_classes, in_channels)


@MODELS.register("vgg16_bn")
def _vgg16_bn(num_classes: int, in_channels: int) -> nn.Module:
    return VGG16BN(num_classes, in_channels)


@MODELS.register("wrn28_4")
def _wrn28_4(num_classes: int, in_channels: int) -> nn.Module:
    return WideResNet(28, 4, num_classes, in_channels)


@MODELS.register("mobilenet_v2")
def _mobilenet_v2(num_classes: int, in_channels: int) -> nn.Module:
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    stem = net.features[0][0]
    # CIFAR-style: stride 1 in the stem keeps 32x32 inputs from collapsing to 1x1 too early.
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
    return net


def _torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UnknownNameError("torchvision classifier", name, available)
    if in_channels != 3:
        hint = "; set data.channels: 3 to repeat the gray channel inside the model" if in_channels == 1 else ""
        raise RobPruneError(
            f"model.name: torchvision:{name} expects 3 input channels, the data has {in_channels}{hint}"
        )
    # weights=None: nothing is downloaded; load trained weights with model.checkpoint.
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int | None = None,
    *,
    image_size: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> NormalizedClassifier:
    """Build ``name`` (a registered name, ``torchvision:<classifier>`` or ``timm:<model>``) with
    normalization inside.

    :param in_channels: the data's channels (the model's input).
    :param channels: the channels the network takes (``data.channels``); on 1-channel data a larger
        value repeats the gray channel inside the model's input module.
    :param image_size: the input side, for models whose shape depends on it (timm ViTs).
    :param kwargs: constructor options, for ``timm:`` models only (``model.kwargs``).
    :raises UnknownNameError: listing the registered names.
    :raises RecipeError: when ``channels`` asks to turn multi-channel data into another count.
    """
    network = in_channels if channels is None else channels
    if network != in_channels and in_channels != 1:
        raise RecipeError(
            f"data.channels: {network}, but the images have {in_channels} channels; only 1-channel (gray) data "
            "can be repeated"
        )
    if kwargs and not name.startswith(TIMM_PREFIX):
        raise RobPruneError(f"model.kwargs: only timm:<model> models take keyword arguments, not {name!r}")
    if name.startswith(TORCHVISION_PREFIX):
        body = _torchvision(name[len(TORCHVISION_PREFIX) :], num_classes, network)
    elif name.startswith(TIMM_PREFIX):
        body = build_timm(name[len(TIMM_PREFIX) :], num_classes, network, image_size, kwargs)
    else:
        body = MODELS.get(name)(num_classes, network)
    return NormalizedClassifier(body, mean, std, network if network != in_channels else None)
