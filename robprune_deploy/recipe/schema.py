"""The recipe: one YAML document describing a whole robust-pruning pipeline.

Every section is a pydantic model with ``extra="forbid"``, so a misspelled key is an error that
names its dotted path. ``compression.config`` is validated against the chosen algorithm's own
config model (found through the algorithm registry), so plugin options get the same checking.

Numbers are checked before they are trusted: every float is finite (``allow_inf_nan=False``), and
every count has an upper bound a real run can meet, so a typo cannot ask for 10^9 epochs or
PGD steps and hang a machine. Text and paths may not hold NUL or other control characters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.attacks.threats import (
    ATTACKS,
    STANDARD_ATTACKS,
    ThreatDescription,
    ThreatFieldError,
    check_attacks,
    check_eps,
    check_name,
)
from robprune_deploy.errors import control_character
from robprune_deploy.recipe.registry_names import alias_problem, model_name_problem
from robprune_deploy.runtime.thread_policy import MAX_THREADS
from robprune_deploy.training.fast_at import FGSM_ALPHA, GUARD_DROP, GUARD_GAP, OnCollapse

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit unsigned (numpy's range; torch's generators accept them and the data order's
``seed * 100003 + epoch`` stays far below 2**64)."""
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
"""Also the largest batch the exported ONNX graph's dynamic batch dimension admits."""
MAX_ATTACK_STEPS = 1_000
MAX_IMAGE_SIZE = 1024
MAX_WORKERS = 256
"""A recipe may be written for a bigger machine; preflight checks ``num_workers`` against this one's CPUs."""


def _texts(value: Any) -> list[str]:
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        return [text for v in value for text in _texts(v)]
    return []


def _has_nul(value: Any) -> bool:
    return any("\x00" in text for text in _texts(value))


