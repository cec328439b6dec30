"""What the gate checks before it measures, so that it cannot be fooled by what it is given.

Bad input is an error (exit 2), raised before any attack runs:

- the evaluation subset: labels within the data's classes, examples of at least two classes, and
  enough examples that accuracy above chance can be shown at all;
- each ONNX model (candidate and baseline): exactly one float image input of the data's shape
  (batch dynamic, or fixed to the one batch size the gate feeds), exactly one output of shape
  (batch, number of classes of the data), readable gate metadata; each is run on every runtime of
  ``evaluate.runtimes``, whose names must be registered.

A model that is a valid classifier but broken fails the verdict (exit 1), whatever the thresholds:

- ``finite_weights``, ``finite_logits``: NaN or inf in an initializer or in the logits on the
  evaluation subset;
- ``finite_measurements``: any measured figure (accuracy, parity, latency, audit) NaN or inf;
- ``above_chance``: clean accuracy not significantly above chance, where chance is the larger of
  ``1 / num_classes`` and the majority class's share of the subset (a constant predictor reaches
  it), by a one-sided exact binomial test at level :data:`CHANCE_ALPHA`. The threshold shown is the
  least accuracy that passes. The baseline gets the same check when a drop threshold compares to it;
- ``batch_consistency`` (and ``baseline_batch_consistency``): a predicted class that changes with the
  batch size (1, the evaluation batch, the whole subset, one never fed otherwise), ties excepted
  (:mod:`robprune_deploy.gate.consistency`): the model would not serve what the gate measured.

What the model is, FP32 or INT8, is declared (``gate.precision``, ``robprune gate --precision``),
never guessed from its graph; a file whose metadata says otherwise is refused (exit 2).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

from robprune_deploy.data.labels import check_labels
from robprune_deploy.errors import DatasetError, OnnxModelError, RecipeError, ShapeError, UnknownNameError
from robprune_deploy.evaluation import RUNTIMES, Artifact
from robprune_deploy.export import load_onnx
from robprune_deploy.gate.checks import CheckResult, Measurements
from robprune_deploy.gate.consistency import BatchConsistency, compare_batches, logits_in_batches, unseen_batch
from robprune_deploy.quantization import PRECISION_KEY
from robprune_deploy.recipe import Recipe

CHANCE_ALPHA = 0.01
"""Level of the one-sided binomial test that clean accuracy lies above chance."""
_NUMERIC_METADATA = {"robprune.claimed_sparsity": float, "robprune.dense_weight_params": int}


def chance_rate(counts: Counter[int], num_classes: int) -> float:
    """The accuracy of the best constant predictor, or of guessing, whichever is higher."""
    total = sum(counts.values())
    return max(1.0 / num_classes, max(counts.values()) / total)


def least_significant_accuracy(n: int, chance: float, alpha: float = CHANCE_ALPHA) -> float:
    """The least accuracy on ``n`` examples whose one-sided binomial p-value against ``chance`` is
    below ``alpha``; above 1 when no accuracy on ``n`` examples can be told from chance."""
    from scipy.stats import binom

    if chance >= 1.0:
        return math.inf
    needed = int(binom.isf(alpha, n, chance)) + 1  # the least k with P(X >= k) <= alpha
    return needed / n


@dataclass(frozen=True)
class EvaluationData:
    """The fixed evaluation subset the gate measures on, and the classifier interface its data implies.

    :param name: the dataset's name, for messages; :param input_shape: ``(C, H, W)`` of one image.
    """

    name: str
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    input_shape: tuple[int, int, int]
    num_classes: int


@dataclass
class _ModelIntegrity:
    role: str
    runtime: str
    weights_nonfinite: int
    logits_nonfinite: int
    batches: BatchConsistency


@dataclass
class GateInputs:
    """The validated evaluation subset, and the integrity of each model the gate was given.

    :param batches: the fixed evaluation batches the gate measures on.
    :param num_classes: classes of the data.
    :param input_shape: ``(C, H, W)`` of the data's images.
    :param counts: examples per class in the subset.
    """

    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    input_shape: tuple[int, int, int]
    counts: Counter[int]
    providers: Sequence[str] = ("cpu",)
    compares_to_baseline: bool = False
    batch_sizes: set[int] = field(default_factory=set)
    unseen_batch: int = 7
    models: list[_ModelIntegrity] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return sum(self.counts.values())

    @property
    def chance(self) -> float:
        return chance_rate(self.counts, self.num_classes)

    def model(self, artifact: Artifact, role: str = "candidate") -> None:
        """Validate the ONNX classifier of ``artifact`` against the data, then run it once on the
        subset on its runtime (served by each runtime, each is checked).

        :raises ShapeError: for an interface that is not one image input and one logits output of
            the data's shapes. :raises OnnxModelError: for unreadable gate metadata.
        """
        path = artifact.file
        proto = load_onnx(path)
        check_interface(
            proto, path, self.input_shape, self.num_classes, self.batch_sizes, list(self.batches[0][0].shape)
        )
        session = artifact.open()

        def predict(x: np.ndarray) -> np.ndarray:
            logits = session.predict(x)
            if logits.shape != (len(x), self.num_classes):
                raise ShapeError(
                    f"ONNX file {path.name}: gives logits of shape {list(logits.shape)} for a batch of {len(x)}, "
                    f"expected [{len(x)}, {self.num_classes}] (the data's classes)"
                )
            return logits

        evaluated = np.concatenate([predict(x.numpy()) for x, _ in self.batches])
        nonfinite_logits = int((~np.isfinite(evaluated)).sum())
        images = torch.cat([x for x, _ in self.batches]).numpy()
        labels = torch.cat([y for _, y in self.batches]).numpy()
        reference = len(self.batches[0][0])
        runs = {reference: evaluated}
        for batch in (1, len(images), self.unseen_batch):
            if batch not in runs:
                runs[batch] = logits_in_batches(predict, images, batch)
        consistency = compare_batches(runs, labels, reference)
        integrity = _ModelIntegrity(role, artifact.runtime, nonfinite_weights(proto), nonfinite_logits, consistency)
        self.models.append(integrity)

    def served(self, measured: Measurements, role: str, runtime: str) -> Measurements:
        """``measured`` with the clean accuracy at batch 1 of the model validated as ``role`` on ``runtime``."""
        model = next(m for m in self.models if m.role == role and m.runtime == runtime)
        return replace(measured, clean_acc_b1=model.batches.accuracy[1])

    def checks(self, candidate: Measurements, baseline: Measurements | None, runtime: str) -> list[CheckResult]:
        """The integrity checks on ``runtime``, appended to the threshold checks of its verdict."""
        results: list[CheckResult] = []
        for m in (m for m in self.models if m.runtime == runtime):
            prefix = "" if m.role == "candidate" else f"{m.role}_"
            results.append(
                _no_nonfinite(f"{prefix}finite_weights", m.weights_nonfinite, "NaN/inf weights in the graph")
            )
            results.append(_no_nonfinite(f"{prefix}finite_logits", m.logits_nonfinite, "NaN/inf logits on the subset"))
            results.append(
                CheckResult(
                    f"{prefix}batch_consistency",
                    float(m.batches.disagreements),
                    0.0,
                    "<=",
                    m.batches.disagreements == 0,
                    m.batches.detail(),
                )
            )
        measured = {"candidate": candidate, "baseline": baseline}
        bad = [
            f"{role}.{f.name}"
            for role, m in measured.items()
            if m is not None
            for f in fields(m)
            if isinstance(getattr(m, f.name), float) and not math.isfinite(getattr(m, f.name))
        ]
        results.append(_no_nonfinite("finite_measurements", len(bad), ", ".join(bad) or "every figure finite"))
        results.append(self._above_chance("above_chance", candidate))
        if baseline is not None and self.compares_to_baseline:  # a drop against a junk baseline proves nothing
            results.append(self._above_chance("baseline_above_chance", baseline))
        return results

    def _above_chance(self, name: str, m: Measurements) -> CheckResult:
        chance = self.chance
        threshold = least_significant_accuracy(self.examples, chance)
        ok = math.isfinite(m.clean_acc) and m.clean_acc >= threshold
        detail = (
            f"chance {chance:.4f} = max(1/{self.num_classes}, majority share); one-sided binomial test at "
            f"{CHANCE_ALPHA:g} on {self.examples} examples"
        )
        return CheckResult(name, m.clean_acc, threshold, ">=", ok, detail)


def _no_nonfinite(name: str, count: int, detail: str) -> CheckResult:
    return CheckResult(name, float(count), 0.0, "<=", count == 0, detail)


def nonfinite_weights(proto: onnx.ModelProto) -> int:
    """Entries of the graph's float initializers and constants that are NaN or inf."""
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    count = 0
    for tensor in tensors:
        if tensor.data_type in floats:
            values = numpy_helper.to_array(tensor).astype(np.float64, copy=False)
            count += int((~np.isfinite(values)).sum())
    return count


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def check_interface(
    proto: onnx.ModelProto,
    path: Path,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_sizes: set[int],
    fed: list[int],
) -> None:
    """One float image input of ``input_shape`` and one output of ``(batch, num_classes)``.

    :param batch_sizes: every batch size the gate feeds (a fixed batch dimension must be the only one).
    :param fed: the shape of the first batch the gate feeds, for the message.
    """
    name = path.name
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        listed = ", ".join(repr(v.name) for v in inputs) or "none"
        raise ShapeError(f"ONNX file {name}: has {len(inputs)} inputs ({listed}); a classifier takes one image input")
    image = inputs[0]
    if image.type.tensor_type.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(image.type.tensor_type.elem_type)
        raise ShapeError(f"ONNX file {name}: input {image.name!r} is {kind}; the gate feeds float32 images in [0, 1]")
    dims = _dims(image)
    expected = [*input_shape]
    if len(dims) != 4 or any(isinstance(d, int) and d != e for d, e in zip(dims[1:], expected, strict=False)):
        raise ShapeError(f"ONNX file {name}: input {image.name!r} expects shape {dims}, got {fed}")
    batch = dims[0]
    if isinstance(batch, int) and batch > 0 and batch_sizes - {batch}:
        raise ShapeError(
            f"ONNX file {name}: input {image.name!r} has a fixed batch of {batch}, the gate feeds batches of "
            f"{sorted(batch_sizes)}; export it with a dynamic batch (export.dynamic_batch: true)"
        )
    if len(proto.graph.output) != 1:
        listed = ", ".join(repr(v.name) for v in proto.graph.output)
        raise ShapeError(f"ONNX file {name}: has {len(proto.graph.output)} outputs ({listed}); a classifier has one")
    out = _dims(proto.graph.output[0])
    if out and (len(out) != 2 or (isinstance(out[1], int) and out[1] != num_classes)):
        raise ShapeError(
            f"ONNX file {name}: output {proto.graph.output[0].name!r} has shape {out}, the data needs "
            f"[batch, {num_classes}] ({num_classes} classes)"
        )
    for entry in proto.metadata_props:
        parse = _NUMERIC_METADATA.get(entry.key)
        if parse is None:
            continue
        try:
            parse(entry.value)
        except ValueError:
            raise OnnxModelError(
                f"ONNX file {name}: metadata {entry.key} = {entry.value[:40]!r} is not a number"
            ) from None


