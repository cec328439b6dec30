"""Power: the smallest difference an experiment can detect, before it runs.

Over seeds (paired t test, two-sided): with ``n`` paired seeds whose differences have standard
deviation ``sd``, the test statistic is noncentral t with ``n - 1`` degrees of freedom and
noncentrality ``d * sqrt(n) / sd``; the detectable difference is the ``d`` at which the test rejects
with probability ``power``. It is found exactly from the noncentral t, not from the normal closed
form ``(z_{1-a/2} + z_power) * sd / sqrt(n)``, which is kept as a cross-check: the two agree for
many seeds and the normal form is far too optimistic for few (3 seeds: 1.6 sd instead of 3.3 sd).

Over examples (McNemar): two models on the same ``n`` test examples disagree in correctness on a
fraction ``psi`` of them (the discordance rate); the accuracy difference ``delta`` is the difference
of the two discordant fractions. Connor (1987, Biometrics 43:207-211) gives the examples needed,
``n = (z_{1-a/2} sqrt(psi) + z_power sqrt(psi - delta^2))^2 / delta^2``; it is solved for ``delta``
to say what a test split of a given size can detect.
"""

from __future__ import annotations

import math

from robprune_deploy.arguments import check_count, check_fraction
from robprune_deploy.errors import ArgumentError
from robprune_deploy.statistics._checks import finite, positive

POWER = 0.8
"""The power every detectable effect in this project is quoted at."""
ALPHA = 0.05
"""Two-sided level of the tests."""


def paired_t_power(effect: float, n: int, sd: float, alpha: float = ALPHA) -> float:
    """Probability that a two-sided paired t test at level ``alpha`` on ``n`` pairs rejects when the
    true mean difference is ``effect`` and the differences have standard deviation ``sd``."""
    from scipy.stats import nct, t

    effect, sd = finite(effect, "effect"), positive(sd, "sd")
    n = check_count(n, "n", low=2)
    alpha = check_fraction(alpha, "alpha", open_interval=True)
    df = n - 1
    critical = float(t.ppf(1 - alpha / 2, df))
    noncentrality = abs(effect) * math.sqrt(n) / sd
    # the lower tail as the upper tail of -T: scipy's nct.cdf returns NaN deep in the lower tail
    return float(nct.sf(critical, df, noncentrality) + nct.sf(critical, df, -noncentrality))


def detectable_paired_difference(n: int, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest mean paired difference that ``n`` paired seeds detect with probability ``power``
    (two-sided paired t test at level ``alpha``), from the noncentral t distribution."""
    from scipy.optimize import brentq

    n, sd = check_count(n, "n", low=2), positive(sd, "sd")
    power = check_fraction(power, "power", open_interval=True)
    alpha = check_fraction(alpha, "alpha", open_interval=True)
    if power <= alpha:
        raise ArgumentError(f"power: must exceed alpha ({alpha}), got {power}")
    high = detectable_paired_difference_normal(n, sd, power, alpha)  # always below the exact answer
    while paired_t_power(high, n, sd, alpha) < power:
        high *= 2
    return float(brentq(lambda d: paired_t_power(d, n, sd, alpha) - power, 0.0, high, xtol=1e-12 * sd))


def detectable_paired_difference_normal(n: int, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The closed form ``(z_{1-a/2} + z_power) * sd / sqrt(n)`` (the variance taken as known)."""
    from scipy.stats import norm

    n, sd = check_count(n, "n", low=1), positive(sd, "sd")
    power = check_fraction(power, "power", open_interval=True)
    alpha = check_fraction(alpha, "alpha", open_interval=True)
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(n))


def _connor_need(delta: float, discordance: float, power: float, alpha: float) -> float:
    """Connor's ``z_{1-a/2} sqrt(psi) + z_power sqrt(psi - delta^2)``: ``n`` examples suffice once
    ``n delta^2`` reaches its square."""
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2) * math.sqrt(discordance) + norm.ppf(power) * math.sqrt(discordance - delta**2))


def _connor_excess(delta: float, n: int, discordance: float, power: float, alpha: float) -> float:
    return n * delta**2 - _connor_need(delta, discordance, power, alpha) ** 2


def mcnemar_detectable_difference(n: int, discordance: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest accuracy difference that ``n`` paired test examples, on which the two models
    disagree in correctness at rate ``discordance``, detect with probability ``power`` (McNemar,
    two-sided ``alpha``; Connor's approximation). ``inf`` when no difference up to the discordance
    rate (the largest one possible) is detectable."""
    from scipy.optimize import brentq

    n = check_count(n, "n", low=1)
    discordance = check_fraction(discordance, "discordance", open_interval=False)
    power = check_fraction(power, "power", open_interval=True)
    alpha = check_fraction(alpha, "alpha", open_interval=True)
    if discordance == 0 or _connor_excess(discordance, n, discordance, power, alpha) < 0:
        return math.inf
    return float(brentq(_connor_excess, 1e-15, discordance, args=(n, discordance, power, alpha), xtol=1e-14))


def mcnemar_examples_needed(delta: float, discordance: float, power: float = POWER, alpha: float = ALPHA) -> int:
    """Paired test examples needed to detect an accuracy difference ``delta`` with probability
    ``power`` when the models disagree in correctness at rate ``discordance`` (Connor 1987)."""
    delta = abs(finite(delta, "delta"))
    discordance = check_fraction(discordance, "discordance", open_interval=False)
    power = check_fraction(power, "power", open_interval=True)
    alpha = check_fraction(alpha, "alpha", open_interval=True)
    if not 0 < delta <= discordance:
        raise ArgumentError(
            f"delta: an accuracy difference must lie in (0, discordance={discordance}], got {delta}"
            " (the difference of the two discordant fractions cannot exceed their sum)"
        )
    return math.ceil(_connor_need(delta, discordance, power, alpha) ** 2 / delta**2)