def _control(value: Any) -> str | None:
    """A control character in text or a path, which could forge a line of output (``\\nGATE PASSED``)."""
    return next((c for c in map(control_character, _texts(value)) if c is not None), None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("contains a NUL character")
        bad = _control(value)
        if bad is not None:
            raise ValueError(f"contains a control character ({bad!r})")
        return value


class ModelSection(Section):
    name: str = Field(
        "digits_cnn",
        description="digits_cnn, digits_resnet, fmnist_cnn (Fashion-MNIST, 0.58 M parameters), resnet18 (CIFAR-style), "
        "vgg16_bn (HYDRA head), wrn28_4, mobilenet_v2, torchvision:<classifier> or timm:<model>",
    )
    checkpoint: Path | None = Field(
        None,
        description="trained weights, which skip pretraining: .pt (loaded with weights_only=True), .safetensors, "
        "or an MLflow runs:/ or models:/ URI",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="timm:<model> only: timm.create_model options (patch_size, depth, ...)"
    )


class DataSection(Section):
    name: str = Field(
        "digits", description="digits | fashion_mnist | cifar10 | cifar100 | svhn | tiny_imagenet | imagefolder"
    )
    root: Path | None = Field(
        None, description="local folder holding the dataset (never downloaded); fashion_mnist defaults to Debian's"
    )
    image_size: int | None = Field(
        None,
        gt=0,
        le=MAX_IMAGE_SIZE,
        description="resize images to this side; null: the dataset's own (digits 16, Fashion-MNIST 28, CIFAR/SVHN 32, "
        "Tiny-ImageNet 64)",
    )
    channels: int | None = Field(
        None,
        gt=0,
        le=4,
        description="channels the network takes; on gray data 3 repeats the gray channel inside the model "
        "(the ONNX input keeps 1 channel). Default: the data's",
    )
    batch_size: int = Field(32, gt=0, le=MAX_BATCH, description="training batch, per process under torchrun")
    eval_batch_size: int = Field(256, gt=0, le=MAX_BATCH, description="batch of evaluation and of the attacks")
    num_workers: int = Field(
        0, ge=0, le=MAX_WORKERS, description="loader processes; a run also needs them within the machine's CPU count"
    )
    augment: bool = Field(True, description="random crop (zero-padded) and horizontal flip of training images")
    train_subset: int | None = Field(None, gt=0, description="use a fixed random subset of the training split")
    test_subset: int | None = Field(None, gt=0, description="use a fixed random subset of the test split")
    val_size: int = Field(
        0,
        ge=0,
        description=(
            "images held out of the training split for validation (fixed seed, the same for every run); "
            "per-epoch figures and best-epoch selection use them; 0: no validation split"
        ),
    )
    eval_split: Literal["test", "val"] = Field(
        "test",
        description="split of the final figures (torch.*, onnx.*, gate): val for hyper-parameter sweeps",
    )


class AttackSection(Section):
    """The threat model (L-inf) shared by training, mask search and evaluation."""

    norm: Literal["linf"] = Field("linf", description="the threat model's norm (L-inf only)")
    eps: float = Field(
        0.2,
        ge=0,
        le=1,
        description="radius in pixel units (digits 0.2; Fashion-MNIST recipes 0.1; CIFAR recipes 8/255)",
    )
    step_size: float = Field(0.05, gt=0, le=1, description="PGD step size in pixel units")
    train_steps: int = Field(7, ge=0, le=MAX_ATTACK_STEPS, description="PGD steps of adversarial training")
    eval_steps: int = Field(20, ge=0, le=MAX_ATTACK_STEPS, description="PGD steps of the evaluation (PGD-20)")
    val_steps: int = Field(
        10, ge=0, le=MAX_ATTACK_STEPS, description="PGD steps of the validation figures (Rice et al. 2020: PGD-10)"
    )
    random_start: bool = Field(True, description="PGD starts from a random point of the eps-ball")
    bf16: bool = Field(False, description="bf16 autocast for the attack's forward/backward passes (CUDA)")

    def threat(self, steps: int | None = None) -> ThreatModel:
        return ThreatModel(
            self.eps, self.step_size, self.train_steps if steps is None else steps, self.random_start, self.bf16
        )


class TrainingSection(Section):
    """Adversarial training (pretrain and finetune): SGD (or AdamW) with a cosine schedule."""

    epochs: int = Field(10, ge=0, le=MAX_EPOCHS, description="training epochs")
    lr: float = Field(0.1, gt=0, description="learning rate (cosine schedule)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="weight decay")
    loss: RobustLoss = Field(
        RobustLoss.PGD_AT,
        description="pgd_at (Madry et al.: cross-entropy on PGD examples), trades (Zhang et al.) or mart "
        "(Wang et al. 2020)",
    )
    trades_beta: float = Field(6.0, ge=0, description="weight of TRADES's KL term")
    mart_beta: float = Field(6.0, ge=0, description="weight of MART's misclassification-aware KL term")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="adamw for vision transformers (no momentum)")
    eps_warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="ramp eps linearly over the first epochs")
    select: Literal["last", "best_val_pgd"] = Field(
        "last",
        description="weights kept: the last epoch's, or the epoch with the best validation PGD accuracy "
        "(early stopping against robust overfitting, Rice et al. 2020; needs data.val_size > 0)",
    )
    channels_last: bool = Field(
        False,
        description="train in the channels-last (NHWC) memory layout: faster convolutions on CPU "
        "(benchmarks/at_throughput.py); the last bits of the results change, not the algorithm",
    )


