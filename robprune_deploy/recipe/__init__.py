"""Recipe schema, YAML loading and ``--set`` overrides."""

from robprune_deploy.recipe.loading import (
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_to_dict,
    validate_algorithm_config,
    validate_recipe,
)
from robprune_deploy.recipe.schema import (
    AttackSection,
    CompressionSection,
    DataSection,
    EvaluateSection,
    ExportSection,
    FinetuneSection,
    GateSection,
    Int8GateSection,
    ModelSection,
    PretrainSection,
    QuantizeSection,
    Recipe,
    TrackingSection,
    TrainingSection,
)

__all__ = [
    "AttackSection",
    "CompressionSection",
    "DataSection",
    "EvaluateSection",
    "ExportSection",
    "FinetuneSection",
    "GateSection",
    "Int8GateSection",
    "ModelSection",
    "PretrainSection",
    "QuantizeSection",
    "Recipe",
    "TrackingSection",
    "TrainingSection",
    "apply_overrides",
    "load_recipe",
    "parse_override",
    "recipe_to_dict",
    "validate_algorithm_config",
    "validate_recipe",
]
