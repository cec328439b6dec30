"""The functional API, in the style of ``nncf.prune``: adversarial training, pruning and the gate."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError
from torch import nn

from robprune_deploy.algorithms import ALGORITHMS, PruningContext, PruningResult
from robprune_deploy.algorithms.plugin_guard import plugin_code
from robprune_deploy.algorithms.verification import verify_masks
from robprune_deploy.arguments import CheckedBatches, check_count, check_fraction, check_model, model_classes
from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.errors import ArgumentError, RecipeError

if TYPE_CHECKING:
    from robprune_deploy.gate.gating import GateVerdict
    from robprune_deploy.recipe import Precision, Recipe

DEFAULT_THREAT = ThreatModel(eps=8 / 255, step_size=2 / 255, steps=10)
"""The field's CIFAR convention: L-inf 8/255, PGD-10 with step 2/255."""


def _ensure_threads(model: nn.Module, first_inputs: Callable[[], torch.Tensor]) -> None:
    """``runtime.threads: auto`` for this process, sized by ``model`` on the first batch, unless a
    command or an earlier call already chose (see :mod:`robprune_deploy.runtime.thread_policy`)."""
    from robprune_deploy.pipeline.recipe_threads import forward_macs
    from robprune_deploy.runtime import current_thread_choice, ensure_thread_policy

    if current_thread_choice() is not None:
        return
    try:
        x = first_inputs()
        work: int | None = forward_macs(model, x.shape[1:]) * x.shape[0]
    except Exception:  # no or odd data: the checks that follow report it; the threads go unsized
        work = None
    ensure_thread_policy(work)