class PretrainSection(TrainingSection):
    epochs: int = Field(20, ge=0, le=MAX_EPOCHS, description="adversarial pretraining epochs")
    lr: float = Field(0.05, gt=0, description="learning rate (cosine schedule)")
    enabled: bool = Field(True, description="skipped anyway when model.checkpoint is given, unless from_checkpoint")
    from_checkpoint: bool = Field(
        False,
        description="train model.checkpoint further instead of taking it as it is: adversarially train a naturally "
        "trained model, or restart the schedule of an adversarially trained one (a warm restart, Loshchilov and "
        "Hutter 2017)",
    )
    # Fast adversarial training (FGSM-RS; Wong, Rice and Kolter 2020) and its catastrophic-overfitting guard.
    loss: RobustLoss | Literal["fgsm_rs"] = Field(  # type: ignore[assignment]  # the base's values plus fgsm_rs
        RobustLoss.PGD_AT,
        description="pgd_at (Madry et al.: cross-entropy on PGD examples), trades (Zhang et al.), mart "
        "(Wang et al. 2020), or fgsm_rs (Wong et al. 2020): PGD-AT's loss on FGSM-with-random-start examples, one "
        "attack pass instead of attack.train_steps, watched by a guard against catastrophic overfitting",
    )
    fgsm_alpha: float = Field(
        FGSM_ALPHA, gt=0, le=4, description="loss: fgsm_rs only: the FGSM step in units of attack.eps (paper: 1.25)"
    )
    fgsm_guard_examples: int = Field(
        256,
        ge=0,
        le=MAX_BATCH,
        description="loss: fgsm_rs only: size of the fixed batch the guard attacks after every epoch (validation "
        "images when data.val_size > 0, else training images); 0: no guard",
    )
    fgsm_guard_drop: float | None = Field(
        GUARD_DROP,
        gt=0,
        le=1,
        description="loss: fgsm_rs only: collapse when the batch's PGD accuracy falls this far below its best "
        "(Wong et al.: 0.2); null: off",
    )
    fgsm_guard_gap: float | None = Field(
        GUARD_GAP,
        gt=0,
        le=1,
        description="loss: fgsm_rs only: collapse when the batch's PGD accuracy is this far below its FGSM "
        "accuracy; null: off",
    )
    fgsm_on_collapse: OnCollapse = Field(
        OnCollapse.STOP,
        description="loss: fgsm_rs only: after a collapse, restore the best epoch's weights and stop, or "
        "(pgd) go on from them with PGD-AT",
    )

    @field_validator("loss", mode="plain")
    @classmethod
    def _robust_loss_or_fgsm_rs(cls, value: Any) -> RobustLoss | str:
        if value == "fgsm_rs":
            return "fgsm_rs"
        try:
            return RobustLoss(value)
        except (ValueError, TypeError):
            raise PydanticCustomError("enum", "Input should be 'pgd_at', 'trades', 'mart' or 'fgsm_rs'") from None

    @field_serializer("loss")
    def _loss_name(self, value: RobustLoss | str) -> str:
        return value.value if isinstance(value, RobustLoss) else value

    @property
    def uses_fgsm_rs(self) -> bool:
        return self.loss == "fgsm_rs"

    @property
    def robust_loss(self) -> RobustLoss:
        """The outer loss minimized: PGD-AT's cross-entropy under FGSM-RS."""
        return RobustLoss.PGD_AT if self.uses_fgsm_rs else RobustLoss(self.loss)


class FinetuneSection(TrainingSection):
    epochs: int = Field(5, ge=0, le=MAX_EPOCHS, description="adversarial fine-tuning epochs, masks frozen")
    lr: float = Field(0.01, gt=0, description="learning rate (cosine schedule)")
    bn_recalibration_batches: int = Field(
        0, ge=0, le=100_000, description="BatchNorm statistics re-estimated on this many batches"
    )
    # Adversarial weight perturbation (AWP; Wu et al. 2020), which the S2AP paper fine-tunes with.
    loss: RobustLoss | Literal["awp"] = Field(  # type: ignore[assignment]  # the base's values plus awp
        RobustLoss.PGD_AT, description="pgd_at | trades | mart, or awp: adversarial weight perturbation on awp_base"
    )
    awp_base: RobustLoss = Field(RobustLoss.PGD_AT, description="loss: awp only: the loss AWP perturbs the weights for")
    awp_gamma: float = Field(
        0.005, gt=0, le=1, description="loss: awp only: each layer's perturbation relative to its weight norm"
    )
    awp_warmup: int = Field(0, ge=0, le=MAX_EPOCHS, description="loss: awp only: epochs without AWP first")

    @field_validator("loss", mode="plain")
    @classmethod
    def _robust_loss_or_awp(cls, value: Any) -> RobustLoss | str:
        if value == "awp":
            return "awp"
        try:
            return RobustLoss(value)
        except (ValueError, TypeError):
            raise PydanticCustomError("enum", "Input should be 'pgd_at', 'trades', 'mart' or 'awp'") from None

    @field_serializer("loss")
    def _loss_name(self, value: RobustLoss | str) -> str:
        return value.value if isinstance(value, RobustLoss) else value

    @property
    def uses_awp(self) -> bool:
        return self.loss == "awp"

    @property
    def robust_loss(self) -> RobustLoss:
        """The loss attacks are crafted for and minimized: ``awp_base`` under AWP."""
        return self.awp_base if self.uses_awp else RobustLoss(self.loss)


