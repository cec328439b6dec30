"""The threat description: a norm, a radius and attacks, validated field by field."""

from __future__ import annotations

import math

import pytest

from robprune_deploy.attacks.threats import STANDARD_ATTACKS, ThreatDescription, check_threats
from robprune_deploy.errors import ArgumentError, RobPruneError


def test_a_threat_has_a_label_defaults_and_a_plain_dict() -> None:
    threat = ThreatDescription("l2", 0.5)
    assert threat.attacks == STANDARD_ATTACKS and threat.label == "l2-0.5"
    assert threat.to_dict() == {"name": "l2-0.5", "norm": "l2", "eps": 0.5, "attacks": list(STANDARD_ATTACKS)}
    named = ThreatDescription("linf", 8 / 255, ["apgd-ce", "fmn"], name="linf-8/255")  # type: ignore[arg-type]
    assert named.attacks == ("apgd-ce", "fmn") and named.label == "linf-8/255"
    assert ThreatDescription.from_mapping({"norm": "linf", "eps": 0.1, "attacks": ["square"]}) == ThreatDescription(
        "linf", 0.1, ("square",)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("l1", 0.5), r"ThreatDescription\.norm: must be one of 'linf', 'l2', got 'l1'"),
        (("l2", 0), r"ThreatDescription\.eps: must be a finite number above 0, got 0"),
        (("l2", math.nan), r"ThreatDescription\.eps: must be a finite number above 0, got nan"),
        (("l2", math.inf), r"ThreatDescription\.eps: must be a finite number above 0"),
        (("l2", True), r"ThreatDescription\.eps: must be a number, got True"),
        (("l2", "0.5"), r"ThreatDescription\.eps: must be a number, got '0.5'"),
        (("linf", 1.5), r"ThreatDescription\.eps: an L-inf radius is at most 1"),
        (("l2", 0.5, ()), r"ThreatDescription\.attacks: must name at least one attack"),
        (("l2", 0.5, "apgd-ce"), r"ThreatDescription\.attacks: must be a list of attack names"),
        (("l2", 0.5, ("apgd-ce", "pgd")), r"ThreatDescription\.attacks\[1\]: unknown attack 'pgd'"),
        (("l2", 0.5, ("fmn", "fmn")), r"ThreatDescription\.attacks\[1\]: 'fmn' is listed twice"),
        (("l2", 0.5, ("fmn",), " "), r"ThreatDescription\.name: must be a non-empty string"),
        (("l2", 0.5, ("fmn",), "a\nGATE PASSED"), r"ThreatDescription\.name: must not contain the control character"),
    ],
)
def test_bad_fields_are_refused_by_name(args, message) -> None:
    with pytest.raises(ArgumentError, match=message) as caught:
        ThreatDescription(*args)
    assert isinstance(caught.value, RobPruneError)  # the CLI reports it in one line, exit 2


def test_a_large_l2_radius_is_allowed() -> None:
    """An L2 ball's useful radius grows with the input size (sqrt(D) spans the whole box)."""
    assert ThreatDescription("l2", 3.0).eps == 3.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([("norm", "l2")], r"evaluate\.threats\[2\]: must be a mapping"),
        ({"eps": 0.5}, r"evaluate\.threats\[2\]\.norm: required"),
        ({"norm": "l2"}, r"evaluate\.threats\[2\]\.eps: required"),
        ({"norm": "l2", "eps": 0.5, "radius": 1}, r"evaluate\.threats\[2\]\.radius: unknown field"),
        ({"norm": "L2", "eps": 0.5}, r"evaluate\.threats\[2\]\.norm: must be one of"),
        ({"norm": "l2", "eps": -1}, r"evaluate\.threats\[2\]\.eps: must be a finite number above 0"),
        ({"norm": "l2", "eps": 1, "attacks": ["x"]}, r"evaluate\.threats\[2\]\.attacks\[0\]: unknown attack 'x'"),
        ({"norm": "l2", "eps": 1, "name": 3}, r"evaluate\.threats\[2\]\.name: must be a non-empty string"),
    ],
)
def test_a_mapping_from_a_file_is_refused_with_its_location(data, message) -> None:
    with pytest.raises(ArgumentError, match=message):
        ThreatDescription.from_mapping(data, "evaluate.threats[2]")


def test_two_threats_with_one_label_are_refused() -> None:
    first, second = ThreatDescription("l2", 0.5), ThreatDescription("linf", 0.1, name="l2-0.5")
    with pytest.raises(ArgumentError, match=r"evaluate\.threats\[1\]: the name 'l2-0.5' is already used by"):
        check_threats([first, second], "evaluate.threats")
    assert check_threats([first, ThreatDescription("l2", 1.0)]) == (first, ThreatDescription("l2", 1.0))
