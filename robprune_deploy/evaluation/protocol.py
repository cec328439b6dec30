"""The evaluation protocol: how any deployable artifact is attacked and measured.

One value holds every setting an evaluation takes (threat, attacks and their budgets, the Square
run of the PGD protocol, the security curve, the attack-failure indicators, the subset seed and the
batch size), so the pipeline, the gate and the Python API measure an artifact the same way.
The gate builds it from the recipe in one place (:func:`robprune_deploy.gate.measure.protocol_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from robprune_deploy.attacks import ThreatModel
from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.ensemble import ENSEMBLES, EnsembleBudget
from robprune_deploy.evaluation.threat_evaluation import CorruptionPlan, ThreatPlan

ATTACK_PROTOCOLS = ("pgd", *ENSEMBLES)


@dataclass(frozen=True)
class EvaluationProtocol:
    """How an artifact is measured.

    :param threat: the threat model (eps; PGD steps and step size); ``None``: clean accuracy and parity only.
    :param attacks: ``pgd`` (PGD plus an independent Square run), ``autoattack-fast`` or ``autoattack``.
    :param budget: the ensemble members' budgets; its ``apgd_steps`` are the indicators' APGD steps.
    :param square_queries: ``pgd`` protocol: Square's query budget (0 skips it) on the first
        ``square_examples`` examples.
    :param ensemble_examples: the ensemble attacks the first this many examples (``None``: all), so
        that PGD can cover a whole test split while the far costlier ensemble takes a part of it.
    :param curve_steps: FMN steps for the security curve on the first ``curve_examples`` (0: no curve).
    :param indicator_examples: correctly classified examples the failure indicators use (0: none).
    :param not_measured: figures this protocol leaves out on purpose, each with the reason a check
        that needs it shows.
    :param threats: more threat models, each measured on its own (figure ``threat:<label>``).
    :param corruptions: the common-corruption cells (figure ``corruption_acc``); ``None``: none.
    """

    threat: ThreatModel | None
    attacks: str = "pgd"
    budget: EnsembleBudget = field(default_factory=EnsembleBudget)
    square_queries: int = 0
    square_p_init: float = 0.8
    square_examples: int | None = None
    ensemble_examples: int | None = None
    seed: int = 0
    curve_steps: int = 0
    curve_examples: int | None = None
    indicator_examples: int = 0
    indicator_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    batch_size: int = 256
    not_measured: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    threats: tuple[ThreatPlan, ...] = ()
    corruptions: CorruptionPlan | None = None

    def __post_init__(self) -> None:
        if self.attacks not in ATTACK_PROTOCOLS:
            raise ArgumentError(
                f"evaluation protocol: attacks must be one of {', '.join(ATTACK_PROTOCOLS)}, got {self.attacks!r}"
            )

    @property
    def ensemble(self) -> bool:
        return self.attacks != "pgd"

    def without_indicators(self) -> EvaluationProtocol:
        """The protocol of a reference model: its accuracies and curve, not the indicators."""
        return replace(self, indicator_examples=0)