class IgnoredScopeSection(Section):
    """Mirrors :class:`nncf.IgnoredScope`."""

    names: list[str] = Field(default_factory=list, description="names, as model.named_modules() spells them")
    patterns: list[str] = Field(default_factory=list, description="regular expressions over those names")
    types: list[str] = Field(default_factory=list, description="types, e.g. Conv2d (ONNX: node types)")
    validate_scope: bool = Field(
        True, alias="validate", description="a name or pattern that matches nothing is an error"
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    def to_nncf(self) -> Any:
        import nncf

        return nncf.IgnoredScope(
            names=list(self.names), patterns=list(self.patterns), types=list(self.types), validate=self.validate_scope
        )


class CompressionSection(Section):
    algorithm: str = Field("hydra", description="a registered algorithm (`robprune algorithms` lists them)")
    ratio: float = Field(0.9, gt=0, lt=1, description="target sparsity (unstructured) or MACs/params reduction")
    ignored_scope: IgnoredScopeSection = Field(
        default_factory=IgnoredScopeSection, description="layers left dense, like nncf.IgnoredScope"
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="the algorithm's own options (their sections are at the end of this page)"
    )
    tolerance: float = Field(
        0.05,
        gt=0,
        le=0.5,
        description="largest |achieved - ratio| accepted from the algorithm (sparsity, or MACs/params reduction)",
    )


class ExportSection(Section):
    opset: int = Field(
        18,
        ge=13,
        le=23,
        description="ONNX opset: 18 and above are written by the exporter, below 18 converted with onnx's version "
        "converter, which handles some graphs only (checked in preflight)",
    )
    dynamic_batch: bool = Field(True, description="the batch dimension of the graph's input is dynamic")


class QuantizeSection(Section):
    """INT8 post-training quantization of the exported model with ``nncf.quantize`` (ONNX backend)."""

    enabled: bool = Field(False, description="quantize model.onnx into model.int8.onnx after export")
    preset: Literal["performance", "mixed"] = Field(
        "performance", description="NNCF preset: performance (symmetric) or mixed (asymmetric activations)"
    )
    calibration_size: int = Field(
        300, gt=0, le=1_000_000, description="training images (no augmentation) the activation ranges come from"
    )
    ignored_scope: IgnoredScopeSection = Field(
        default_factory=IgnoredScopeSection, description="ONNX node names, patterns or types kept in FP32"
    )
    fast_bias_correction: bool = Field(True, description="NNCF's fast bias correction")


class LatencySection(Section):
    batch: int = Field(32, gt=0, le=MAX_BATCH, description="batch size of the timed runs (batch 1 is timed too)")
    warmup: int = Field(5, ge=0, le=10_000, description="untimed runs first")
    repeats: int = Field(30, gt=0, le=100_000, description="timed rounds, the two models interleaved")


_Checked = TypeVar("_Checked")


def _threat_field(check: Callable[[], _Checked]) -> _Checked:
    """``check()``, its :class:`ThreatFieldError` reported at the field's own location (pydantic
    names ``evaluate.threats[1].eps``; the message is the problem alone)."""
    try:
        return check()
    except ThreatFieldError as exc:
        where = exc.field.partition("[")[1:]  # a list position the location does not name
        at = f" (at [{where[1]})" if where[0] else ""
        raise PydanticCustomError("threat", f"{exc.problem}{at}") from None


AttackName = Literal["apgd-ce", "apgd-t", "fab-t", "square", "fmn"]
assert get_args(AttackName) == ATTACKS, "the recipe's attack names are the threat model's"


class ThreatSection(Section):
    """One more threat model the shipped model is evaluated against, beside the L-inf ball of
    ``attack``: a norm, a radius and the attacks that search it, worst case per example.

    Validated as :class:`~robprune_deploy.attacks.threats.ThreatDescription` is, field by field.
    """

    name: str | None = Field(None, description="the verdict rows' label (default <norm>-<eps>, e.g. l2-0.5)")
    norm: Literal["linf", "l2"] = Field(description="linf or l2")
    eps: float = Field(description="the radius in pixel units of inputs in [0, 1] (L-inf at most 1)")
    attacks: list[AttackName] = Field(
        default_factory=lambda: [cast(AttackName, name) for name in STANDARD_ATTACKS],
        description="attacks in that norm, worst case per example: apgd-ce, apgd-t, fab-t, square (AutoAttack's "
        "standard four, the default), fmn (also gives the median minimal distance)",
    )
    examples: int | None = Field(
        None, gt=0, le=10_000_000, description="attack the first this many examples of the subset (None: all)"
    )

    @field_validator("name")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return None if value is None else _threat_field(lambda: check_name(value))

    @field_validator("eps", mode="before")
    @classmethod
    def _radius(cls, value: Any, info: ValidationInfo) -> float:
        norm = info.data.get("norm", "l2")  # a bad norm is its own error; the radius is checked as L2 then
        return _threat_field(lambda: check_eps(value, norm))

    @field_validator("attacks")
    @classmethod
    def _distinct_attacks(cls, value: list[str]) -> list[str]:
        return list(_threat_field(lambda: check_attacks(value)))

    def description(self) -> ThreatDescription:
        """The threat this entry describes."""
        return ThreatDescription(self.norm, self.eps, tuple(self.attacks), self.name)


def _all_corruptions() -> list[str]:
    from robprune_deploy.evaluation.corruptions import CORRUPTIONS  # imported on use: it loads the runtimes

    return list(CORRUPTIONS)


class CorruptionSection(Section):
    """Accuracy under common corruptions (Hendrycks & Dietterich 2019), computed on the fly from the
    evaluation images, each (type, severity) cell weighing the same."""

    types: list[str] = Field(
        default_factory=_all_corruptions, description="corruption types (default: all 15 of CIFAR-10-C)"
    )
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="severities, 1 to 5")
    examples: int | None = Field(
        None, gt=0, le=10_000_000, description="corrupt the first this many examples of the subset (None: all)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the corruptions' random draws")

    @field_validator("types", mode="before")
    @classmethod
    def _known_types(cls, value: Any) -> list[str]:
        from robprune_deploy.evaluation.corruptions import check_types

        try:
            return list(check_types(value, "types"))
        except ValueError as exc:
            raise PydanticCustomError("corruption", str(exc)) from None

    @field_validator("severities")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one severity")
        bad = [s for s in value if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"a severity is 1 to 5, got {bad[0]}")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a severity")
        return value


