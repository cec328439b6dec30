"""More than one threat: ``evaluate.threats`` (L-inf and L2, each its own gate rows) and
``evaluate.corruptions`` (mean corruption accuracy), measured under onnxruntime and gated with
paired drops against the baseline.

The models are linear classifiers on the embedded digits (logistic regression, fitted in a fraction
of a second), so every figure is fast and the L2 threat's accuracy can be checked against the exact
rule: a linear model's L2 distance to the boundary between classes ``y`` and ``j`` is
``(f_y - f_j) / ||w_y - w_j||_2``, the nearest of those being the distance to the nearest
misclassified point while that point lies inside the [0, 1] box.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import LinearClassifier, overrides  # type: ignore[import-not-found]
from sklearn.linear_model import LogisticRegression
from torch import nn

from robprune_deploy.attacks.threats import ThreatDescription
from robprune_deploy.cli.main import main
from robprune_deploy.data import build_dataset
from robprune_deploy.errors import RecipeError
from robprune_deploy.evaluation.ensemble import EnsembleBudget
from robprune_deploy.evaluation.threat_evaluation import ThreatPlan, evaluate_threat
from robprune_deploy.export import export_onnx
from robprune_deploy.gate.checks import Measurements, run_checks
from robprune_deploy.gate.gating import evaluate_gate, render_markdown
from robprune_deploy.gate.validation import EvaluationData
from robprune_deploy.recipe import GateSection, validate_recipe

EXAMPLES = 150
THREATS = {
    "attack": {"eval_steps": 5},
    "evaluate": {
        "providers": ["cpu"],
        "attacks": "pgd",
        "square_queries": 20,
        "square_examples": 20,
        "apgd_steps": 20,
        "apgd_targets": 2,
        "fab_targets": 2,
        "curve_steps": 0,
        "indicator_examples": 0,
        "latency": {"repeats": 2, "warmup": 0},
        "threats": [{"norm": "l2", "eps": 1.0, "attacks": ["apgd-ce", "apgd-t", "fab-t", "square", "fmn"]}],
        "corruptions": {"types": ["gaussian_noise", "contrast", "brightness"], "severities": [1, 3, 5]},
    },
    "gate": {
        "indicators": [],
        "sparsity_tolerance": None,
        "min_clean_acc": 0.5,
        "threats": {"l2-1": {"min_acc": 0.05, "max_drop": 0.6}},
        "min_corruption_acc": 0.3,
        "max_corruption_drop": 0.5,
    },
}


def _linear(weight: np.ndarray, bias: np.ndarray) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0]))
    model[1].weight.data = torch.tensor(weight, dtype=torch.float32)
    model[1].bias.data = torch.tensor(bias, dtype=torch.float32)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def linear_digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dense linear digits classifier (the baseline) and the same with 80% of its weights zeroed
    (the candidate), both exported; the first :data:`EXAMPLES` test digits in batches of 64."""
    digits = build_dataset("digits", None, 16)
    x_train, y_train = digits.train.tensors
    fitted = LogisticRegression(C=0.01, max_iter=300).fit(x_train.flatten(1).numpy(), y_train.numpy())
    dense = _linear(fitted.coef_, fitted.intercept_)
    pruned_weight = fitted.coef_ * (np.abs(fitted.coef_) >= np.quantile(np.abs(fitted.coef_), 0.8))
    pruned = _linear(pruned_weight, fitted.intercept_)
    x, y = (t[:EXAMPLES] for t in digits.test.tensors)
    root = tmp_path_factory.mktemp("linear_digits")
    files = {name: export_onnx(m, root / f"{name}.onnx", x[:1]) for name, m in (("dense", dense), ("pruned", pruned))}
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, EXAMPLES, 64)]
    data = EvaluationData("digits", batches, digits.input_shape, digits.num_classes)
    return {"dense": dense, "pruned": pruned, "files": files, "data": data, "x": x, "y": y}


