"""Attack ensembles on the deployed model: AutoAttack (Croce & Hein 2020) and the plain PGD check.

White-box members (APGD-CE, APGD-T, FAB-T) differentiate the torch twin of the ONNX graph; every
point they return is classified by the onnxruntime session of the shipped file, and only that
verdict counts. The black-box member (Square) queries the session itself. Members run in order on
the examples still robust after the ones before (AutoAttack's protocol), so the robust accuracy
after the last member is the per-example worst case over the ensemble, and broken examples are
never attacked again.

Models with few classes get the losses they admit (:func:`plan_member`): APGD-T's targeted DLR
needs four classes, so on 2- and 3-class models APGD-T runs on the targeted margin loss instead,
against each other class. Every member records the loss it used and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from robprune_deploy.attacks.apgd import ApgdLoss, apgd
from robprune_deploy.attacks.fab import fab_targeted
from robprune_deploy.attacks.losses import DLR_TARGETED_MIN_CLASSES
from robprune_deploy.evaluation.runtimes import Predictor
from robprune_deploy.evaluation.square import square_attack
from robprune_deploy.progress import progress_bar

EnsembleName = Literal["pgd", "autoattack-fast", "autoattack"]
WHITE_BOX = ("apgd-ce", "apgd-t", "fab-t")
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "autoattack-fast": ("apgd-ce", "apgd-t", "square"),
    "autoattack": ("apgd-ce", "apgd-t", "fab-t", "square"),
}
"""The members of each AutoAttack version, in the order they run (``pgd`` is not an ensemble)."""


@dataclass(frozen=True)
class EnsembleBudget:
    """Iterations, target classes and queries of each member.

    ``autoattack`` is the standard version: APGD-CE 100 steps, APGD-T 100 steps x 9 target
    classes, FAB-T 100 steps x 9 targets, Square 5,000 queries. ``autoattack-fast`` keeps the
    100-step APGD runs but targets only the 3 most likely wrong classes and gives Square 1,000
    queries: RobustBench's analyses find the top targets carry almost all of APGD-T's extra
    success.
    """

    apgd_steps: int = 100
    apgd_targets: int = 9
    fab_steps: int = 100
    fab_targets: int = 9
    square_queries: int = 5000
    square_p_init: float = 0.8

    @classmethod
    def of(cls, version: str, **overrides: Any) -> EnsembleBudget:
        """The budget of ``version``; ``None`` overrides keep the version's value."""
        base = cls() if version == "autoattack" else cls(apgd_targets=3, square_queries=1000)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self, members: Sequence[str], num_classes: int | None = None) -> str:
        """The members' budgets, with their losses and the target counts ``num_classes`` allows."""
        return ", ".join(plan_member(m, self, num_classes).describe(self) for m in members)


@dataclass(frozen=True)
class MemberPlan:
    """What one member runs for a model of some number of classes.

    :param loss: the APGD loss (``None`` for FAB-T and Square, which have their own).
    :param targets: target classes (1 for the untargeted members).
    :param label: the loss in words, with the reason when it departs from AutoAttack's.
    """

    name: str
    loss: ApgdLoss | None
    targets: int
    label: str

    def describe(self, budget: EnsembleBudget) -> str:
        if self.name == "square":
            return f"square {budget.square_queries} queries"
        steps = budget.fab_steps if self.name == "fab-t" else budget.apgd_steps
        text = f"{self.name} {steps} steps"
        if self.name != "apgd-ce":
            text += f" x {self.targets} targets"
        return f"{text} ({self.label})" if self.label else text


def plan_member(name: str, budget: EnsembleBudget, num_classes: int | None) -> MemberPlan:
    """Loss and target count of member ``name`` on a model of ``num_classes`` (``None``: as budgeted).

    Targets are the most likely wrong classes, so at most ``num_classes - 1``. APGD-T uses the
    targeted DLR loss from four classes on; below that the targeted margin, which, like DLR and
    unlike cross-entropy, does not saturate (the reference code only warns, then fails).
    """
    wrong = budget.apgd_targets if num_classes is None else min(budget.apgd_targets, num_classes - 1)
    if name == "apgd-ce":
        return MemberPlan(name, "ce", 1, "CE")
    if name == "apgd-t":
        if num_classes is not None and num_classes < DLR_TARGETED_MIN_CLASSES:
            reason = f"targeted DLR needs >= {DLR_TARGETED_MIN_CLASSES} classes"
            return MemberPlan(name, "margin-targeted", wrong, f"margin loss: {reason}")
        return MemberPlan(name, "dlr-targeted", wrong, "targeted DLR")
    if name == "fab-t":
        targets = budget.fab_targets if num_classes is None else min(budget.fab_targets, num_classes - 1)
        return MemberPlan(name, None, targets, "")
    return MemberPlan(name, None, 0, "")