class EvaluateSection(Section):
    """How the deployed ONNX model is attacked (docs/concepts/evaluation.md)."""

    providers: list[Literal["cuda", "cpu"]] = Field(
        default_factory=lambda: ["cuda", "cpu"],  # type: ignore[arg-type]
        min_length=1,
        description="onnxruntime execution providers, in order of preference; a fallback to CPU is logged",
    )
    runtimes: list[str] = Field(
        default_factory=lambda: ["onnxruntime"],
        min_length=1,
        description="registered runtimes that evaluate and gate the exported model, each on its own (onnxruntime, "
        "openvino); the first one's figures are the onnx.* keys, another's are prefixed by its name",
    )
    num_examples: int = Field(
        450, gt=0, le=10_000_000, description="fixed, seeded subset of the test split for robust accuracy"
    )
    subset_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of that subset (recorded)")
    torch_examples: int | None = Field(
        None,
        gt=0,
        le=10_000_000,
        description="the torch model's figures (torch.*, and the dense model's after pretraining) on the first "
        "this many examples of the subset (None: all); the shipped ONNX model's figures cover the whole subset",
    )
    attacks: Literal["pgd", "autoattack-fast", "autoattack"] = Field(
        "autoattack-fast",
        description="pgd: PGD + an independent Square run; autoattack-fast: APGD-CE, APGD-T (3 targets), "
        "Square 1000; autoattack: the standard ensemble (APGD-CE, APGD-T x9, FAB-T x9, Square 5000)",
    )
    apgd_steps: int | None = Field(None, gt=0, le=MAX_ATTACK_STEPS, description="APGD iterations (default 100)")
    apgd_targets: int | None = Field(
        None, gt=0, le=1000, description="APGD-T target classes (default 3 fast, 9 standard)"
    )
    fab_targets: int | None = Field(None, gt=0, le=1000, description="FAB-T target classes (default 9)")
    square_queries: int | None = Field(
        None, ge=0, le=100_000, description="Square's queries (default 300 for pgd, 1000 fast, 5000 standard)"
    )
    square_p_init: float = Field(0.8, gt=0, le=1, description="Square's p_init: the size of its first squares")
    ensemble_examples: int | None = Field(
        None,
        gt=0,
        le=10_000_000,
        description="autoattack protocols: the ensemble attacks the first this many examples of the subset "
        "(None: all); clean and PGD accuracy cover the whole subset",
    )
    square_examples: int = Field(200, gt=0, le=10_000_000, description="pgd protocol: examples Square attacks")
    curve_steps: int = Field(100, ge=0, le=100_000, description="FMN steps for the security curve (0: no curve)")
    curve_examples: int | None = Field(
        200, gt=0, le=10_000_000, description="examples on the security curve (None: all)"
    )
    indicator_examples: int = Field(
        100, ge=0, le=100_000, description="correctly classified examples the attack-failure indicators use (0: none)"
    )
    latency: LatencySection = Field(default_factory=LatencySection, description="dense vs pruned latency")
    max_session_memory_mb: int = Field(
        8192,
        ge=64,
        le=1_048_576,
        description="MiB an onnxruntime session may allocate (the CPU arena shared by the process's sessions, "
        "each GPU arena); a graph asking for more is refused (exit 2) instead of taking the machine's memory",
    )

    threats: list[ThreatSection] = Field(
        default_factory=list,
        description="more threat models, L-inf or L2, each its own verdict rows (threat:<label>); thresholds in "
        "gate.threats",
    )
    corruptions: CorruptionSection | None = Field(
        None, description="common-corruption accuracy (corruption_acc; null: not measured); thresholds in gate"
    )

    @field_validator("threats")
    @classmethod
    def _distinct_labels(cls, value: list[ThreatSection]) -> list[ThreatSection]:
        seen: dict[str, int] = {}
        for i, threat in enumerate(value):
            label = threat.description().label
            if label in seen:
                raise PydanticCustomError(
                    "threat", f"[{i}] is labelled {label!r} like [{seen[label]}]: give one of them a name"
                )
            seen[label] = i
        return value

    @field_validator("runtimes")
    @classmethod
    def _distinct_runtimes(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"runtime {repeated[0]!r} is listed twice")
        return value

    @property
    def pgd_square_queries(self) -> int:
        return 300 if self.square_queries is None else self.square_queries


