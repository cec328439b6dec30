"""The gate's verdict on one model, on one runtime or combined over several."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from robprune_deploy.evaluation import Robustness
from robprune_deploy.evaluation.runtimes import DEFAULT_RUNTIME
from robprune_deploy.gate.checks import CheckResult, Measurements, paired_drops
from robprune_deploy.gate.drop_rule import PairedDrop


@dataclass
class GateVerdict:
    """The verdict on one model: on one runtime, or (``runtimes``) on several, combined.

    A combined verdict's ``checks`` are every runtime's, named ``<runtime>.<check>``; its
    ``candidate``, ``baseline``, ``provider`` and ``robustness`` are the first runtime's.
    """

    passed: bool
    checks: list[CheckResult]
    candidate: Measurements
    baseline: Measurements | None
    provider: str
    details: dict[str, Any] = field(default_factory=dict)
    robustness: dict[str, Robustness] = field(default_factory=dict)
    runtime: str = DEFAULT_RUNTIME
    runtimes: dict[str, GateVerdict] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    @property
    def failure_lines(self) -> list[str]:
        """The failures as a person reads them: an inconclusive drop says so, with the examples that would decide it."""
        return [_failure_line(c) for c in self.checks if not c.passed]

    @property
    def per_runtime(self) -> dict[str, GateVerdict]:
        """Each runtime's own verdict (this one alone when one runtime was gated)."""
        return self.runtimes or {self.runtime: self}

    @cached_property
    def paired_drops(self) -> dict[str, PairedDrop]:
        """Per figure measured example by example on both models, the paired drop from the baseline
        (computed once: the verdict's JSON, the release record and the run's summary all read it)."""
        return paired_drops(self.candidate, self.baseline)

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        """``gate.json``. Each runtime's own verdict (``runtimes``) is written without the details,
        which are the combined verdict's (model, baseline, registration)."""
        data = {
            "passed": self.passed,
            "failures": self.failures,
            "checks": [c.to_dict() for c in self.checks],
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "provider": self.provider,
            "runtime": self.runtime,
            "robustness": {label: r.to_dict() for label, r in self.robustness.items()},
            "paired_drops": {name: drop.to_dict() for name, drop in self.paired_drops.items()},
            **(self.details if details else {}),
        }
        if self.runtimes:
            data["runtimes"] = {name: v.to_dict(details=False) for name, v in self.runtimes.items()}
        return data


def _failure_line(check: CheckResult) -> str:
    if not check.inconclusive:
        return check.name
    if check.examples_needed is None:
        return f"{check.name} (inconclusive)"
    return f"{check.name} (inconclusive: about {check.examples_needed} examples would decide it)"


def combine(verdicts: dict[str, GateVerdict]) -> GateVerdict:
    """One release verdict from each runtime's: passed only when every runtime passed, every check
    named ``<runtime>.<check>``. One runtime's verdict is returned as it is."""
    if len(verdicts) == 1:
        return next(iter(verdicts.values()))
    first = next(iter(verdicts.values()))
    checks = [replace(c, name=f"{name}.{c.name}") for name, v in verdicts.items() for c in v.checks]
    return GateVerdict(
        all(v.passed for v in verdicts.values()), checks, first.candidate, first.baseline, first.provider,
        dict(first.details), dict(first.robustness), first.runtime, dict(verdicts),
    )  # fmt: skip
