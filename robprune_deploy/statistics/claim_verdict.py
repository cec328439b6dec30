"""One word on a claimed effect: holds, does not hold, or inconclusive.

A paper claims that its method beats a baseline by ``claimed`` (say +1 point of robust accuracy).
Given the interval of the measured difference ``method - baseline`` (``low``, ``high``; a 95%
interval from :func:`~robprune_deploy.statistics.paired_difference`), the rule is, in this order:

1. **inconclusive** when the interval's half-width exceeds ``|claimed|``: its margin of error is
   larger than the effect in question: noise of the claim's own size could have made it.
   (Half, not full, width: an experiment with 80% power for ``claimed`` expects a half-width of
   about 0.7 of it (1.96 of the 2.8 standard errors a detectable effect spans), so a design the
   power calculation calls adequate can decide, while the full width of its interval exceeds the
   claim. A half-width equal to the claim decides.)
2. **does not hold** when the interval lies entirely short of the claim (``high < claimed``): the
   claimed effect is ruled out. This includes an interval above zero but below the claim (the
   method helps, by less than claimed; the reason says so), because the claim is about the size.
3. **holds** when the interval excludes zero on the claim's side (``low > 0``: the method is
   better) and, not ruled out by 2., reaches the claimed effect.
4. **inconclusive** otherwise: the interval holds both 0 and the claimed effect.

A negative ``claimed`` (a claimed loss) mirrors every comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from robprune_deploy.errors import ArgumentError
from robprune_deploy.statistics._checks import finite

Word = Literal["holds", "does not hold", "inconclusive"]
VERDICTS: tuple[Word, ...] = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """The word, and one sentence saying which part of the rule gave it."""

    word: Word
    reason: str

    def __str__(self) -> str:
        return self.word

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def verdict(low: float, high: float, claimed: float) -> Verdict:
    """The verdict on a claimed effect ``claimed`` from the interval ``[low, high]`` of the measured
    difference (same units: fractions). See the module docstring for the rule."""
    low, high, claimed = finite(low, "low"), finite(high, "high"), finite(claimed, "claimed")
    if low > high:
        raise ArgumentError(f"low: the interval's lower end {low} lies above its upper end {high}")
    if claimed == 0:
        raise ArgumentError("claimed: a claim of no effect cannot be told from noise by an interval; give its size")
    sign = 1.0 if claimed > 0 else -1.0
    # in the claim's direction: the claim is +size, the interval [near, far]
    size, near, far = abs(claimed), min(sign * low, sign * high), max(sign * low, sign * high)
    half = (far - near) / 2
    if half > size:
        return Verdict("inconclusive", f"the interval's half-width {half:.4g} exceeds the claimed effect {size:.4g}")
    if far < size:
        detail = "the effect is in the claimed direction but smaller" if near > 0 else "the claimed effect is ruled out"
        return Verdict("does not hold", f"{detail}: the interval ends at {sign * far:+.4g}, short of {claimed:+.4g}")
    if near > 0:
        return Verdict("holds", f"the interval excludes 0 and reaches the claimed {claimed:+.4g}")
    return Verdict("inconclusive", f"the interval holds both 0 and the claimed {claimed:+.4g}")