IndicatorName = Literal[
    "silent_success",
    "unavailable_gradients",
    "unstable_predictions",
    "incomplete_optimization",
    "transfer_failure",
    "unconstrained_attack_failure",
    "non_monotone_curve",
    "blackbox_beats_whitebox",
]


class Int8GateSection(Section):
    """Thresholds of an INT8 model against its FP32 pruned model (``gate.min_*`` and the indicators
    apply to it as to any candidate). Drops are FP32 minus INT8, fractions in [0, 1]."""

    max_clean_drop: float | None = Field(0.02, ge=0, le=1, description="FP32 minus INT8 clean accuracy")
    max_pgd_drop: float | None = Field(
        0.05, ge=0, le=1, description="worst case of straight-through and transferred PGD, vs the FP32 model's PGD"
    )
    max_square_drop: float | None = Field(None, ge=0, le=1, description="FP32 minus INT8 Square accuracy")
    min_agreement: float | None = Field(0.98, ge=0, le=1, description="INT8 vs FP32 argmax agreement, clean inputs")
    max_parity_error: float | None = Field(
        0.25, ge=0, description="straight-through twin vs onnxruntime INT8 logits (rounding differs by one step)"
    )
    min_speedup: float | None = Field(None, ge=0, description="INT8 vs FP32 pruned latency at evaluate.latency.batch")
    baseline: str | None = Field(
        None, description="the FP32 model: model.onnx beside the INT8 file (default), an ONNX path or models:/ URI"
    )


Precision = Literal["fp32", "int8"]