def check_declared_precision(proto: onnx.ModelProto, path: Path, precision: str) -> None:
    """The file's own ``robprune.precision`` metadata, where it has one, agrees with the declaration.

    :raises OnnxModelError: when it does not: gated as the other precision, the gate would measure
        the wrong thresholds against the wrong baseline.
    """
    written = {p.key: p.value for p in proto.metadata_props}.get(PRECISION_KEY)
    if written is not None and written != precision:
        raise OnnxModelError(
            f"ONNX file {path.name}: its metadata says {PRECISION_KEY}={written}, the gate was declared {precision}; "
            f"gate it with --precision {written} (gate.precision: {written})"
        )


def check_runtimes(names: Sequence[str]) -> None:
    """:raises RecipeError: naming ``evaluate.runtimes[i]`` and the known runtimes, for a name no
    runtime is registered under (checked before anything is trained or measured)."""
    for index, name in enumerate(names):
        if name not in RUNTIMES:
            raise RecipeError(f"evaluate.runtimes[{index}]: {UnknownNameError('runtime', name, RUNTIMES.names())}")


def validate_gate_inputs(recipe: Recipe, data: EvaluationData) -> GateInputs:
    """The recipe's evaluation subset, validated (models are added with :meth:`GateInputs.model`).

    :raises DatasetError: for labels out of range, a single class, or too few examples to tell
        accuracy from chance.
    """
    batches = data.batches
    labels = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.long)
    where = f"the gate's evaluation subset ({len(labels)} examples of {data.name})"
    counts = check_labels(labels, data.num_classes, where)
    check_runtimes(recipe.evaluate.runtimes)
    inputs = GateInputs(batches, data.num_classes, data.input_shape, counts, tuple(recipe.evaluate.providers))
    if least_significant_accuracy(inputs.examples, inputs.chance) > 1.0:
        raise DatasetError(
            f"{where}: too few to show accuracy above chance ({inputs.chance:.2f}) at {CHANCE_ALPHA:g}; "
            f"raise evaluate.num_examples"
        )
    lat = recipe.evaluate.latency
    inputs.batch_sizes = {len(x) for x, _ in batches} | {lat.batch, 1, inputs.examples}
    inputs.unseen_batch = unseen_batch(inputs.batch_sizes)
    inputs.batch_sizes.add(inputs.unseen_batch)
    gate = recipe.gate
    drops = [gate.max_clean_drop, gate.max_pgd_drop, gate.max_square_drop, gate.max_autoattack_drop]
    drops += [gate.max_corruption_drop, *(t.max_drop for t in gate.threats.values())]
    inputs.compares_to_baseline = any(t is not None for t in drops)
    return inputs
