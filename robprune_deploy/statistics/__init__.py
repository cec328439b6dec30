"""Telling two methods apart: paired differences over seeds, power, exact McNemar with the Newcombe
interval on per-example outcomes, the verdict on a claimed effect, and the validation sweep's choice.

Every function takes plain numbers or boolean arrays and returns frozen dataclasses, so the
benchmarks and the gate share one implementation. Differences are ``method - baseline`` (or
``candidate - baseline``) as fractions, never percentages.
"""

from robprune_deploy.statistics.choice import SweepChoice, choose_variant
from robprune_deploy.statistics.claim_verdict import VERDICTS, Verdict, verdict
from robprune_deploy.statistics.outcomes import pack_outcomes, unpack_outcomes
from robprune_deploy.statistics.paired import PairedDifference, paired_difference
from robprune_deploy.statistics.power import (
    POWER,
    detectable_paired_difference,
    detectable_paired_difference_normal,
    mcnemar_detectable_difference,
    mcnemar_examples_needed,
    paired_t_power,
)
from robprune_deploy.statistics.proportions import (
    PairedProportions,
    exact_mcnemar_p,
    newcombe_paired_interval,
    paired_proportions,
    wilson_interval,
)

__all__ = [
    "POWER",
    "VERDICTS",
    "PairedDifference",
    "PairedProportions",
    "SweepChoice",
    "Verdict",
    "choose_variant",
    "detectable_paired_difference",
    "detectable_paired_difference_normal",
    "exact_mcnemar_p",
    "mcnemar_detectable_difference",
    "mcnemar_examples_needed",
    "newcombe_paired_interval",
    "pack_outcomes",
    "paired_difference",
    "paired_proportions",
    "paired_t_power",
    "unpack_outcomes",
    "verdict",
    "wilson_interval",
]