NO_BASELINE = "none"
"""``gate.baseline`` that measures no baseline."""
BASELINE_CHECKS = (
    "max_clean_drop",
    "max_pgd_drop",
    "max_square_drop",
    "max_autoattack_drop",
    "max_corruption_drop",
    "min_speedup",
)
"""The gate's checks that compare the candidate to a baseline (and each ``gate.threats.<label>.max_drop``)."""


class ThreatThresholds(Section):
    """The thresholds of one threat of ``evaluate.threats`` (fractions in [0, 1]; ``None``: no check)."""

    min_acc: float | None = Field(None, ge=0, le=1, description="least accuracy under the threat (worst case)")
    max_drop: float | None = Field(None, ge=0, le=1, description="baseline minus candidate accuracy under it")


class GateSection(Section):
    """Release thresholds; ``None`` disables a check. Accuracies and drops are fractions in [0, 1]."""

    precision: Precision = Field(
        "fp32",
        description="what the gated model is, declared (never guessed from its graph): fp32, or int8 (gated "
        "against its FP32 model under gate.int8)",
    )

    min_clean_acc: float | None = Field(None, ge=0, le=1, description="least clean accuracy")
    min_pgd_acc: float | None = Field(None, ge=0, le=1, description="least PGD accuracy")
    min_square_acc: float | None = Field(None, ge=0, le=1, description="least Square accuracy")
    max_clean_drop: float | None = Field(None, ge=0, le=1, description="baseline minus candidate clean accuracy")
    max_pgd_drop: float | None = Field(None, ge=0, le=1, description="baseline minus candidate PGD accuracy")
    max_square_drop: float | None = Field(None, ge=0, le=1, description="baseline minus candidate Square accuracy")
    max_parity_error: float | None = Field(1e-3, ge=0, description="largest torch vs onnxruntime logit difference")
    min_speedup: float | None = Field(
        None,
        ge=0,
        description="least latency speed-up over the baseline: the lower bound of its 95% bootstrap interval "
        "(a check that cannot measure it neither passes nor fails)",
    )
    sparsity_tolerance: float | None = Field(0.01, ge=0, le=1, description="audit vs claimed sparsity")
    max_square_below_pgd: float | None = Field(
        0.1,
        ge=0,
        le=1,
        description="limit of the blackbox_beats_whitebox indicator: how far black-box accuracy may fall "
        "below white-box accuracy (gradient masking)",
    )
    min_autoattack_acc: float | None = Field(None, ge=0, le=1, description="least AutoAttack accuracy")
    max_autoattack_drop: float | None = Field(
        None, ge=0, le=1, description="baseline minus candidate AutoAttack accuracy"
    )
    threats: dict[str, ThreatThresholds] = Field(
        default_factory=dict,
        description="per label of evaluate.threats, its min_acc and max_drop (rows threat:<label>.min_acc, "
        "threat:<label>.max_drop)",
    )
    min_corruption_acc: float | None = Field(
        None, ge=0, le=1, description="least mean corruption accuracy (needs evaluate.corruptions)"
    )
    max_corruption_drop: float | None = Field(
        None, ge=0, le=1, description="baseline minus candidate mean corruption accuracy (paired t interval)"
    )
    drop_rule: Literal["point", "upper_bound"] = Field(
        "point",
        description="how a max_*_drop check decides on the paired drop: point (the drop itself, the default: "
        "thresholds are usually set on point figures, and small evaluations cannot confirm a few points), or "
        "upper_bound (the upper end of its 95% paired interval; an interval straddling the threshold is "
        "inconclusive and fails, naming the examples that would decide it: size them with robprune gate --plan)",
    )
    indicators: list[IndicatorName] = Field(
        default_factory=lambda: list(get_args(IndicatorName)),
        description="attack-failure indicators that fail the gate when they fire",
    )
    indicator_limits: dict[IndicatorName, float] = Field(
        default_factory=dict, description="overrides of the indicators' default limits"
    )
    baseline: str | None = Field(
        None,
        description="baseline model: dense (default), an ONNX path or models:/ URI, or none: no baseline is "
        "measured (no drop or speed-up check; for runs that all start from one model measured once)",
    )
    int8: Int8GateSection = Field(default_factory=Int8GateSection, description="an INT8 candidate's own thresholds")

    @model_validator(mode="after")
    def _baseline_for_its_checks(self) -> GateSection:
        if self.baseline == NO_BASELINE:
            relative = [name for name in BASELINE_CHECKS if getattr(self, name) is not None]
            relative += [f"threats.{label}.max_drop" for label, t in self.threats.items() if t.max_drop is not None]
            if relative:
                raise ValueError(
                    f"baseline: none measures no baseline, but {relative[0]} compares to one; "
                    f"set {relative[0]} to null or give a baseline"
                )
        return self


