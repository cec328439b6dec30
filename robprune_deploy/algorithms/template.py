"""The plugin template: a compression algorithm is a typed config and a search.

An algorithm is a class registered in :data:`robprune_deploy.ALGORITHMS` (directly or through the
``robprune_deploy.algorithms`` entry-point group). The pipeline validates the recipe's
``compression.config`` against :attr:`CompressionAlgorithm.Config`, builds the algorithm, and calls
:meth:`CompressionAlgorithm.apply` with a :class:`PruningContext`.

``apply`` is the same for every algorithm, so it lives here: it counts the dense model, resolves the
ignored scope (and, for channel granularity, builds the coupled channel groups), asks the plugin's
:meth:`CompressionAlgorithm.search` for its decision (masks, or the channels each group keeps),
attaches the masks and builds the :class:`~robprune_deploy.algorithms.result.PruningResult`. A plugin
implements the search only, as a Torch-Pruning ``Importance`` implements only the scoring.
"""

from __future__ import annotations

import logging
from abc import ABC
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.algorithms.result import PruningResult
from robprune_deploy.attacks import RobustLoss, ThreatModel
from robprune_deploy.errors import PruningError
from robprune_deploy.masking import apply_masks
from robprune_deploy.surgery import ChannelGroups, count_model, ignored_layer_names, prunable_layers


class AlgorithmConfig(BaseModel):
    """Base of every algorithm's options (the recipe's ``compression.config``).

    Floats must be finite (NaN and inf are refused), as in the rest of the recipe; give counts an
    upper bound (``le=``) a real run can meet.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


EpochCallback = Callable[[str, int, dict[str, float]], None]
"""``callback(stage, epoch, metrics)``, called once per epoch of an algorithm's own training loop."""


