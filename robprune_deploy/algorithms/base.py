"""What a compression algorithm is: a config model, its granularities, and ``apply``.

An algorithm is a class registered in :data:`robprune_deploy.ALGORITHMS` (directly or through the
``robprune_deploy.algorithms`` entry-point group). The pipeline validates the recipe's
``compression.config`` against :attr:`CompressionAlgorithm.Config`, builds the algorithm, and calls
:meth:`CompressionAlgorithm.apply` with a :class:`PruningContext`; the algorithm returns a
:class:`~robprune_deploy.algorithms.result.PruningResult` whose model carries frozen masks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from robprune_deploy.algorithms.granularity import Granularity
from robprune_deploy.algorithms.result import PruningResult
from robprune_deploy.attacks import RobustLoss, ThreatModel


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


class CompressionAlgorithm(ABC):
    """Base class of robust pruning algorithms.

    Subclasses set :attr:`Config` (a pydantic model of their options), :attr:`granularities`
    (what they support; the first is the default), and implement :meth:`apply`.
    """

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    granularities: ClassVar[tuple[Granularity, ...]] = (Granularity.UNSTRUCTURED,)
    description: ClassVar[str] = ""

    def __init__(self, config: AlgorithmConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @property
    def granularity(self) -> Granularity:
        """The granularity of this configured instance (options may choose among :attr:`granularities`)."""
        chosen = getattr(self.config, "granularity", None)
        return Granularity(chosen) if chosen is not None else self.granularities[0]

    @abstractmethod
    def apply(self, model: nn.Module, context: PruningContext) -> PruningResult:
        """Search the masks of ``model`` (modified in place or copied, as documented by the algorithm).

        :returns: a result whose ``model`` carries frozen masks (see :mod:`robprune_deploy.masking`).
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
