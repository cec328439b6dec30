"""The keys of ``summary.json``: one table, by the stage that measures them, in run order.

Stages with a fixed set of keys return typed :class:`Figures` (a field per key), and their group
is read from those fields; every stage's :class:`~robprune_deploy.pipeline.stage_runner.StageRecord`
is checked against its group here before it is merged, and the reference page of the keys
(``docs/reference/summary.md``) is rendered from this table, so what a run writes and what the
documentation lists cannot drift.

A ``<name>`` in a key stands for a part that depends on the run (an indicator's name, an ensemble
member, a compared model); a group ``per_runtime`` also holds each key as ``<runtime>.<key>`` for
every runtime of ``evaluate.runtimes`` after the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any


def key(name: str, *, optional: bool = False) -> Any:
    """A field of :class:`Figures` that is the ``summary.json`` key ``name``; an ``optional`` one
    (default ``None``) is left out of the summary when it is ``None``."""
    metadata = {"key": name, "optional": optional}
    return field(default=None, metadata=metadata) if optional else field(metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Figures:
    """A stage's typed figures: each field is one ``summary.json`` key, named in its metadata."""

    def summary_items(self) -> dict[str, Any]:
        items = {f.metadata["key"]: getattr(self, f.name) for f in fields(self)}
        optional = {f.metadata["key"] for f in fields(self) if f.metadata["optional"]}
        return {k: v for k, v in items.items() if v is not None or k not in optional}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.metadata["key"] for f in fields(cls))


@dataclass(frozen=True, kw_only=True)
class CompressionFigures(Figures):
    """What was pruned, counted on the stripped model; under ``torchrun``, the ranks' common state."""

    algorithm: str = key("algorithm")
    granularity: str = key("granularity")
    target_ratio: float = key("target_ratio")
    sparsity: float = key("sparsity")
    params_dense: int = key("params_dense")
    params_pruned: int = key("params_pruned")
    macs_dense: int = key("macs_dense")
    macs_pruned: int = key("macs_pruned")
    world_size: int | None = key("distributed.world_size", optional=True)
    state_sha256: str | None = key("distributed.state_sha256", optional=True)


@dataclass(frozen=True, kw_only=True)
class TorchFigures(Figures):
    """The pruned torch model: evaluation subset and, with a validation split, the whole of it."""

    clean_acc: float = key("torch.clean_acc")
    pgd_acc: float = key("torch.pgd_acc")
    examples: int = key("torch.examples")
    val_clean_acc: float | None = key("val.clean_acc", optional=True)
    val_pgd_acc: float | None = key("val.pgd_acc", optional=True)
    val_pgd_steps: int | None = key("val.pgd_steps", optional=True)


@dataclass(frozen=True, kw_only=True)
class ExportFigures(Figures):
    """The audit of ``model.onnx`` and ``dense.onnx``."""

    weight_params: int = key("onnx.weight_params")
    macs: int = key("onnx.macs")
    zero_fraction: float = key("onnx.zero_fraction")
    dense_weight_params: int = key("onnx.dense_weight_params")
    dense_macs: int = key("onnx.dense_macs")
    opset: int = key("onnx.opset")


ROBUSTNESS_FIGURES = (
    "clean_acc",
    "pgd_acc",
    "square_acc",
    "autoattack_acc",
    "whitebox_acc",
    "attacks",
    "attack_budget",
    "median_linf_distance",
    "curve_acc_at_eps",
    "fmn_acc_at_eps",
    "max_abs_diff",
    "argmax_agreement",
    "provider",
    "examples",
    "square_examples",
    "autoattack_examples",
    "<source>_pgd_acc",
    "agreement",
    "<member>_acc",
    "<member>_seconds",
)
"""One artifact's robustness figures (:func:`~robprune_deploy.pipeline.deploy.robustness_summary`)."""


def robustness_keys(prefix: str, renamed: dict[str, str] | None = None) -> tuple[str, ...]:
    return tuple(f"{prefix}{(renamed or {}).get(k, k)}" for k in ROBUSTNESS_FIGURES)


def latency_keys(prefix: str) -> tuple[str, ...]:
    """``<model>``: a compared model or this one (``_vs_<model>`` and ``_b1`` included)."""
    figures = ("batch", "provider", "<model>_ms", "<model>_p90_ms", "<model>_iqr_ms", "speedup<suffix>")
    return tuple(f"{prefix}{k}" for k in figures)


@dataclass(frozen=True)
class KeyGroup:
    """The ``summary.json`` keys one stage (or the run itself, ``run``) writes."""

    stage: str
    keys: tuple[str, ...]
    doc: str
    per_runtime: bool = False


INT8_RENAMED = {"argmax_agreement": "twin_agreement"}