def _batches(dataset: Any) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Re-iterable ``(x, y)`` batches from an :class:`nncf.Dataset`, a DataLoader or any iterable."""
    # nncf.Dataset wraps an iterable of items; its transform is applied by get_inference_data().
    if hasattr(dataset, "get_inference_data"):
        return _Reiterable(dataset.get_inference_data)
    if isinstance(dataset, Iterator):  # a one-shot iterator (a generator): keep its batches for every epoch
        return list(dataset)
    return dataset


class _Reiterable:
    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._factory())


def prune(
    model: nn.Module,
    algorithm: str,
    dataset: Any,
    *,
    ratio: float,
    attack: ThreatModel | None = None,
    ignored_scope: Any | None = None,
    loss: RobustLoss | str = RobustLoss.PGD_AT,
    device: torch.device | str | None = None,
    seed: int = 0,
    **algorithm_config: Any,
) -> PruningResult:
    """Prune ``model`` with a registered robust pruning algorithm.

    :param model: a classifier taking inputs in [0, 1] (normalization inside the model).
    :param algorithm: a name in :data:`ALGORITHMS` (``"s2ap"``, ``"hydra"``, ``"mrpf"``, ...).
    :param dataset: an :class:`nncf.Dataset` (or any re-iterable) of ``(x, y)`` batches.
    :param ratio: target sparsity (unstructured) or MACs reduction (channel), in (0, 1).
    :param attack: the threat model of the robust loss; default L-inf 8/255, PGD-10.
    :param ignored_scope: an :class:`nncf.IgnoredScope` of layers never pruned.
    :param loss: the robust loss an algorithm uses when it has no search loss of its own (MRPF's
        sensitivity probes); S2AP and HYDRA search with their ``search_loss`` option (TRADES by
        default, as HYDRA's reference code), so pass ``search_loss="pgd_at"`` to change theirs.
    :param algorithm_config: the algorithm's options, validated by its config model.
    :returns: a :class:`PruningResult`; call ``strip()`` for the deployable model.
    :raises ArgumentError: for an argument of the wrong type or value; :raises DatasetError: for
        empty data, inputs outside [0, 1] or NaN, labels outside the model's classes (every batch is
        checked as the algorithm reads it); :raises ShapeError: for batches that are not images
        the model takes.

    Example::

        result = robprune_deploy.prune(model, "s2ap", nncf.Dataset(train_loader), ratio=0.9,
                                       epochs=10, swap_fraction=0.02)
        deployable = result.strip()
    """
    model = check_model(model, "prune")
    if not isinstance(algorithm, str):
        raise ArgumentError(f"prune: algorithm must be a registered name, got {type(algorithm).__name__}")
    ratio = check_fraction(ratio, "prune: ratio", open_interval=True)
    if attack is not None and not isinstance(attack, ThreatModel):
        raise ArgumentError(f"prune: attack must be a ThreatModel, got {type(attack).__name__}")
    check_count(seed, "prune: seed", 0, 2**32 - 1)
    try:
        robust_loss = RobustLoss(loss)
        target = torch.device(device) if device is not None else next(model.parameters()).device
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ArgumentError(f"prune: {str(exc).splitlines()[0]}") from None
    cls = ALGORITHMS.get(algorithm)
    try:
        config = cls.Config.model_validate(algorithm_config)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise RecipeError(f"{algorithm} config: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    batches = CheckedBatches(_batches(dataset), "prune: dataset")
    x, _ = batches.first()
    batches.num_classes = model_classes(model.to(target), x, "prune")
    _ensure_threads(model, lambda: x)
    context = PruningContext(
        train_data=batches,
        ratio=ratio,
        threat=attack or DEFAULT_THREAT,
        example_inputs=x[:1],
        loss=robust_loss,
        ignored_scope=ignored_scope,
        device=target,
        seed=seed,
    )
    distribution = ALGORITHMS.provider(algorithm)
    with plugin_code(algorithm, distribution, "__init__"):
        instance = cls(config)
    with plugin_code(algorithm, distribution, "apply"):
        return verify_masks(instance.apply(model.to(target), context))


def adversarial_train(
    model: nn.Module,
    data: Any,
    threat: ThreatModel | None = None,
    *,
    epochs: int,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    loss: RobustLoss | str = RobustLoss.PGD_AT,
    trades_beta: float = 6.0,
    eps_warmup_epochs: int = 0,
    device: torch.device | str | None = None,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
) -> nn.Module:
    """Adversarially train ``model`` in place: PGD-AT (Madry et al.) or TRADES, SGD with momentum and a
    cosine learning-rate schedule, the attack crafted against ``threat`` on every batch.

    Use it to make a plain model robust before :func:`prune` (pruning a model that was never trained
    adversarially gives a model no gate should pass), and to fine-tune a pruned model: train
    ``result.model`` (its masks stay frozen) and then call ``result.strip()``.

    :param model: a classifier taking inputs in [0, 1] (normalization inside the model).
    :param data: the training batches ``(x, y)``: an :class:`nncf.Dataset`, a DataLoader or any
        iterable (iterated once per epoch; a one-shot iterator is kept in memory).
    :param threat: the L-inf threat model; default :data:`DEFAULT_THREAT`.
    :param loss: ``"pgd_at"`` or ``"trades"`` (with ``trades_beta``).
    :param eps_warmup_epochs: ramp eps up linearly over the first epochs.
    :param on_epoch_end: ``callback(epoch, metrics)`` after every epoch, epochs counted from 1;
        ``metrics`` has ``loss``, ``lr`` and, for PGD-AT, ``train_adv_acc``.
    :returns: ``model``, trained.
    """
    from robprune_deploy.training import TrainingPlan
    from robprune_deploy.training import adversarial_train as train

    if epochs < 0 or lr <= 0:
        raise RecipeError(f"adversarial_train: epochs must be >= 0 and lr > 0, got epochs={epochs}, lr={lr}")
    batches = _batches(data)
    target = torch.device(device) if device is not None else next(model.parameters()).device
    _ensure_threads(model, lambda: next(iter(batches))[0])
    plan = TrainingPlan(epochs, lr, momentum, weight_decay, RobustLoss(loss), trades_beta, eps_warmup_epochs)
    callback = None if on_epoch_end is None else (lambda epoch, metrics: on_epoch_end(epoch + 1, metrics))
    return train(
        model,
        plan,
        threat or DEFAULT_THREAT,
        lambda epoch: batches,
        device=target,
        seed=seed,
        on_epoch_end=callback,
        show_progress=show_progress,
    )


def gate_onnx(
    model: str | os.PathLike[str],
    *,
    recipe: Recipe | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    baseline: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    precision: Precision | None = None,
    show_progress: bool = True,
) -> GateVerdict:
    """The release gate of ``robprune gate``, from Python: measure ``model`` under each runtime of
    ``evaluate.runtimes`` (onnxruntime by default) and check the recipe's ``gate`` thresholds.

    The figures are measured on the recipe's data (its ``data`` section; default the digits test
    split) over the fixed ``evaluate.num_examples`` subset with the recipe's ``evaluate.attacks``
    protocol (AutoAttack by default, crafted on a torch twin of the graph and classified by
    onnxruntime), the attack-failure indicators, parity, and the drops and speed-up against
    ``baseline``.

    :param model: an ONNX file, or an MLflow ``models:/`` / ``runs:/`` URI.
    :param recipe: a :class:`~robprune_deploy.recipe.Recipe`, a mapping of recipe sections, or a
        recipe file; default: every field's default.
    :param overrides: ``"key.path=value"`` overrides, as ``--set``.
    :param baseline: the reference ONNX model for drops and speed-up (sets ``gate.baseline``).
    :param report: a folder for ``gate.json``, ``gate.md`` and ``gate.png``.
    :param precision: what ``model`` is, ``fp32`` or ``int8`` (as ``--precision``; default the
        recipe's ``gate.precision``): declared, never guessed from the graph.
    :returns: the verdict: ``passed``, ``failures`` (names of the failed checks) and ``checks``;
        ``per_runtime`` holds each runtime's own verdict.
    """
    from robprune_deploy.gate.gating import baseline_path, declared, evaluate_gate, write_gate_report
    from robprune_deploy.pipeline.run_data import gate_run_data
    from robprune_deploy.recipe import Recipe, apply_overrides, load_recipe, recipe_to_dict, validate_recipe
    from robprune_deploy.tracking.models import resolve_onnx

    if isinstance(recipe, (str, os.PathLike)):
        resolved = load_recipe(Path(recipe), overrides)
    else:
        document = recipe_to_dict(recipe) if isinstance(recipe, Recipe) else dict(recipe or {})
        resolved = validate_recipe(apply_overrides(document, overrides))
    if baseline is not None:
        resolved.gate.baseline = str(baseline)
    if precision is not None:
        resolved = declared(resolved, precision)
    path = resolve_onnx(str(model), resolved.tracking.tracking_uri)
    verdict = evaluate_gate(
        resolved,
        path,
        gate_run_data(resolved, show_progress=show_progress).evaluation_data(),
        baseline_file=baseline_path(resolved, path, str(model)),
        show_progress=show_progress,
    )
    verdict.details["model"] = str(model)
    if report is not None:
        write_gate_report(verdict, Path(report))
    return verdict