def _exact_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's L2 distance to the nearest other class's boundary (0 when misclassified)."""
    weight = next(m for m in model.modules() if isinstance(m, nn.Linear)).weight
    logits = model(x)
    rows = torch.arange(len(y))
    normals = weight[y][:, None, :] - weight[None]
    gaps = (logits[rows, y][:, None] - logits) / normals.norm(dim=2).clamp_min(1e-12)
    gaps[rows, y] = float("inf")
    return torch.where(logits.argmax(1) == y, gaps.min(1).values, torch.zeros(len(y)))


def test_one_l2_threat_and_corruptions_gate_with_rows_named_by_threat(linear_digits) -> None:
    recipe = validate_recipe(THREATS)
    files = linear_digits["files"]
    verdict = evaluate_gate(
        recipe, files["pruned"], linear_digits["data"], baseline_file=files["dense"], show_progress=False
    )
    checks = {c.name: c for c in verdict.checks}
    rows = ["threat:l2-1.min_acc", "threat:l2-1.max_drop", "min_corruption_acc", "max_corruption_drop"]
    assert [name for name in checks if name in rows] == rows
    candidate, baseline = verdict.candidate, verdict.baseline
    assert baseline is not None

    # the threat's drop: paired (McNemar) on the same 150 examples
    drop = checks["threat:l2-1.max_drop"]
    assert drop.measured == pytest.approx(baseline.figures["threat:l2-1"] - candidate.figures["threat:l2-1"])
    assert drop.interval is not None and drop.examples == EXAMPLES and "McNemar" in drop.detail
    assert drop.interval[0] <= drop.measured <= drop.interval[1]
    assert candidate.outcomes["threat:l2-1"].shape == (EXAMPLES,)
    # the corruption drop: paired t over 150 examples x 9 cells
    corruption = checks["max_corruption_drop"]
    assert candidate.outcomes["corruption_acc"].shape == (EXAMPLES, 9)
    mean_drop = baseline.figures["corruption_acc"] - candidate.figures["corruption_acc"]
    assert corruption.measured == pytest.approx(mean_drop)
    assert corruption.interval is not None and corruption.examples == EXAMPLES and "paired t" in corruption.detail
    minimum = checks["min_corruption_acc"]
    assert minimum.measured == pytest.approx(candidate.figures["corruption_acc"])
    assert minimum.passed == (minimum.measured >= 0.3)
    for kind in ("gaussian_noise", "contrast", "brightness"):
        assert 0 <= candidate.figures[f"corruption:{kind}"] <= 1

    # the dense baseline's L2 accuracy is the exact rule's, within one example; FMN's median
    # distance lies near the exact median (FMN finds a point on the boundary, no nearer)
    exact = _exact_l2(linear_digits["dense"], linear_digits["x"], linear_digits["y"])
    assert abs(baseline.figures["threat:l2-1"] * EXAMPLES - int((exact > 1.0).sum())) <= 1
    median = baseline.figures["threat:l2-1.median_distance"]
    assert float(exact.median()) * 0.99 <= median <= float(exact.median()) * 1.1

    # gate.json carries the threat's record and the corruption figures per type
    report = json.loads(json.dumps(verdict.to_dict()))
    record = report["robustness"]["candidate"]["threats"]["l2-1"]
    assert record["norm"] == "l2" and record["eps"] == 1.0 and record["examples"] == EXAMPLES
    assert record["crafted_on"] == ["twin"]  # the twin converted from the candidate's file
    assert record["accuracy"] == pytest.approx(candidate.figures["threat:l2-1"])
    assert [m["name"] for m in record["members"]] == ["apgd-ce", "apgd-t", "fab-t", "square", "fmn"]
    assert sum(m["outside"] for m in record["members"]) == 0
    corruptions = report["robustness"]["baseline"]["corruptions"]
    assert set(corruptions["type_acc"]) == {"gaussian_noise", "contrast", "brightness"}
    assert report["candidate"]["figures"]["threat:l2-1"] == pytest.approx(record["accuracy"])
    assert set(report["paired_drops"]) >= {"threat:l2-1", "corruption_acc", "clean_acc", "pgd_acc"}
    text = render_markdown(verdict)
    assert "| threat:l2-1.max_drop | 0." in text and "| max_corruption_drop | 0." in text
    assert f"| candidate | l2-1 | l2 | 1 | apgd-ce, apgd-t, fab-t, square, fmn | {EXAMPLES} | " in text
    assert f"| baseline | {baseline.figures['corruption_acc']:.4f} | " in text


@pytest.mark.parametrize("quantile", [0.25, 0.5, 0.75])
def test_an_l2_threat_on_a_linear_classifier_is_the_exact_distance_rule(quantile: float) -> None:
    """Inputs whose nearest boundary point lies inside the box: robust exactly when farther than eps."""
    torch.manual_seed(1)
    model = LinearClassifier(torch.randn(10, 64) * 0.1).eval().requires_grad_(False)
    x = 0.35 + 0.3 * torch.rand(80, 1, 8, 8)
    y = model(x).argmax(1)
    exact = _exact_l2(model, x, y)
    eps = float(exact.quantile(quantile))

    class Runtime:
        provider = "cpu"

        def predict(self, batch: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(batch)).numpy()

    threat = ThreatDescription("l2", eps, ("apgd-ce", "apgd-t", "fab-t", "square", "fmn"))
    budget = EnsembleBudget(apgd_steps=30, apgd_targets=9, fab_steps=30, fab_targets=9, square_queries=50)
    result = evaluate_threat(ThreatPlan(threat), {"twin": model}, Runtime(), x, y, budget, fmn_steps=100)
    assert abs(int(result.robust.sum()) - int((exact > eps).sum())) <= 1
    assert result.median_distance == pytest.approx(float(exact.median()), rel=0.02)
    # the L2 security curve: at each radius, the share of examples FMN could not move that far
    curve = result.curve()
    assert curve is not None and curve[0][0] == 0 and curve[-1][0] == pytest.approx(2 * eps)
    assert all(a >= b for (_, a), (_, b) in itertools.pairwise(curve))  # never rises with the radius
    at_eps = result.curve(3)[1]  # of radii 0, eps and 2 eps
    assert at_eps[0] == pytest.approx(eps) and abs(at_eps[1] - float((exact > eps).float().mean())) <= 0.02
    assert result.to_dict()["curve"] == [list(point) for point in curve]


def test_a_threshold_of_an_unmeasured_threat_fails_as_not_measured() -> None:
    gate = GateSection(
        threats={"l2-0.5": {"min_acc": 0.2, "max_drop": 0.1}},  # type: ignore[dict-item]
        min_corruption_acc=0.5,
        max_parity_error=None,
        sparsity_tolerance=None,
        indicators=[],
    )
    measured = Measurements(clean_acc=0.9, pgd_acc=0.4)
    results = run_checks(gate, measured, measured)
    assert [(c.name, c.passed, c.detail) for c in results] == [
        ("threat:l2-0.5.min_acc", False, "not measured"),
        ("threat:l2-0.5.max_drop", False, "not measured"),
        ("min_corruption_acc", False, "not measured"),
    ]


def test_a_misspelt_figure_is_an_error_and_not_an_unmeasured_one() -> None:
    measured = Measurements(clean_acc=0.9, pgd_acc=0.4, figures={"threat:l2-0.5": 0.3})
    assert (measured.figure("threat:l2-0.5"), measured.figure("threat:l2-1"), measured.figure("corruption_acc")) == (
        0.3,
        None,
        None,
    )
    assert (measured.figure("pgd_acc"), measured.figure("square_acc")) == (0.4, None)
    with pytest.raises(KeyError, match="no figure named 'pgd_accuracy'"):
        measured.figure("pgd_accuracy")


def _threats(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"evaluate": {"threats": list(entries)}}


L2 = {"norm": "l2", "eps": 1}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_threats(L2, {**L2, "eps": -1}), "evaluate.threats[1].eps: must be a finite number above 0, got -1"),
        (_threats({"norm": "linf", "eps": 2}), "evaluate.threats[0].eps: an L-inf radius is at most 1"),
        (_threats({**L2, "norm": "l1"}), "evaluate.threats[0].norm: Input should be 'linf' or 'l2'"),
        (_threats({**L2, "attacks": ["apgd-ce", "pgd"]}), "evaluate.threats[0].attacks[1]: Input should be 'apgd-ce',"),
        (_threats({**L2, "attacks": ["fmn", "fmn"]}), "evaluate.threats[0].attacks: 'fmn' is listed twice"),
        (_threats({**L2, "radius": 1}), "evaluate.threats[0].radius: unknown field"),
        (_threats(L2, {**L2, "eps": 1.0}), "evaluate.threats: [1] is labelled 'l2-1' like [0]"),
        (_threats({**L2, "examples": 0}), "evaluate.threats[0].examples:"),
        ({"evaluate": {"corruptions": {"types": ["fogg"]}}}, "evaluate.corruptions.types: types[0]: unknown"),
        ({"evaluate": {"corruptions": {"severities": [1, 6]}}}, "evaluate.corruptions.severities: Value error"),
        ({"gate": {"max_corruption_drop": 0.1}}, "gate.max_corruption_drop: needs evaluate.corruptions"),
    ],
)
def test_recipe_errors_name_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        validate_recipe(document)
    assert message in str(caught.value)


def test_a_gate_threat_label_not_in_evaluate_threats_is_refused(tmp_path: Path, capsys) -> None:
    document = {"evaluate": {"threats": [{"norm": "l2", "eps": 0.5, "name": "l2-small"}]}}
    with pytest.raises(RecipeError, match=r"gate\.threats\.l2-0\.5: no threat of evaluate\.threats is labelled"):
        validate_recipe({**document, "gate": {"threats": {"l2-0.5": {"min_acc": 0.3}}}})
    assert validate_recipe({**document, "gate": {"threats": {"l2-small": {"min_acc": 0.3}}}}).gate.threats
    # on the command line: one line, exit 2, before anything runs
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"
    sets = overrides("evaluate.threats=[{norm: l2, eps: 0.5}]", "gate.threats={l2-1: {min_acc: 0.3}}")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet", *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gate.threats.l2-1: no threat of evaluate.threats is labelled 'l2-1'" in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_old_run_folders_keep_their_fingerprint_without_threats() -> None:
    from robprune_deploy.pipeline.ownership import recipe_fingerprint

    plain = recipe_fingerprint(validate_recipe({}))
    assert recipe_fingerprint(validate_recipe({"evaluate": {"threats": [], "corruptions": None}})) == plain
    assert recipe_fingerprint(validate_recipe({"evaluate": {"threats": [{"norm": "l2", "eps": 0.5}]}})) != plain
    assert recipe_fingerprint(validate_recipe({"evaluate": {"corruptions": {}}})) != plain
    # thresholds are the gate's, outside the fingerprint
    threats = {"evaluate": {"threats": [{"norm": "l2", "eps": 0.5}]}}
    gated = {**threats, "gate": {"threats": {"l2-0.5": {"min_acc": 0.3}}}}
    assert recipe_fingerprint(validate_recipe(gated)) == recipe_fingerprint(validate_recipe(threats))


def test_outcomes_json_keeps_a_threat_per_example_and_the_corruption_cells_per_example(tmp_path: Path) -> None:
    from robprune_deploy.evaluation import Robustness
    from robprune_deploy.evaluation.outcome_files import outcome_record, read_outcomes

    rng = np.random.default_rng(0)
    cells = rng.random((13, 6)) > 0.4
    threat = rng.random(13) > 0.5
    result = Robustness(
        "cpu", 13, 0.9, 0.5, None, 0, None, None, outcomes={"threat:l2-1": threat, "corruption_acc": cells}
    )
    batches = [(torch.zeros(13, 1, 8, 8), torch.zeros(13, dtype=torch.long))]
    path = tmp_path / "outcomes.json"
    path.write_text(json.dumps(outcome_record(result, batches)))
    stored = read_outcomes(path)
    assert np.array_equal(stored.figures["threat:l2-1"], threat)
    assert np.array_equal(stored.figures["corruption_acc"], cells)
    assert stored.accuracy("corruption_acc") == pytest.approx(cells.mean())
