"""Model surgery: layer scopes, coupled channel groups, physical removal, and counting."""

from robprune_deploy.surgery.counting import LayerCount, ModelCount, count_model, effective_parameters
from robprune_deploy.surgery.groups import ChannelGroup, ChannelGroups, output_layer_name
from robprune_deploy.surgery.scope import PRUNABLE_TYPES, ignored_layer_names, prunable_layers

__all__ = [
    "PRUNABLE_TYPES",
    "ChannelGroup",
    "ChannelGroups",
    "LayerCount",
    "ModelCount",
    "count_model",
    "effective_parameters",
    "ignored_layer_names",
    "output_layer_name",
    "prunable_layers",
]
