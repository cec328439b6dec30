"""The deployment stages: export (ONNX + audit), and evaluate any precision of the exported model
(robustness and latency on each runtime of ``evaluate.runtimes``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from torch import nn

from robprune_deploy.algorithms import Granularity, PruningResult
from robprune_deploy.atomic import write_json
from robprune_deploy.errors import OnnxModelError, ReleaseError
from robprune_deploy.evaluation import Artifact, Robustness
from robprune_deploy.evaluation.latency import compare_speed
from robprune_deploy.evaluation.outcome_files import OUTCOMES_FILE, OUTCOMES_INT8_FILE, outcome_record
from robprune_deploy.export import audit_onnx, export_onnx, load_onnx, torch_weight_params
from robprune_deploy.export.onnx_export import onnx_opset
from robprune_deploy.gate.measure import measure, twins_for
from robprune_deploy.gate.staging import onnx_sha256
from robprune_deploy.pipeline.context import RunContext
from robprune_deploy.pipeline.stage_runner import StageBase, StageRecord, Values
from robprune_deploy.pipeline.summary_schema import ROBUSTNESS_FIGURES, ExportFigures
from robprune_deploy.progress import StageLines

MODEL_ONNX = "model.onnx"
DENSE_ONNX = "dense.onnx"
MODEL_INT8_ONNX = "model.int8.onnx"


@dataclass(frozen=True)
class Deployable:
    """How the pipeline evaluates one precision of the exported model: data, not code.

    :param file: the model file in the output folder; :param stage: its evaluation stage.
    :param keys: the ``summary.json`` prefix of its robustness figures; ``indicators``: of its
        indicators; ``latency``: of its latency figures, where it is named ``name``.
    :param compared: the models its latency is compared with, ``(name, file)``.
    :param reference: the precision whose figures its drops and argmax agreement compare with.
    :param renamed: summary keys this precision has always had under another name.
    :param outcomes: the file its per-example outcomes (first runtime) go to.
    """

    precision: str
    file: str
    stage: str
    keys: str
    indicators: str
    latency: str
    name: str
    compared: tuple[tuple[str, str], ...]
    reference: str | None = None
    renamed: dict[str, str] = field(default_factory=dict)
    outcomes: str = OUTCOMES_FILE


DEPLOYABLES = {
    "fp32": Deployable(
        "fp32", MODEL_ONNX, "evaluate", "onnx.", "indicators.", "latency.", "pruned", (("dense", DENSE_ONNX),)
    ),
    "int8": Deployable(
        "int8", MODEL_INT8_ONNX, "evaluate_int8", "int8.", "int8.indicators.", "int8.latency.", "int8",
        (("pruned", MODEL_ONNX), ("dense", DENSE_ONNX)), reference="fp32",
        renamed={"argmax_agreement": "twin_agreement"}, outcomes=OUTCOMES_INT8_FILE,
    ),
}  # fmt: skip


def claimed_metadata(result: PruningResult, deployable: nn.Module, dense: nn.Module) -> dict[str, str]:
    """What the pipeline claims about the model, stored in the ONNX file for the gate's audit.

    The claim is computed from the torch model: the zero fraction of its Conv/Linear weights
    (unstructured) or the fraction of those weights physically removed (channel).
    """
    weights = [m.weight for m in deployable.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept, dense_params = torch_weight_params(deployable), torch_weight_params(dense)
    if result.granularity is Granularity.UNSTRUCTURED:
        claimed = sum(int((w == 0).sum()) for w in weights) / max(kept, 1)
    else:
        claimed = 1 - kept / max(dense_params, 1)
    return {
        "robprune.algorithm": result.algorithm,
        "robprune.granularity": result.granularity.value,
        "robprune.target_ratio": f"{result.ratio}",
        "robprune.weight_params": str(kept),
        "robprune.dense_weight_params": str(dense_params),
        "robprune.claimed_sparsity": f"{claimed:.8f}",
    }


class Export(StageBase):
    """Write ``model.onnx`` and ``dense.onnx`` and check the graph against the torch model (always
    written afresh: an export takes seconds)."""

    name = "export"
    inputs = ("deployable", "dense", "result")
    main_only = True

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        deployable, dense, result = values["deployable"], values["dense"], values["result"]
        opset, dynamic = ctx.recipe.export.opset, ctx.recipe.export.dynamic_batch
        example = ctx.example_inputs
        pruned_path = export_onnx(
            deployable,
            ctx.out_dir / MODEL_ONNX,
            example,
            opset=opset,
            dynamic_batch=dynamic,
            metadata=claimed_metadata(result, deployable, dense),
        )
        export_onnx(
            dense,
            ctx.out_dir / DENSE_ONNX,
            example,
            opset=opset,
            dynamic_batch=dynamic,
            metadata={"robprune.algorithm": "dense"},
        )
        pruned_proto = load_onnx(pruned_path)
        audit = audit_onnx(pruned_proto)
        dense_audit = audit_onnx(load_onnx(ctx.out_dir / DENSE_ONNX))
        expected = torch_weight_params(deployable)
        if audit.weight_params != expected:
            raise OnnxModelError(
                f"{pruned_path}: audit found {audit.weight_params} Conv/Gemm weights, the torch model has {expected}"
            )
        figures = ExportFigures(
            weight_params=audit.weight_params,
            macs=audit.macs,
            zero_fraction=audit.zero_fraction,
            dense_weight_params=dense_audit.weight_params,
            dense_macs=dense_audit.macs,
            opset=onnx_opset(pruned_proto) or 0,  # read from the file: what was asked is what it has
        )
        info = figures.summary_items()
        ctx.tracker.log_params({"opset": opset, "dynamic_batch": dynamic})
        ctx.tracker.log_metrics({k.replace("onnx.", "audit_"): float(v) for k, v in info.items()})
        lines.note(
            {k: info[k] for k in ("onnx.weight_params", "onnx.dense_weight_params", "onnx.macs", "onnx.dense_macs")}
        )
        return StageRecord.of(self.name, figures)


_ATTRIBUTE = {"attack_budget": "budget"}
"""Robustness figures named otherwise in ``summary.json`` than on :class:`Robustness`."""
_DERIVED = frozenset({"agreement", "autoattack_examples"})
"""Robustness figures that are not attributes of :class:`Robustness` as they are."""


def robustness_summary(
    result: Robustness, prefix: str = "onnx.", indicators: str | None = None, renamed: dict[str, str] | None = None
) -> dict[str, Any]:
    """``summary.json`` entries for one artifact's robustness: ``<prefix><figure>``, and its indicators
    as ``<indicators><name>`` (``onnx.*`` and ``indicators.*`` for the shipped FP32 model,
    ``onnx.dense_*`` without indicators for the dense baseline, ``int8.*`` for the INT8 model)."""
    # The fixed figures of ROBUSTNESS_FIGURES (the schema lists them), then those of this run.
    fixed = [name for name in ROBUSTNESS_FIGURES if "<" not in name and name not in _DERIVED]
    figures: dict[str, Any] = {name: getattr(result, _ATTRIBUTE.get(name, name)) for name in fixed}
    # AutoAttack runs on the Square subset (its last member), when the ensemble ran at all.
    figures["autoattack_examples"] = result.square_examples if result.autoattack_acc is not None else None
    figures.update({f"{name}_pgd_acc": acc for name, acc in result.pgd_sources.items()})
    if result.agreement is not None:
        figures["agreement"] = result.agreement
    for member in result.members:
        key = member["name"].replace("-", "_")
        figures[f"{key}_acc"] = member["accuracy_after"]
        figures[f"{key}_seconds"] = member["seconds"]
    summary = {f"{prefix}{(renamed or {}).get(k, k)}": v for k, v in figures.items()}
    if indicators is not None:
        summary.update({f"{indicators}{name}": ind.value for name, ind in result.indicators.items()})
    return summary


def _drops(spec: Deployable, summary: dict[str, Any], reference: dict[str, Any], runtime_prefix: str) -> dict[str, Any]:
    """Reference minus candidate accuracy (``<keys>clean_drop``, ...), from the reference's summary
    entries on the same runtime. Square is compared only when the reference's was an independent run
    (the PGD protocol): in an ensemble it attacks only what the members before it left."""
    keys = DEPLOYABLES[spec.reference or "fp32"].keys
    attacks = reference.get(f"{runtime_prefix}{keys}attacks")
    compared = ("clean_acc", "pgd_acc", "square_acc") if attacks == "pgd" else ("clean_acc", "pgd_acc")
    drops: dict[str, Any] = {}
    for key in compared:
        own, theirs = summary.get(f"{spec.keys}{key}"), reference.get(f"{runtime_prefix}{keys}{key}")
        if is_number(own) and is_number(theirs):
            drops[f"{spec.keys}{key.replace('_acc', '_drop')}"] = theirs - own
    return drops


class Evaluate(StageBase):
    """Robustness and latency of the exported model at ``precision`` (see :data:`DEPLOYABLES`) on each
    runtime of ``evaluate.runtimes``; hands on each runtime's full measurement (the gate reuses them)
    as ``robustness`` (FP32) or ``int8_robustness``.

    Reads ``deployable``, the FP32 torch model (the twin of ``model.onnx``; PGD transferred from it
    attacks a quantized model beside its straight-through twin); the drops of a precision with a
    reference compare with the reference's entries in ``ctx.summary``.
    """

    main_only = True
    inputs = ("deployable",)

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision
        self.spec = DEPLOYABLES[precision]
        self.name = self.spec.stage
        self.outputs = (self.output,)

    @property
    def output(self) -> str:
        return "robustness" if self.precision == "fp32" else f"{self.precision}_robustness"

    def applies(self, ctx: RunContext) -> bool:
        return self.precision == "fp32" or ctx.recipe.quantize.enabled

    def run(self, ctx: RunContext, values: Values, lines: StageLines) -> StageRecord:
        summary, records = evaluate(ctx, values["deployable"], self.precision, ctx.summary)
        keys = [f"{self.spec.keys}{k}" for k in ("clean_acc", "pgd_acc", "autoattack_acc", "square_acc", "agreement")]
        lines.note({k: summary[k] for k in [*keys, f"{self.spec.latency}speedup"] if summary.get(k) is not None})
        values[self.output] = records
        return StageRecord(self.name, summary)


def evaluate(
    ctx: RunContext, deployable: nn.Module, precision: str = "fp32", reference: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Robustness]]:
    """The figures of :class:`Evaluate`. The first runtime's entries are named as in :class:`Deployable`;
    another runtime's carry its name first (``openvino.onnx.pgd_acc``).

    :param reference: the summary with the reference precision's entries, for the drops.
    :returns: the summary entries and each runtime's full measurement. The first runtime's
        per-example outcomes go to ``spec.outcomes`` (:mod:`robprune_deploy.evaluation.outcome_files`).
    """
    spec = DEPLOYABLES[precision]
    providers = tuple(ctx.recipe.evaluate.providers)
    batches = ctx.eval_subset_batches()
    summary: dict[str, Any] = {}
    records: dict[str, Robustness] = {}
    model = deployable.cpu()
    # The bytes measured, for the release record: the gate stage registers them only if unchanged.
    measured_sha256 = onnx_sha256(ctx.out_dir / spec.file)
    # fp32: the torch model itself; int8: its straight-through twin, and PGD transferred from the model
    twins = twins_for(Artifact(ctx.out_dir / spec.file, precision), model, model)
    for index, runtime in enumerate(ctx.recipe.evaluate.runtimes):
        artifact = Artifact(ctx.out_dir / spec.file, precision, runtime, providers)
        compared = None
        if spec.reference is not None:
            compared = Artifact(ctx.out_dir / DEPLOYABLES[spec.reference].file, spec.reference, runtime, providers)
        records[runtime] = measure(
            ctx.recipe, artifact, batches, twins, reference=compared, show_progress=ctx.show_progress
        )
        figures = robustness_summary(records[runtime], spec.keys, spec.indicators, spec.renamed)
        runtime_prefix = f"{runtime}." if index else ""
        figures.update(_drops(spec, figures, reference or {}, runtime_prefix) if spec.reference else {})
        figures.update(latency(ctx, spec, runtime))
        summary.update({f"{runtime_prefix}{k}": v for k, v in figures.items()})
    deployable.to(ctx.device)
    if onnx_sha256(ctx.out_dir / spec.file) != measured_sha256:
        raise ReleaseError(
            f"{ctx.out_dir / spec.file}: replaced while it was being evaluated; its figures describe no one file"
        )
    summary[f"{spec.keys}sha256"] = measured_sha256
    first = records[ctx.recipe.evaluate.runtimes[0]]
    context = {
        "split": ctx.eval_split,
        "subset_seed": ctx.recipe.evaluate.subset_seed,
        "pgd_steps": ctx.recipe.attack.eval_steps,
    }
    outcomes = write_json(ctx.out_dir / spec.outcomes, outcome_record(first, batches, **context))
    ctx.tracker.log_artifact(outcomes)
    ctx.tracker.log_metrics({k: float(v) for k, v in summary.items() if is_number(v)})
    return summary, records


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def latency(ctx: RunContext, spec: Deployable, runtime: str) -> dict[str, Any]:
    """Median/p90 latency of the model and of each model it is compared with, on ``runtime`` under
    the same options, at batch 1 and the recipe's batch, each pair timed interleaved.

    Keys (``L`` = ``spec.latency``): ``L<model>_ms`` for a compared model, ``L<name>_ms`` and
    ``Lspeedup`` for this one when it is compared with one model, ``L<name>_vs_<model>_ms`` and
    ``Lspeedup_vs_<model>`` when with several; ``_b1`` before the unit at batch 1."""
    lat, prefix = ctx.recipe.evaluate.latency, spec.latency
    shape = tuple(ctx.example_inputs.shape[1:])
    providers = tuple(ctx.recipe.evaluate.providers)
    candidate = Artifact(ctx.out_dir / spec.file, spec.precision, runtime, providers).open()
    result: dict[str, Any] = {f"{prefix}batch": lat.batch, f"{prefix}provider": candidate.provider}
    for name, file in spec.compared:
        reference = Artifact(ctx.out_dir / file, "fp32", runtime, providers).open()
        vs = "" if len(spec.compared) == 1 else f"_vs_{name}"
        for batch, b1 in ((lat.batch, ""), (1, "_b1")):
            base, own, speedup = compare_speed(reference, candidate, shape, batch, lat.warmup, lat.repeats)
            for model, stats in ((f"{name}{b1}", base), (f"{spec.name}{vs}{b1}", own)):
                result[f"{prefix}{model}_ms"] = stats.median_ms
                result[f"{prefix}{model}_p90_ms"] = stats.p90_ms
                result[f"{prefix}{model}_iqr_ms"] = stats.iqr_ms
            result[f"{prefix}speedup{vs}{b1}"] = speedup.ratio
            result[f"{prefix}speedup{vs}{b1}_low"] = speedup.low
            result[f"{prefix}speedup{vs}{b1}_high"] = speedup.high
            result[f"{prefix}speedup{vs}{b1}_measurable"] = speedup.measurable
    return result