@dataclass
class MemberRecord:
    """One member's part of the ensemble.

    :param accuracy_after: robust accuracy after this member and every member before it.
    :param broken: examples this member broke (confirmed by onnxruntime).
    :param cost: gradient evaluations (white-box) or queries (black-box), per example summed.
    :param transfer_failures: points the twin misclassified that onnxruntime classified correctly.
    :param silent_successes: examples whose path crossed the twin's boundary although the returned
        point is classified correctly by the twin.
    :param loss: the loss the member used (see :class:`MemberPlan`); empty for Square and FAB-T.
    """

    name: str
    attacked: int
    broken: int
    accuracy_after: float
    seconds: float
    cost: int
    transfer_failures: int = 0
    silent_successes: int = 0
    loss: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnsembleResult:
    """Per-example verdicts of one ensemble run on ``n`` examples.

    :param robust: correct on the clean input and not broken by any member.
    :param whitebox_robust: correct and not broken by the white-box members.
    :param apgd_traces: per example, the best-loss curve of its APGD-CE run (``None`` when the
        example was not attacked by APGD-CE), for the incomplete-optimization indicator.
    """

    version: str
    budget: EnsembleBudget
    members: tuple[str, ...]
    robust: np.ndarray
    whitebox_robust: np.ndarray
    x_adv: np.ndarray
    records: list[MemberRecord]
    apgd_traces: dict[int, np.ndarray] = field(default_factory=dict)
    transfer_failed: np.ndarray | None = None
    num_classes: int | None = None

    @property
    def description(self) -> str:
        """The budget actually run: each member's steps, targets and loss for this many classes."""
        return self.budget.describe(self.members, self.num_classes)

    @property
    def accuracy(self) -> float:
        return float(self.robust.mean()) if self.robust.size else 0.0

    @property
    def whitebox_accuracy(self) -> float:
        return float(self.whitebox_robust.mean()) if self.whitebox_robust.size else 0.0

    def record(self, name: str) -> MemberRecord | None:
        return next((r for r in self.records if r.name == name), None)


class _Run:
    """Mutable state of one ensemble run: who is still robust, and the worst input found so far."""

    def __init__(self, twin: nn.Module, session: Predictor, x: torch.Tensor, y: torch.Tensor) -> None:
        self.twin, self.session = twin, session
        self.x, self.y = x, y
        self.labels = y.numpy()
        self.robust = session.predict(x.numpy()).argmax(1) == self.labels
        self.x_adv = x.numpy().copy()
        self.transfer_failed = np.zeros(len(y), dtype=bool)
        with torch.no_grad():
            self.order = twin(x).float().argsort(1, descending=True)  # target classes by clean likelihood

    def survivors(self) -> np.ndarray:
        return np.flatnonzero(self.robust)

    def confirm(self, idx: np.ndarray, points: torch.Tensor, twin_fooled: torch.Tensor) -> tuple[int, int]:
        """Classify ``points`` (for examples ``idx``) with onnxruntime; returns (broken, transfer failures)."""
        candidate = points.detach().cpu().numpy()
        fooled = self.session.predict(candidate).argmax(1) != self.labels[idx]
        self.robust[idx[fooled]] = False
        self.x_adv[idx[fooled]] = candidate[fooled]
        lost = twin_fooled.cpu().numpy() & ~fooled
        self.transfer_failed[idx[lost]] = True
        return int(fooled.sum()), int(lost.sum())

    def silent(self, points: torch.Tensor, y: torch.Tensor, ever: torch.Tensor) -> int:
        """Examples whose path was adversarial on the twin but whose returned point is not."""
        with torch.no_grad():
            still_correct = self.twin(points).argmax(1) == y
        return int((ever & still_correct).sum())