class TrackingSection(Section):
    enabled: bool = Field(True, description="log the run to MLflow")
    tracking_uri: str | None = Field(None, description="default: sqlite:///mlflow.db in the working directory")
    experiment: str = Field("robprune", description="MLflow experiment of the run")
    registered_model: str | None = Field(
        None, description="registered model the ONNX model becomes a version of (MLflow's name rules checked up front)"
    )
    alias: str | None = Field(
        None,
        description="alias set on the registered version when the gate passes (latest and v<number> are reserved)",
    )
    timeout_s: float = Field(4.0, gt=0, le=600, description="seconds a tracking server has to answer one request")
    retries: int = Field(2, ge=0, le=20, description="retries of a request the tracking server did not answer")

    @field_validator("registered_model")
    @classmethod
    def _registrable_name(cls, value: str | None) -> str | None:
        problem = None if value is None else model_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("alias")
    @classmethod
    def _settable_alias(cls, value: str | None) -> str | None:
        problem = None if value is None else alias_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class RuntimeSection(Section):
    """How the process uses the machine; changes speed, not results (not in the recipe fingerprint)."""

    threads: int | Literal["auto"] = Field(
        "auto",
        description=f"intra-op threads of torch and onnxruntime: auto (from the cores this process may use, "
        f"the load at start and the model's size; an OMP_NUM_THREADS in the environment wins) or 1-{MAX_THREADS}",
    )

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS):
            return value
        raise ValueError(f"must be auto or a whole number of threads from 1 to {MAX_THREADS}")


class Recipe(Section):
    """A whole pipeline. Every field is listed in the recipe reference (docs/reference/recipe.md)."""

    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="the run's seed; every epoch reseeds from it and the epoch number"
    )
    device: str = Field("auto", description="auto (CUDA when available) | cpu | cuda | cuda:N")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    attack: AttackSection = Field(default_factory=AttackSection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    compression: CompressionSection = Field(default_factory=CompressionSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    export: ExportSection = Field(default_factory=ExportSection)
    quantize: QuantizeSection = Field(default_factory=QuantizeSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    gate: GateSection = Field(default_factory=GateSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)

    def split_problems(self) -> list[str]:
        """Fields that need a validation split the recipe does not have (``data.val_size: 0``)."""
        if self.data.val_size > 0:
            return []
        problems = [
            f"{stage}.select: best_val_pgd needs a validation split (set data.val_size > 0)"
            for stage, section in (("pretrain", self.pretrain), ("finetune", self.finetune))
            if section.select != "last"
        ]
        if self.data.eval_split == "val":
            problems.append("data.eval_split: val needs a validation split (set data.val_size > 0)")
        return problems

    def checkpoint_problems(self) -> list[str]:
        """``pretrain.from_checkpoint`` without a ``model.checkpoint`` to train further."""
        if self.pretrain.from_checkpoint and self.model.checkpoint is None:
            return ["pretrain.from_checkpoint: trains model.checkpoint further, but model.checkpoint is not set"]
        return []

    def threat_problems(self) -> list[str]:
        """Gate thresholds for figures ``evaluate`` does not measure: a ``gate.threats`` label that is
        not in ``evaluate.threats``, corruption thresholds without ``evaluate.corruptions``."""
        labels = [threat.description().label for threat in self.evaluate.threats]
        known = ", ".join(repr(label) for label in labels) or "none"
        problems = [
            f"gate.threats.{label}: no threat of evaluate.threats is labelled {label!r} (labels: {known})"
            for label in self.gate.threats
            if label not in labels
        ]
        if self.evaluate.corruptions is None:
            problems += [
                f"gate.{name}: needs evaluate.corruptions (null: corruptions are not measured)"
                for name in ("min_corruption_acc", "max_corruption_drop")
                if getattr(self.gate, name) is not None
            ]
        return problems

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value
