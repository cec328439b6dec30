"""A threat model to evaluate against: a norm, a radius and the attacks that probe it.

One :class:`ThreatDescription` describes one row of a robustness verdict ("linf-0.031",
"l2-0.5"): the ball of radius ``eps`` in ``norm`` around each input in [0, 1], attacked by the
listed attacks, the robust accuracy being the per-example worst case over them (AutoAttack's
protocol). The attacks are AutoAttack's members in their versions for that norm (APGD-CE, APGD-T,
FAB-T, Square; Croce & Hein 2020, fra31/auto-attack) and FMN (Pintor et al. 2021), whose
minimum-norm distances give the security curve of the same norm.

Construction validates every field and names the offending one (``ThreatDescription.eps: ...``);
:meth:`ThreatDescription.from_mapping` does the same for a mapping read from a file, naming its
location (``evaluate.threats[1].eps: ...``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from robprune_deploy.attacks.norms import NORMS, Norm, check_norm
from robprune_deploy.errors import ArgumentError, control_character, printable


class ThreatFieldError(ArgumentError):
    """One field of a threat refused: ``field`` names it, ``problem`` says why.

    The message is ``"<field>: <problem>"``; a schema that reports the field's location itself (the
    recipe's ``evaluate.threats[1].eps``) shows ``problem`` alone.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square", "fmn")
"""Every attack a threat may list, each available in L-inf and in L2."""
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
"""AutoAttack's standard ensemble, the same members for both norms."""
LINF_MAX_EPS = 1.0
"""Beyond this radius an L-inf ball contains the whole [0, 1] box."""


@dataclass(frozen=True)
class ThreatDescription:
    """The ball of radius ``eps`` in ``norm`` around each input, and the attacks that search it.

    :param norm: ``linf`` or ``l2``.
    :param eps: the radius, in the units of inputs scaled to [0, 1] (``8/255`` for L-inf, ``0.5``
        for L2 are the usual CIFAR-10 figures); above 0, at most 1 in L-inf.
    :param attacks: attack names from :data:`ATTACKS`, run in this order, without repeats.
    :param name: the verdict row's label (default ``"<norm>-<eps>"``, e.g. ``l2-0.5``).
    """

    norm: Norm
    eps: float
    attacks: tuple[str, ...] = STANDARD_ATTACKS
    name: str | None = None

    def __post_init__(self) -> None:
        where = "ThreatDescription"
        object.__setattr__(self, "norm", check_norm(self.norm, f"{where}.norm"))
        object.__setattr__(self, "eps", check_eps(self.eps, self.norm, f"{where}.eps"))
        object.__setattr__(self, "attacks", check_attacks(self.attacks, f"{where}.attacks"))
        if self.name is not None:
            check_name(self.name, f"{where}.name")

    @property
    def label(self) -> str:
        """The row's name: ``name`` or ``"<norm>-<eps>"``."""
        return self.name if self.name is not None else f"{self.norm}-{self.eps:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.label, "norm": self.norm, "eps": self.eps, "attacks": list(self.attacks)}

    @classmethod
    def from_mapping(cls, data: object, where: str = "threat") -> ThreatDescription:
        """A threat from a mapping (a recipe's entry); errors name ``where`` and the field.

        ``norm`` and ``eps`` are required; ``attacks`` defaults to :data:`STANDARD_ATTACKS`.
        """
        if not isinstance(data, Mapping):
            raise ArgumentError(f"{where}: must be a mapping with norm, eps and attacks, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ArgumentError(f"{where}.{printable(str(key))}: unknown field; known: {', '.join(sorted(known))}")
        for key in ("norm", "eps"):
            if key not in data:
                raise ArgumentError(f"{where}.{key}: required")
        norm = check_norm(data["norm"], f"{where}.norm")
        attacks = data.get("attacks", STANDARD_ATTACKS)
        name = data.get("name")
        if name is not None:
            check_name(name, f"{where}.name")
        return cls(
            norm,
            check_eps(data["eps"], norm, f"{where}.eps"),
            check_attacks(attacks, f"{where}.attacks"),
            name,
        )


def check_threats(threats: Sequence[ThreatDescription], where: str = "threats") -> tuple[ThreatDescription, ...]:
    """``threats`` as a tuple, refusing two with the same label (their verdict rows would collide)."""
    labels: dict[str, int] = {}
    for i, threat in enumerate(threats):
        if not isinstance(threat, ThreatDescription):
            raise ArgumentError(f"{where}[{i}]: must be a ThreatDescription, got {type(threat).__name__}")
        if threat.label in labels:
            raise ArgumentError(
                f"{where}[{i}]: the name {threat.label!r} is already used by {where}[{labels[threat.label]}]"
            )
        labels[threat.label] = i
    return tuple(threats)


def check_eps(eps: object, norm: Norm, field: str = "eps") -> float:
    """``eps`` as a float if it is a radius of ``norm`` on inputs in [0, 1]; else :class:`ThreatFieldError`."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ThreatFieldError(field, f"must be a number, got {eps!r}")
    value = float(eps)
    # NaN fails every comparison, so it is caught here too
    if not (math.isfinite(value) and value > 0):
        raise ThreatFieldError(field, f"must be a finite number above 0, got {eps!r}")
    if norm == "linf" and value > LINF_MAX_EPS:
        raise ThreatFieldError(field, f"an L-inf radius is at most {LINF_MAX_EPS:g} on inputs in [0, 1], got {eps!r}")
    return value


def check_attacks(attacks: object, field: str = "attacks") -> tuple[str, ...]:
    """``attacks`` as a tuple of known attack names without repeats; else :class:`ThreatFieldError`."""
    if isinstance(attacks, str) or not isinstance(attacks, Sequence):
        raise ThreatFieldError(field, f"must be a list of attack names ({', '.join(ATTACKS)}), got {attacks!r}")
    if not attacks:
        raise ThreatFieldError(field, f"must name at least one attack ({', '.join(ATTACKS)})")
    seen: list[str] = []
    for i, attack in enumerate(attacks):
        if attack not in ATTACKS:
            raise ThreatFieldError(f"{field}[{i}]", f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
        if attack in seen:
            raise ThreatFieldError(f"{field}[{i}]", f"{attack!r} is listed twice")
        seen.append(attack)
    return tuple(seen)


def check_name(name: object, field: str = "name") -> str:
    """``name`` if it can label a verdict row (non-empty, no control character); else :class:`ThreatFieldError`."""
    if not isinstance(name, str) or not name.strip():
        raise ThreatFieldError(field, f"must be a non-empty string, got {name!r}")
    bad = control_character(name)
    if bad is not None:
        raise ThreatFieldError(field, f"must not contain the control character {bad!r}")
    return name


__all__ = [
    "ATTACKS",
    "LINF_MAX_EPS",
    "NORMS",
    "STANDARD_ATTACKS",
    "ThreatDescription",
    "ThreatFieldError",
    "check_attacks",
    "check_eps",
    "check_name",
    "check_threats",
]