def index_chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    """``idx`` in consecutive pieces of at most ``size`` (the batches an attack runs on)."""
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def run_ensemble(
    version: str,
    twin: nn.Module,
    session: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    budget: EnsembleBudget | None = None,
    batch_size: int = 256,
    seed: int = 0,
    bf16: bool = False,
    show_progress: bool = True,
) -> EnsembleResult:
    """Run the members of ``version`` in order on ``(x, y)`` (inputs in [0, 1], on the CPU).

    :param twin: the differentiable torch twin of the session's graph, in eval mode.
    """
    members = ENSEMBLES[version]
    budget = budget or EnsembleBudget.of(version)
    device = next(iter(twin.parameters()), torch.empty(0)).device
    twin = twin.eval()
    run = _Run(twin, session, x, y)
    records: list[MemberRecord] = []
    traces: dict[int, np.ndarray] = {}
    n = max(len(y), 1)
    whitebox_robust = run.robust.copy()
    classes = int(run.order.shape[1])
    for name in members:
        start, idx = time.perf_counter(), run.survivors()
        before = int(run.robust.sum())
        cost = transfer = silent = 0
        plan = plan_member(name, budget, classes)
        if name == "square":
            cost = _square(run, idx, eps, budget, seed, show_progress)
        else:
            steps = budget.fab_steps if name == "fab-t" else budget.apgd_steps
            total = steps * plan.targets * len(index_chunks(idx, batch_size))
            with progress_bar(name, total, show_progress) as bar:
                for rank in range(plan.targets):
                    for chunk in index_chunks(run.survivors(), batch_size):
                        c, t, s = _whitebox(plan, run, chunk, rank, eps, budget, seed, device, bf16, bar, traces)
                        cost, transfer, silent = cost + c, transfer + t, silent + s
            whitebox_robust = run.robust.copy()
        records.append(
            MemberRecord(
                name,
                len(idx),
                before - int(run.robust.sum()),
                float(run.robust.sum()) / n,
                time.perf_counter() - start,
                cost,
                transfer,
                silent,
                plan.label,
            )
        )
    return EnsembleResult(
        version, budget, members, run.robust, whitebox_robust, run.x_adv, records, traces, run.transfer_failed, classes
    )


def _whitebox(
    plan: MemberPlan,
    run: _Run,
    chunk: np.ndarray,
    rank: int,
    eps: float,
    budget: EnsembleBudget,
    seed: int,
    device: torch.device,
    bf16: bool,
    bar: Any,
    traces: dict[int, np.ndarray],
) -> tuple[int, int, int]:
    """One white-box member on one chunk of survivors, towards the ``rank``-th most likely wrong class."""
    name = plan.name
    x, y = run.x[chunk].to(device), run.y[chunk].to(device)
    generator = torch.Generator().manual_seed(seed + 1000 * rank)
    step: Callable[[], None] = bar.advance
    if name == "fab-t":
        target = run.order[chunk, rank + 1].to(device)
        outcome, distance = fab_targeted(run.twin, x, y, target, steps=budget.fab_steps, on_step=step)
        within = (distance <= eps + 1e-6).cpu()
        fooled = outcome.success.cpu() & within
        points = torch.where(within.view(-1, *[1] * (x.dim() - 1)).to(device), outcome.x_adv, x)
    else:
        loss: ApgdLoss = plan.loss or "ce"
        target = None if name == "apgd-ce" else run.order[chunk, rank + 1].to(device)
        outcome = apgd(
            run.twin,
            x,
            y,
            eps,
            steps=budget.apgd_steps,
            loss=loss,
            target=target,
            generator=generator,
            bf16=bf16,
            on_step=step,
        )
        fooled, points = outcome.success.cpu(), outcome.x_adv
        if name == "apgd-ce":
            for j, i in enumerate(chunk):
                traces[int(i)] = outcome.loss_trace[:, j].cpu().numpy()
    _broken, transfer = run.confirm(chunk, points, fooled)
    silent = run.silent(outcome.x_adv, y, outcome.ever_adversarial)
    return outcome.gradient_evals, transfer, silent


def _square(run: _Run, idx: np.ndarray, eps: float, budget: EnsembleBudget, seed: int, show: bool) -> int:
    if len(idx) == 0:
        return 0
    with progress_bar("square", budget.square_queries, show) as bar:
        result = square_attack(
            run.session.predict,
            run.x[idx].numpy(),
            run.labels[idx],
            eps,
            budget.square_queries,
            budget.square_p_init,
            seed,
            on_step=bar.advance,
        )
    fooled = ~result.robust
    run.robust[idx[fooled]] = False
    run.x_adv[idx[fooled]] = result.x_adv[fooled]
    return int(result.queries.sum())