@dataclass
class PruningContext:
    """Everything an algorithm may use besides the model.

    :param train_data: iterable of ``(x, y)`` batches, inputs in [0, 1]; re-iterable once per epoch.
        Use :meth:`epoch_batches` to get the batches of one epoch (deterministic and, under
        ``torchrun``, sharded across ranks).
    :param ratio: target sparsity (unstructured) or reduction of MACs/params (channel).
    :param threat: the L-inf threat model used to craft training attacks.
    :param loss: robust loss for mask search (PGD-AT, TRADES or MART).
    :param example_inputs: one batch of inputs, for tracing and counting.
    :param ignored_scope: an :class:`nncf.IgnoredScope` or ``None``.
    :param on_epoch_end: metrics sink (MLflow in the pipeline).
    :param checkpoint_dir: where the algorithm may keep per-epoch state for ``--resume``.
    :param resume: continue the algorithm's own training loop from its state in ``checkpoint_dir``
        (``robprune run --resume`` after a crash); algorithms without such a loop ignore it.
    """

    train_data: Iterable[tuple[torch.Tensor, torch.Tensor]]
    ratio: float
    threat: ThreatModel
    example_inputs: torch.Tensor
    loss: RobustLoss = RobustLoss.PGD_AT
    trades_beta: float = 6.0
    mart_beta: float = 6.0
    ignored_scope: Any | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    show_progress: bool = False
    on_epoch_end: EpochCallback | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    epoch_loader: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def epoch_batches(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches of ``epoch``, on :attr:`device`.

        :raises NumericalError: for a batch holding NaN or inf (naming the prune stage and epoch).
        """
        from robprune_deploy.training.trainer import check_batch

        source = self.epoch_loader(epoch) if self.epoch_loader is not None else self.train_data
        for x, y in source:
            check_batch(x, "prune", epoch)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.on_epoch_end is not None:
            self.on_epoch_end(stage, epoch, metrics)


ConfigT = TypeVar("ConfigT", bound=AlgorithmConfig)
"""The config model of one algorithm (``CompressionAlgorithm[MyConfig]`` types ``self.config``)."""

logger = logging.getLogger(__name__)


@dataclass
class SearchScope:
    """What :meth:`CompressionAlgorithm.apply` prepared for the search.

    :param model: the model to prune, on ``context.device`` (masks are attached to it in place).
    :param context: the run's :class:`PruningContext`.
    :param example_inputs: ``context.example_inputs`` on ``context.device``.
    :param ignored: qualified names of the layers the ignored scope keeps dense.
    :param groups: for ``channel`` granularity, the coupled channel groups outside the ignored scope
        (groups whose removal would change the function are already left out); ``None`` otherwise.
    """

    model: nn.Module
    context: PruningContext
    example_inputs: torch.Tensor
    ignored: frozenset[str]
    groups: ChannelGroups | None = None

    def layers(self) -> dict[str, nn.Module]:
        """The prunable layers (Conv2d, Linear) outside the ignored scope, by qualified name."""
        return {name: layer for name, layer in prunable_layers(self.model).items() if name not in self.ignored}

    def channel_groups(self) -> ChannelGroups:
        """:attr:`groups`; a clear error when the algorithm was configured for another granularity."""
        if self.groups is None:
            raise PruningError("this search needs channel groups: configure granularity: channel")
        return self.groups


@dataclass
class Decision:
    """What a search decided; ``True`` keeps an entry.

    :param masks: ``unstructured``: ``{parameter name: bool mask of the parameter's shape}``.
    :param channel_keep: ``channel``: ``{group name: bool mask over the group's channels}``.
    :param extra: the algorithm's own measurements, returned in the result's statistics.
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    channel_keep: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CompressionAlgorithm(ABC, Generic[ConfigT]):
    """Base class of robust pruning algorithms: the template every plugin fills in.

    A subclass names its config model as the type argument (``class Mine(CompressionAlgorithm[MyConfig])``,
    which sets :attr:`Config` and types ``self.config``), sets :attr:`name` (its registry name),
    :attr:`granularities` (what it supports; the first is the default) and implements :meth:`search`.
    :meth:`apply` does the rest. An algorithm that needs full control may override :meth:`apply`
    instead; it must then return a result as :meth:`apply` documents.
    """

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    granularities: ClassVar[tuple[Granularity, ...]] = (Granularity.UNSTRUCTURED,)
    description: ClassVar[str] = ""
    name: ClassVar[str] = ""
    """The registry name written into results (the entry-point name); default: the class name, lower case."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            return
        # ``CompressionAlgorithm[MyConfig]`` (or a generic subclass of it, parametrized) names the config.
        for base in getattr(cls, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, CompressionAlgorithm):
                chosen = [a for a in get_args(base) if isinstance(a, type) and issubclass(a, AlgorithmConfig)]
                if chosen:
                    cls.Config = chosen[0]
                    return

    def __init__(self, config: ConfigT | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            raise TypeError(f"{self.registry_name()} takes a {self.Config.__name__}, not a {type(config).__name__}")
        self.config: ConfigT = config if config is not None else cast(ConfigT, self.Config())

    @classmethod
    def registry_name(cls) -> str:
        return cls.name or cls.__name__.lower()

    @property
    def granularity(self) -> Granularity:
        """The granularity of this configured instance (options may choose among :attr:`granularities`)."""
        chosen = getattr(self.config, "granularity", None)
        return Granularity(chosen) if chosen is not None else self.granularities[0]

    def apply(self, model: nn.Module, context: PruningContext) -> PruningResult:
        """Prune ``model`` in place: the search's masks are attached as frozen masks.

        Counts the dense model, resolves the ignored scope, builds the channel groups (``channel``
        granularity; groups left unpruned are warned about and listed in ``extra.skipped_groups``),
        runs :meth:`search`, attaches its masks and builds the result; :meth:`finish` may then add
        measurements that need the result.

        :returns: a result whose ``model`` carries frozen masks (see :mod:`robprune_deploy.masking`).
        """
        name = self.registry_name()
        model = model.to(context.device)
        example = context.example_inputs.to(context.device)
        dense = count_model(model, example)
        groups = None
        if self.granularity is Granularity.CHANNEL:
            groups = ChannelGroups(model, example, context.ignored_scope)
            for group, reason in groups.skipped.items():
                logger.warning("%s: group %s left unpruned: %s", name, group, reason)
        ignored = frozenset(ignored_layer_names(model, context.ignored_scope))
        decision = self.search(SearchScope(model, context, example, ignored, groups))
        extra = dict(decision.extra)
        keep: dict[str, torch.Tensor] | None = None
        if groups is not None:
            if decision.channel_keep is None:
                raise PruningError(f"{name}: a channel search must decide channel_keep (the channels each group keeps)")
            keep = {group: mask.cpu() for group, mask in decision.channel_keep.items()}
            apply_masks(model, groups.parameter_masks(keep))
            extra.setdefault("skipped_groups", dict(groups.skipped))
        else:
            apply_masks(model, {param: mask.to(context.device) for param, mask in decision.masks.items()})
        result = PruningResult(
            model,
            algorithm=name,
            granularity=self.granularity,
            ratio=context.ratio,
            example_inputs=example,
            dense_count=dense,
            channel_keep=keep,
            ignored_scope=context.ignored_scope,
            extra=extra,
        )
        self.finish(result)
        return result

    def search(self, scope: SearchScope) -> Decision:
        """Decide what to prune: masks (``unstructured``) or the channels each group keeps (``channel``).

        The only method a plugin must implement (unless it overrides :meth:`apply`). It may train
        (``scope.context.epoch_batches``) and change ``scope.model``'s weights, but leaves the masks
        to :meth:`apply`.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither search nor apply")

    def finish(self, result: PruningResult) -> None:
        """Add measurements that need the built result (its statistics, its final masks) to ``result.extra``.

        Default: nothing.
        """

    def achieved_ratio(self, result: PruningResult) -> float:
        """What ``result`` reached of ``compression.ratio``, in the ratio's own unit.

        The pipeline refuses a result more than ``compression.tolerance`` away from the target
        (:func:`~robprune_deploy.algorithms.verification.verify_result`). Default: the zero fraction
        of the prunable weights (unstructured), or the fraction of channels removed from the
        coupled groups (channel). Override it when the ratio means something else (MACs, params).
        """
        if result.granularity is Granularity.UNSTRUCTURED or not result.channel_keep:
            return result.statistics().sparsity
        kept = sum(int(keep.sum()) for keep in result.channel_keep.values())
        total = sum(keep.numel() for keep in result.channel_keep.values())
        return 1.0 - kept / total if total else 0.0

    def report(self, result: PruningResult, directory: Path) -> list[Path]:
        """Write algorithm-specific plots or tables (PNG, Markdown) into ``directory``.

        The pipeline logs every returned file as an artifact of the prune stage. Default: none.
        """
        return []
