"""The recipe: one YAML document describing a whole robust-pruning pipeline.

Every section is a pydantic model with ``extra="forbid"``, so a misspelled key is an error that
names its dotted path. ``compression.config`` is validated against the chosen algorithm's own
config model (found through the algorithm registry), so plugin options get the same checking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from robprune_deploy.attacks import RobustLoss, ThreatModel


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name: str = Field("digits_cnn", description="registered model name, torchvision:<classifier> or timm:<model>")
    checkpoint: Path | None = Field(None, description="weights (.pt, loaded with weights_only=True, or .safetensors)")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="timm:<model> only: timm.create_model options (patch_size, depth, ...)"
    )


class DataSection(Section):
    name: str = Field("digits", description="digits | cifar10 | cifar100 | svhn | tiny_imagenet | imagefolder")
    root: Path | None = Field(None, description="local folder holding the dataset (never downloaded)")
    image_size: int | None = Field(16, gt=0, description="resize images to this side; None keeps the native size")
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    num_workers: int = Field(0, ge=0)
    augment: bool = True
    train_subset: int | None = Field(None, gt=0, description="use a fixed random subset of the training split")
    test_subset: int | None = Field(None, gt=0, description="use a fixed random subset of the test split")


class AttackSection(Section):
    """The threat model (L-inf) shared by training, mask search and evaluation."""

    norm: Literal["linf"] = "linf"
    eps: float = Field(0.2, ge=0, le=1)
    step_size: float = Field(0.05, gt=0, le=1)
    train_steps: int = Field(7, ge=0)
    eval_steps: int = Field(20, ge=0)
    random_start: bool = True
    bf16: bool = Field(False, description="bf16 autocast for the attack's forward/backward passes (CUDA)")

    def threat(self, steps: int | None = None) -> ThreatModel:
        return ThreatModel(
            self.eps, self.step_size, self.train_steps if steps is None else steps, self.random_start, self.bf16
        )


class TrainingSection(Section):
    """Adversarial training (pretrain and finetune): SGD (or AdamW) with a cosine schedule."""

    epochs: int = Field(10, ge=0)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    loss: RobustLoss = RobustLoss.PGD_AT
    trades_beta: float = Field(6.0, ge=0)
    mart_beta: float = Field(6.0, ge=0, description="weight of MART's misclassification-aware KL term")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="adamw for vision transformers (no momentum)")
    eps_warmup_epochs: int = Field(0, ge=0, description="ramp eps linearly over the first epochs")


class PretrainSection(TrainingSection):
    epochs: int = Field(20, ge=0)
    lr: float = Field(0.05, gt=0)
    enabled: bool = Field(True, description="skipped anyway when model.checkpoint is given")


class FinetuneSection(TrainingSection):
    epochs: int = Field(5, ge=0)
    lr: float = Field(0.01, gt=0)
    bn_recalibration_batches: int = Field(0, ge=0, description="BatchNorm statistics re-estimated on this many batches")


class IgnoredScopeSection(Section):
    """Mirrors :class:`nncf.IgnoredScope`."""

    names: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list)
    validate_scope: bool = Field(True, alias="validate")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_nncf(self) -> Any:
        import nncf

        return nncf.IgnoredScope(
            names=list(self.names), patterns=list(self.patterns), types=list(self.types), validate=self.validate_scope
        )


class CompressionSection(Section):
    algorithm: str = "hydra"
    ratio: float = Field(0.9, gt=0, lt=1, description="target sparsity (unstructured) or MACs/params reduction")
    ignored_scope: IgnoredScopeSection = Field(default_factory=IgnoredScopeSection)
    config: dict[str, Any] = Field(default_factory=dict, description="the algorithm's own options")


class ExportSection(Section):
    opset: int = Field(18, ge=13, le=23)
    dynamic_batch: bool = True


class LatencySection(Section):
    batch: int = Field(32, gt=0)
    warmup: int = Field(5, ge=0)
    repeats: int = Field(30, gt=0)


class EvaluateSection(Section):
    providers: list[Literal["cuda", "cpu"]] = Field(
        default_factory=lambda: ["cuda", "cpu"],  # type: ignore[arg-type]
        min_length=1,
    )
    num_examples: int = Field(450, gt=0, description="fixed, seeded subset of the test split for robust accuracy")
    subset_seed: int = 0
    square_queries: int = Field(300, ge=0)
    square_p_init: float = Field(0.8, gt=0, le=1)
    square_examples: int = Field(200, gt=0)
    latency: LatencySection = Field(default_factory=LatencySection)


class GateSection(Section):
    """Release thresholds; ``None`` disables a check. Accuracies and drops are fractions in [0, 1]."""

    min_clean_acc: float | None = Field(None, ge=0, le=1)
    min_pgd_acc: float | None = Field(None, ge=0, le=1)
    min_square_acc: float | None = Field(None, ge=0, le=1)
    max_clean_drop: float | None = Field(None, ge=0, le=1)
    max_pgd_drop: float | None = Field(None, ge=0, le=1)
    max_square_drop: float | None = Field(None, ge=0, le=1)
    max_parity_error: float | None = Field(1e-3, ge=0)
    min_speedup: float | None = Field(None, ge=0)
    sparsity_tolerance: float | None = Field(0.01, ge=0, le=1, description="audit vs claimed sparsity")
    max_square_below_pgd: float | None = Field(
        0.1, ge=0, le=1, description="gradient-masking guard: Square accuracy may not fall this far below PGD"
    )
    baseline: str | None = Field(None, description="baseline model: dense (default), an ONNX path or models:/ URI")


class TrackingSection(Section):
    enabled: bool = True
    tracking_uri: str | None = Field(None, description="default: sqlite:///mlflow.db in the working directory")
    experiment: str = "robprune"
    registered_model: str | None = None
    alias: str | None = Field(None, description="alias set on the registered version when the gate passes")


class Recipe(Section):
    """A whole pipeline. See the README's recipe reference for every field."""

    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    attack: AttackSection = Field(default_factory=AttackSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    compression: CompressionSection = Field(default_factory=CompressionSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    export: ExportSection = Field(default_factory=ExportSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    gate: GateSection = Field(default_factory=GateSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value
