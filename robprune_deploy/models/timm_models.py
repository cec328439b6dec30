"""``timm:<name>`` models: any timm classifier built from scratch (nothing is downloaded).

Vision transformers (ViT, DeiT, MobileViT, ...) come from here. ``model.kwargs`` reaches
``timm.create_model`` unchanged, so a recipe can shrink a model for small inputs, e.g.
``timm:vit_tiny_patch16_224`` with ``{patch_size: 4, depth: 6}`` on 28x28 images.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from torch import nn

from robprune_deploy.errors import RobPruneError

TIMM_PREFIX = "timm:"

_RESERVED = ("pretrained", "num_classes", "in_chans", "img_size", "checkpoint_path", "pretrained_cfg_overlay")


def build_timm(
    name: str, num_classes: int, in_channels: int, image_size: int | None, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes, in_chans, img_size, **kwargs)``.

    ``img_size`` is passed only to models that take it (ViTs need it for their position
    embeddings; convolutional models do not accept it). Trained weights come through
    ``model.checkpoint``, never from the hub.

    :raises RobPruneError: naming ``model.name`` or ``model.kwargs`` when timm refuses them.
    """
    import timm

    extra = dict(kwargs or {})
    reserved = sorted(set(extra) & set(_RESERVED))
    if reserved:
        raise RobPruneError(f"model.kwargs: {', '.join(reserved)} is set by robprune-deploy, not by the recipe")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise RobPruneError(f"model.name: timm has no model {name!r}{hint}")
    base = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **extra}
    try:
        if image_size is not None:
            try:
                return timm.create_model(name, img_size=image_size, **base)
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(name, **base)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RobPruneError(f"model.kwargs: timm cannot build {name!r} with {extra or 'no kwargs'} ({first})") from None
