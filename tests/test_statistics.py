"""robprune_deploy.statistics against scipy, published figures and simulation: power, the paired
interval over seeds, exact McNemar, Newcombe's interval, the verdict rule and the sweep's choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from robprune_deploy.errors import ArgumentError
from robprune_deploy.statistics import (
    choose_variant,
    detectable_paired_difference,
    detectable_paired_difference_normal,
    exact_mcnemar_p,
    mcnemar_detectable_difference,
    mcnemar_examples_needed,
    newcombe_paired_interval,
    pack_outcomes,
    paired_difference,
    paired_proportions,
    paired_t_power,
    unpack_outcomes,
    verdict,
)

Z_975, Z_80 = 1.959963984540054, 0.8416212335729143  # normal quantiles, to 16 digits

# --- power -----------------------------------------------------------------------------------------


def test_the_normal_closed_form_is_z_alpha_plus_z_power_standard_errors() -> None:
    for n, sd in ((3, 1.0), (5, 0.012), (30, 2.5)):
        assert detectable_paired_difference_normal(n, sd) == pytest.approx(
            (Z_975 + Z_80) * sd / math.sqrt(n), rel=1e-12
        )


def test_the_noncentral_t_answer_matches_the_known_value_and_the_closed_form_for_many_seeds() -> None:
    # one-sample/paired t, two-sided 0.05, 80% power, n = 5: effect size 1.682 sd (G*Power's and
    # statsmodels' TTestPower figure); 3 seeds need 3.26 sd, where the normal form says 1.62
    assert detectable_paired_difference(5, 1.0) == pytest.approx(1.68200, abs=5e-5)
    assert detectable_paired_difference(3, 1.0) == pytest.approx(3.26404, abs=5e-5)
    assert detectable_paired_difference(5, 0.01) == pytest.approx(0.0168200, abs=5e-7)  # scales with sd
    for n in (3, 5, 8, 30):
        assert detectable_paired_difference(n, 1.0) > detectable_paired_difference_normal(n, 1.0)
    # the t distribution tends to the normal: within 0.4% at 400 pairs
    assert detectable_paired_difference(400, 1.0) == pytest.approx(
        detectable_paired_difference_normal(400, 1.0), rel=4e-3
    )


def test_the_detectable_difference_has_the_stated_power_in_simulation() -> None:
    n = 5
    effect = detectable_paired_difference(n, 1.0)
    assert paired_t_power(effect, n, 1.0) == pytest.approx(0.8, abs=1e-9)
    assert paired_t_power(0.0, n, 1.0) == pytest.approx(0.05, abs=1e-12)  # no effect: the test's level
    rng = np.random.default_rng(0)
    x = rng.normal(effect, 1.0, (200_000, n))
    statistic = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    rejected = np.abs(statistic) > stats.t.ppf(0.975, n - 1)
    assert rejected.mean() == pytest.approx(0.8, abs=0.005)  # 200,000 draws: sd 0.0009


def test_two_seeds_still_get_a_finite_answer() -> None:
    # scipy's noncentral t lower tail is NaN at 1 degree of freedom; the upper tail of -T is not
    assert detectable_paired_difference(2, 1.0) == pytest.approx(11.5499, abs=1e-3)


def test_mcnemar_power_round_trips_and_holds_up_against_the_exact_test() -> None:
    rng = np.random.default_rng(1)
    for n, discordance in ((2000, 0.1), (10_000, 0.3)):
        delta = mcnemar_detectable_difference(n, discordance)
        # without the delta^2 term Connor's formula is the normal closed form
        assert delta == pytest.approx((Z_975 + Z_80) * math.sqrt(discordance / n), rel=0.02)
        assert mcnemar_examples_needed(delta, discordance) in (n, n + 1)  # ceil of a float that is n
        # simulated tables, the exact test: the approximation is close, the exact test a little conservative
        counts = rng.multinomial(n, [(discordance + delta) / 2, (discordance - delta) / 2, 1 - discordance], 20_000)
        b, c = counts[:, 0], counts[:, 1]
        p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(b, c), b + c, 0.5))
        assert 0.75 <= (p < 0.05).mean() <= 0.82
    assert mcnemar_examples_needed(0.01, 0.1) == 7847
    assert mcnemar_detectable_difference(10, 0.05) == math.inf  # 10 examples cannot detect anything


def test_power_arguments_are_checked() -> None:
    with pytest.raises(ArgumentError, match=r"^n:"):
        detectable_paired_difference(1, 1.0)
    with pytest.raises(ArgumentError, match=r"^sd:"):
        detectable_paired_difference(5, 0.0)
    with pytest.raises(ArgumentError, match=r"^power:"):
        detectable_paired_difference(5, 1.0, power=1.0)
    with pytest.raises(ArgumentError, match=r"^delta:"):
        mcnemar_examples_needed(0.2, 0.1)


# --- paired difference over seeds ------------------------------------------------------------------


def test_the_paired_interval_is_scipys_paired_t_interval() -> None:
    method = [0.652, 0.667, 0.641, 0.660, 0.655]
    baseline = [0.645, 0.650, 0.644, 0.648, 0.639]
    ours = paired_difference(method, baseline)
    theirs = stats.ttest_rel(method, baseline).confidence_interval(0.95)
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-12)
    assert ours.mean == pytest.approx(np.mean(np.subtract(method, baseline)), abs=1e-15)
    assert ours.se == pytest.approx(stats.sem(np.subtract(method, baseline)), abs=1e-15)
    assert ours.n == 5 and ours.half_width == pytest.approx(stats.t.ppf(0.975, 4) * ours.se)
    ninety = paired_difference(method, baseline, confidence=0.9)
    assert ninety.half_width < ours.half_width
    assert paired_difference(ours.differences).to_dict() == ours.to_dict()  # differences given directly


def test_one_pair_or_unmatched_pairs_are_refused() -> None:
    with pytest.raises(ArgumentError, match="at least 2 pairs"):
        paired_difference([0.6], [0.5])
    with pytest.raises(ArgumentError, match=r"^baseline:"):
        paired_difference([0.6, 0.7], [0.5])
    with pytest.raises(ArgumentError, match=r"^method\[1\]"):
        paired_difference([0.6, float("nan")], [0.5, 0.5])


# --- exact McNemar and Newcombe's interval ---------------------------------------------------------


def test_exact_mcnemar_is_scipys_binomial_test_on_the_discordant_examples() -> None:
    for b, c in ((6, 16), (16, 6), (0, 9), (25, 25), (3, 40), (1, 0), (120, 90)):
        assert exact_mcnemar_p(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12), (b, c)
    assert exact_mcnemar_p(0, 0) == 1.0
    # Cavo et al. (2012) in Fagerland, Lydersen & Laake (2017), chapter 8: 6 vs 16 discordant, p = 0.052
    assert exact_mcnemar_p(6, 16) == pytest.approx(0.0525, abs=5e-5)


def test_newcombe_interval_matches_the_published_example() -> None:
    # Complete response before and after consolidation therapy (Cavo et al. 2012), the worked example
    # of Newcombe's square-and-add interval in Fagerland, Lydersen & Laake (2017), chapter 8:
    # estimate -0.0621, 95% CI -0.1186 to -0.0046
    low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def _newcombe_from_scipy_wilson(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Method 10 written out from Newcombe (1998), eq. for L and U, on scipy's Wilson intervals."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = stats.binomtest(a + b, n).proportion_ci(0.95, method="wilson")
    l2, u2 = stats.binomtest(a + c, n).proportion_ci(0.95, method="wilson")
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    correction = (cross - n / 2 if cross > n / 2 else min(cross, 0)) / math.sqrt(margins) if margins else 0.0
    lower = (p1 - l1) ** 2 - 2 * correction * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    upper = (p2 - l2) ** 2 - 2 * correction * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2
    return p1 - p2 - math.sqrt(lower), p1 - p2 + math.sqrt(upper)


def test_newcombe_interval_agrees_with_an_independent_construction() -> None:
    tables = [(59, 6, 16, 80), (1, 1, 7, 12), (14, 5, 0, 22), (600, 40, 25, 335), (0, 3, 1, 0), (5, 0, 0, 5)]
    rng = np.random.default_rng(2)
    tables += [
        tuple(int(v) for v in rng.multinomial(int(rng.integers(5, 3000)), rng.dirichlet([1, 1, 1, 1])))
        for _ in range(30)
    ]
    for table in tables:
        assert newcombe_paired_interval(*table) == pytest.approx(_newcombe_from_scipy_wilson(*table), abs=1e-12), table


def test_no_discordant_example_still_gives_an_honest_interval() -> None:
    low, high = newcombe_paired_interval(300, 0, 0, 100)  # identical outcomes: difference 0, not certainty
    assert low < 0 < high and high - low > 0.005
    low, high = newcombe_paired_interval(0, 10, 0, 0)  # the candidate right everywhere, the baseline nowhere
    assert 0.5 < low < high <= 1.0


def test_paired_proportions_builds_the_table_from_per_example_outcomes() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.random(2000) < 0.65
    candidate = baseline.copy()
    flips = rng.choice(2000, 120, replace=False)
    candidate[flips[:80]] = True  # 80 examples may become right
    candidate[flips[80:]] = False  # 40 may become wrong
    result = paired_proportions(candidate, baseline)
    assert result.n == 2000
    assert result.candidate_only == int((candidate & ~baseline).sum())
    assert result.baseline_only == int((~candidate & baseline).sum())
    assert result.difference == pytest.approx(candidate.mean() - baseline.mean(), abs=1e-15)
    assert result.p_value == exact_mcnemar_p(result.candidate_only, result.baseline_only)
    assert (result.low, result.high) == newcombe_paired_interval(
        result.both, result.candidate_only, result.baseline_only, result.neither
    )
    drop, low, high = result.drop
    assert (drop, low, high) == (-result.difference, -result.high, -result.low)
    assert result.discordance == pytest.approx((result.candidate_only + result.baseline_only) / 2000)
    as_ints = paired_proportions(candidate.astype(int), baseline.astype(np.uint8))
    assert as_ints == result
    with pytest.raises(ArgumentError, match=r"^baseline:"):
        paired_proportions(candidate, baseline[:10])
    with pytest.raises(ArgumentError, match=r"^candidate:"):
        paired_proportions(np.full(2000, 0.5), baseline)


# --- the verdict -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "claimed", "word"),
    [
        (0.002, 0.018, 0.01, "holds"),  # excludes 0, reaches the claim, half-width 0.008
        (-0.012, -0.002, 0.01, "does not hold"),  # the method is worse
        (0.001, 0.008, 0.01, "does not hold"),  # better, but by less than claimed
        (-0.008, 0.008, 0.01, "does not hold"),  # narrow around 0: the claimed point is ruled out
        (-0.004, 0.015, 0.01, "inconclusive"),  # holds both 0 and the claim
        (0.001, 0.031, 0.01, "inconclusive"),  # above 0 but half-width 0.015 > the claim
        (-0.03, 0.0, 0.01, "inconclusive"),  # below the claim but too wide to rule it out
        (0.0, 2.0, 1.0, "inconclusive"),  # half-width exactly the claim decides, but 0 is inside
        (0.25, 2.25, 1.0, "holds"),  # half-width exactly the claim, 0 excluded
        (-0.018, -0.002, -0.01, "holds"),  # a claimed loss, mirrored
        (0.001, 0.01, -0.01, "does not hold"),
    ],
)
def test_verdict_rule(low: float, high: float, claimed: float, word: str) -> None:
    result = verdict(low, high, claimed)
    assert result.word == word and str(result) == word and result.reason


def test_verdict_says_why_and_refuses_nonsense() -> None:
    assert "smaller" in verdict(0.001, 0.008, 0.01).reason
    assert "half-width" in verdict(0.001, 0.031, 0.01).reason
    with pytest.raises(ArgumentError, match=r"^claimed:"):
        verdict(-0.01, 0.01, 0.0)
    with pytest.raises(ArgumentError, match=r"^low:"):
        verdict(0.02, 0.01, 0.01)


def test_a_powered_design_usually_decides() -> None:
    # the rule and the power calculation fit: with sd 1 point and the seeds that detect 1 point, the
    # expected half-width is below 1 point (about 0.7 of it), so a typical interval can decide
    seeds = next(n for n in range(2, 50) if detectable_paired_difference(n, 0.01) <= 0.01)
    half = stats.t.ppf(0.975, seeds - 1) * 0.01 / math.sqrt(seeds)
    assert seeds == 10 and 0.6 < half / 0.01 < 0.8


# --- the sweep's choice ----------------------------------------------------------------------------


def test_the_default_stays_unless_beaten_by_more_than_one_paired_standard_error() -> None:
    default = {0: 0.680, 1: 0.670, 2: 0.690}
    steady = {0: 0.686, 1: 0.677, 2: 0.695}  # +0.006 +0.007 +0.005: small but consistent
    noisy = {0: 0.720, 1: 0.640, 2: 0.700}  # +0.04 -0.03 +0.01: larger mean gain, larger spread
    choice = choose_variant({"default": default, "steady": steady, "noisy": noisy}, "default")
    assert choice.chosen == "steady"
    assert choice.gains["steady"].mean == pytest.approx(0.006) and choice.gains["steady"].se == pytest.approx(
        0.000577, abs=1e-6
    )
    assert 0 < choice.gains["noisy"].mean <= choice.gains["noisy"].se
    kept = choose_variant({"default": default, "noisy": noisy}, "default")
    assert kept.chosen == "default" and kept.reason.startswith("default kept")


def test_one_seed_never_changes_the_default() -> None:
    # +4 points on one seed would have beaten the old one-binomial-SE rule (1.5 points on 1,000 images)
    choice = choose_variant({"v0": {0: 0.68}, "v1": {0: 0.72}}, "v0")
    assert choice.chosen == "v0" and "1 seed(s)" in choice.skipped["v1"] and not choice.gains
    # seeds count only where both ran: the variant's seed 2 has no default to pair with
    choice = choose_variant({"v0": {0: 0.68, 1: 0.69}, "v1": {0: 0.72, 2: 0.75}}, "v0")
    assert choice.chosen == "v0"


def test_the_largest_winning_gain_is_chosen_and_exclusions_never_are() -> None:
    scores = {
        "v0": {0: 0.60, 1: 0.62},
        "v1": {0: 0.62, 1: 0.64},  # +0.02 on both
        "v2": {0: 0.65, 1: 0.67},  # +0.05 on both, but switches the method off
        "v3": {0: 0.63, 1: 0.66},  # +0.03 +0.04
    }
    choice = choose_variant(scores, "v0", excluded={"v2": "gamma 0: no sharpness ascent"})
    assert choice.chosen == "v3"
    assert choice.skipped == {"v2": "gamma 0: no sharpness ascent"}
    with pytest.raises(ArgumentError, match=r"^default:"):
        choose_variant(scores, "v9")
    with pytest.raises(ArgumentError, match=r"^min_seeds:"):
        choose_variant(scores, "v0", min_seeds=1)


# --- stored outcomes -------------------------------------------------------------------------------


def test_outcomes_round_trip_compactly() -> None:
    outcomes = np.random.default_rng(4).random(10_000) < 0.6
    text = pack_outcomes(outcomes)
    assert len(text) == 1668
    assert np.array_equal(unpack_outcomes(text, 10_000), outcomes)
    assert np.array_equal(unpack_outcomes(pack_outcomes(outcomes[:13]), 13), outcomes[:13])
    with pytest.raises(ArgumentError, match="cannot hold exactly"):
        unpack_outcomes(text, 20_000)
    with pytest.raises(ArgumentError, match="not base64"):
        unpack_outcomes("not base64!", 8)
    with pytest.raises(ArgumentError, match="boolean"):
        pack_outcomes(outcomes.astype(float))