SUMMARY_SCHEMA: tuple[KeyGroup, ...] = (
    KeyGroup(
        "run",
        ("paths.out_dir", "paths.data_root", "paths.checkpoint", "mlflow.checkpoint_uri", "mlflow.run_id"),
        "the run's folders and inputs, resolved; the checkpoint URI given; the pipeline's MLflow run",
    ),
    KeyGroup(
        "pretrain",
        (
            "torch.dense_clean_acc",
            "torch.dense_pgd_acc",
            "val.dense_clean_acc",
            "val.dense_pgd_acc",
            "pretrain.selected_epoch",
            "pretrain.selected_val_pgd_acc",
            "pretrain.fast_collapsed_epoch",
            "mlflow.pretrained_uri",
        ),
        "the dense model (torch): evaluation subset and validation split; the epoch selected",
    ),
    KeyGroup("prune", (), "nothing: the masks and statistics go to pruned.pt and statistics.json"),
    KeyGroup(
        "finetune",
        ("finetune.selected_epoch", "finetune.selected_val_pgd_acc", "finetune.fast_collapsed_epoch"),
        "the epoch selected by validation",
    ),
    KeyGroup(
        "compression",
        CompressionFigures.keys(),
        "what was pruned, counted on the stripped model; under torchrun, the ranks' common state",
    ),
    KeyGroup("measure (torch)", TorchFigures.keys(), "the pruned torch model: evaluation subset and validation split"),
    KeyGroup(
        "splits",
        (
            "splits.torch",
            "splits.onnx",
            "splits.gate",
            "splits.val",
            "splits.pretrain",
            "splits.finetune",
            "data.train_examples",
            "data.test_examples",
            "data.val_examples",
            "data.val_seed",
        ),
        "the split each key prefix was measured on, and the split sizes",
    ),
    KeyGroup("export", ExportFigures.keys(), "the audit of model.onnx and dense.onnx"),
    KeyGroup(
        "evaluate",
        (*robustness_keys("onnx."), "onnx.sha256", "indicators.<name>", *latency_keys("latency.")),
        "model.onnx on each runtime: robustness, attack-failure indicators, latency against dense.onnx; the "
        "SHA-256 of the bytes measured",
        per_runtime=True,
    ),
    KeyGroup(
        "log models",
        (
            "mlflow.torch_model_uri",
            "mlflow.model_uri",
            "mlflow.baseline_uri",
            "mlflow.registered_model",
            "mlflow.registered_version",
        ),
        "the models logged and registered in MLflow",
    ),
    KeyGroup(
        "gate",
        (
            *robustness_keys("onnx.dense_"),
            "gate.passed",
            "gate.failures",
            "gate.paired_drops",
            "gate.model_sha256",
            "gate.baseline_sha256",
            "gate.release",
        ),
        "the gate's verdict on model.onnx, the dense baseline's robustness it measured, the paired drop from "
        "it per figure measured example by example on both (accuracy figure -> drop, 95% interval low/high, "
        "p_value, examples, method), the SHA-256 of both models' bytes and the release record (release.json) "
        "that holds them",
    ),
    KeyGroup(
        "quantize",
        (
            "int8.int8_initializers",
            "int8.uint8_initializers",
            "int8.float_initializers",
            "int8.quantize_nodes",
            "int8.dequantize_nodes",
            "int8.weight_params",
            "int8.same_channels",
            "int8.preset",
            "int8.calibration_size",
        ),
        "with quantize.enabled: what model.int8.onnx holds",
    ),
    KeyGroup(
        "evaluate_int8",
        (
            *robustness_keys("int8.", INT8_RENAMED),
            "int8.sha256",
            "int8.indicators.<name>",
            "int8.clean_drop",
            "int8.pgd_drop",
            "int8.square_drop",
            *latency_keys("int8.latency."),
        ),
        "with quantize.enabled: model.int8.onnx on each runtime, and its drops from model.onnx",
        per_runtime=True,
    ),
    KeyGroup(
        "log int8 model",
        ("mlflow.int8_model_uri", "mlflow.int8_registered_version"),
        "with quantize.enabled: the INT8 model logged and registered in MLflow",
    ),
    KeyGroup(
        "gate_int8",
        ("int8.gate.passed", "int8.gate.failures", "int8.gate.model_sha256", "int8.gate.release"),
        "with quantize.enabled: the INT8 gate's verdict, the SHA-256 of the model's bytes and its release record",
    ),
)

GROUPS = {group.stage: group for group in SUMMARY_SCHEMA}


def _pattern(key: str) -> str:
    return re.sub(r"<[a-z]+>", "[a-z0-9_]*", re.escape(key).replace(r"\<", "<").replace(r"\>", ">"))


def _matcher(group: KeyGroup) -> re.Pattern[str]:
    keys = "|".join(_pattern(key) for key in group.keys) or "(?!)"
    runtime = r"(?:[a-z0-9_]+\.)?" if group.per_runtime else ""
    return re.compile(f"{runtime}(?:{keys})")


def unknown_keys(stage: str, keys: Iterable[str]) -> list[str]:
    """The keys that ``stage``'s group does not name."""
    matcher = _matcher(GROUPS[stage])
    return [key for key in keys if not matcher.fullmatch(key)]


def check_summary_keys(stage: str, figures: dict[str, Any]) -> None:
    """:raises RuntimeError: for a key not in ``stage``'s group (a stage writing an undocumented key is a bug)."""
    unknown = unknown_keys(stage, figures)
    if unknown:
        raise RuntimeError(f"stage {stage} wrote summary keys not in its schema: {', '.join(unknown)}")


def summary_keys_markdown() -> str:
    """The reference page of the keys (``docs/reference/summary.md``)."""
    lines = [
        "# summary.json keys",
        "",
        "<!-- generated from robprune_deploy/pipeline/summary_schema.py: python -m robprune_deploy.reference -->",
        "",
        "Every key `summary.json` may hold, by the stage that writes it, in run order (the same keys are",
        "logged as MLflow metrics where their value is a number). `<name>` stands for a part that depends",
        "on the run; the groups marked *per runtime* also hold each key as `<runtime>.<key>` for every",
        "runtime of `evaluate.runtimes` after the first (`openvino.onnx.pgd_acc`).",
    ]
    for group in SUMMARY_SCHEMA:
        if not group.keys:
            continue
        runtime = " (per runtime)" if group.per_runtime else ""
        lines += ["", f"## {group.stage}{runtime}", "", f"{group.doc[0].upper()}{group.doc[1:]}.", ""]
        lines += [f"- `{key}`" for key in group.keys]
    return "\n".join(lines) + "\n"
