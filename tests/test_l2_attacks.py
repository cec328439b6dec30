"""The L2 versions of APGD-CE, APGD-T, FAB-T, FMN and Square, checked where the answer is exact.

For a linear classifier ``W x`` an input's L2 distance to the boundary between its class ``y`` and
another class ``j`` is ``(f_y - f_j) / ||w_y - w_j||_2``, and its distance to the nearest
misclassified point is the smallest of these (the region of class ``y`` is a convex polyhedron), as
long as the closest point stays inside the [0, 1] box, which the fixtures make sure of. FAB's
projection is checked against scipy's constrained solver.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LinearClassifier  # type: ignore[import-not-found]
from scipy.optimize import minimize
from torch import nn

from robprune_deploy.attacks.apgd import apgd
from robprune_deploy.attacks.fab import fab_targeted, project_onto_hyperplane_l2
from robprune_deploy.attacks.fmn import fmn, fmn_linf
from robprune_deploy.attacks.norms import project_l2, random_start
from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.square import square_attack

RTOL = 1e-3


def _l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def test_l2_hyperplane_projection_is_the_smallest_l2_step_in_the_box() -> None:
    rng = np.random.default_rng(1)
    points = torch.tensor(rng.random((16, 6)), dtype=torch.float64)
    w = torch.tensor(rng.normal(size=(16, 6)), dtype=torch.float64)
    b = (w * torch.tensor(rng.random((16, 6)))).sum(1)  # a hyperplane that meets the box
    step = project_onto_hyperplane_l2(points, w, b)
    active_bounds = 0
    for i in range(len(points)):
        p, wi, bi = points[i].numpy(), w[i].numpy(), float(b[i])
        solver = minimize(
            lambda d: d @ d,
            np.zeros(6),
            jac=lambda d: 2 * d,
            method="SLSQP",
            bounds=[(-pj, 1 - pj) for pj in p],
            constraints=[
                {"type": "eq", "fun": lambda d, wi=wi, p=p, bi=bi: wi @ (p + d) - bi, "jac": lambda d, wi=wi: wi}
            ],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert solver.success
        d = step[i].numpy()
        assert abs(wi @ (p + d) - bi) < 1e-9
        assert (p + d >= -1e-12).all() and (p + d <= 1 + 1e-12).all()
        assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(solver.x), rel=1e-6, abs=1e-9)
        active_bounds += int(((p + d < 1e-12) | (p + d > 1 - 1e-12)).any())
    assert active_bounds > 0  # some rows needed the box, not only the plain projection


def test_l2_hyperplane_out_of_reach_moves_every_coordinate_to_its_bound() -> None:
    points = torch.full((1, 4), 0.5, dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0, 0.5]], dtype=torch.float64)
    step = project_onto_hyperplane_l2(points, w, torch.tensor([100.0], dtype=torch.float64))
    assert step.tolist() == [[0.5, -0.5, 0.0, 0.5]]


def test_l2_projection_and_random_start_stay_in_the_ball_and_the_box() -> None:
    x = (torch.rand(20, 1, 8, 8) > 0.5).float()  # saturated pixels: the box clips
    far = x + torch.randn_like(x) * 3
    projected = project_l2(far, x, 0.7)
    assert float(_l2(projected - x).max()) <= 0.7 + 1e-6
    assert float(projected.min()) >= 0 and float(projected.max()) <= 1
    start = random_start(x, 0.7, "l2", torch.Generator().manual_seed(0))
    assert float(_l2(start - x).max()) <= 0.7 + 1e-6
    inside = 0.5 + 0.01 * torch.randn(5, 1, 8, 8)
    on_sphere = random_start(inside, 0.3, "l2", torch.Generator().manual_seed(0))
    assert torch.allclose(_l2(on_sphere - inside), torch.full((5,), 0.3), rtol=1e-5)


def _assert_closest_point_in_box(x: torch.Tensor, exact: torch.Tensor, normals: torch.Tensor) -> None:
    """The closest point of the boundary with normal ``w_y - w_j`` is ``x - exact (w_y - w_j) /
    ||w_y - w_j||``: inside [0, 1], so the box does not change the exact distance."""
    closest = x.flatten(1) - exact[:, None] * normals / normals.norm(dim=1, keepdim=True)
    assert float(closest.min()) > 0 and float(closest.max()) < 1


@pytest.fixture(scope="module")
def two_classes() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear model, inputs whose closest boundary point lies inside the box."""
    torch.manual_seed(0)
    weight = torch.randn(2, 16) * 0.1
    model = LinearClassifier(weight).eval()
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    normals = weight[y] - weight[1 - y]
    exact = (logits[:, 0] - logits[:, 1]).abs() / normals.norm(dim=1)
    _assert_closest_point_in_box(x, exact, normals)
    return model, x, y, exact


@pytest.fixture(scope="module")
def ten_classes() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 10-class linear model: the exact distance is the nearest of 9 boundaries."""
    torch.manual_seed(1)
    weight = torch.randn(10, 64) * 0.1
    model = LinearClassifier(weight).eval()
    x = 0.35 + 0.3 * torch.rand(60, 1, 8, 8)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    rows = torch.arange(len(y))
    normals = weight[y][:, None, :] - weight[None]  # N x classes x D
    distances = (logits[rows, y][:, None] - logits) / normals.norm(dim=2)
    distances[rows, y] = float("inf")
    exact, nearest = distances.min(1)
    _assert_closest_point_in_box(x, exact, normals[rows, nearest])
    return model, x, y, exact, nearest


def _assert_adversarial(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> None:
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) != y).all())


def test_fab_t_l2_finds_the_exact_distance_of_a_linear_classifier(two_classes) -> None:
    model, x, y, exact = two_classes
    outcome, distance = fab_targeted(model, x, y, 1 - y, steps=20, norm="l2", final_search_steps=20)
    assert bool(outcome.success.all())
    assert torch.allclose(distance, exact, rtol=RTOL)
    assert torch.allclose(_l2(outcome.x_adv - x), distance)
    _assert_adversarial(model, outcome.x_adv, y)
    # AutoAttack's FAB (no final search) stops just beyond the boundary: overshoot eta = 1.05 and
    # pull-back beta = 0.9 settle within about 1% of it
    plain, plain_distance = fab_targeted(model, x, y, 1 - y, steps=20, norm="l2")
    assert bool(plain.success.all())
    assert bool((plain_distance >= exact * (1 - 1e-5)).all()) and bool((plain_distance <= exact * 1.01).all())


def test_fab_t_l2_towards_the_nearest_class_of_ten_is_exact(ten_classes) -> None:
    model, x, y, exact, nearest = ten_classes
    outcome, distance = fab_targeted(model, x, y, nearest, steps=30, norm="l2", final_search_steps=20)
    assert bool(outcome.success.all())
    assert torch.allclose(distance, exact, rtol=RTOL)
    _assert_adversarial(model, outcome.x_adv, y)


def test_fmn_l2_finds_the_exact_distance_of_a_linear_classifier(two_classes) -> None:
    model, x, y, exact = two_classes
    x_adv, distance = fmn(model, x, y, norm="l2", steps=100)
    assert torch.allclose(distance, exact, rtol=RTOL)
    assert torch.allclose(_l2(x_adv - x), distance)
    _assert_adversarial(model, x_adv, y)


def test_fmn_l2_grows_its_first_extrapolation_or_it_stalls_on_the_boundary(ten_classes) -> None:
    """The reference's plain extrapolation puts the L2 iterate exactly on a linear boundary, where
    rounding keeps some examples on the clean side for good (see robprune_deploy.attacks.fmn)."""
    model, x, y, exact, _ = ten_classes
    _, plain = fmn(model, x, y, norm="l2", steps=100, grow_extrapolation=False)
    assert int(torch.isinf(plain).sum()) > 0
    x_adv, distance = fmn(model, x, y, norm="l2", steps=100)
    assert bool(torch.isfinite(distance).all())
    _assert_adversarial(model, x_adv, y)
    # never closer than the boundary; untargeted FMN follows the most likely other class, which
    # need not be the nearest boundary, so most (not all) examples get the exact distance
    assert bool((distance >= exact * (1 - 1e-5)).all())
    assert float(((distance - exact).abs() <= RTOL * exact).float().mean()) >= 0.9


def test_fmn_linf_is_fmn_in_linf(two_classes) -> None:
    model, x, y, _ = two_classes
    a = fmn_linf(model, x, y, steps=30)
    b = fmn(model, x, y, norm="linf", steps=30)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_apgd_ce_l2_breaks_exactly_the_examples_within_reach(two_classes) -> None:
    model, x, y, exact = two_classes
    eps = float(exact.median())
    outcome = apgd(model, x, y, eps, steps=30, norm="l2")
    margin = 1e-3
    assert bool(outcome.success[exact < eps - margin].all())
    assert not bool(outcome.success[exact > eps + margin].any())
    assert float(_l2(outcome.x_adv - x).max()) <= eps * (1 + 1e-6)
    assert float(outcome.x_adv.min()) >= 0 and float(outcome.x_adv.max()) <= 1


def test_apgd_t_l2_breaks_exactly_the_examples_within_reach(ten_classes) -> None:
    model, x, y, exact, _ = ten_classes
    eps = float(exact.median())
    with torch.no_grad():
        order = model(x).argsort(1, descending=True)
    broken = torch.zeros(len(y), dtype=torch.bool)
    for rank in range(1, 10):  # the standard version's 9 targets, most likely first
        outcome = apgd(model, x, y, eps, steps=50, norm="l2", loss="dlr-targeted", target=order[:, rank])
        assert float(_l2(outcome.x_adv - x).max()) <= eps * (1 + 1e-6)
        broken |= outcome.success
    margin = 1e-3
    assert bool(broken[exact < eps - margin].all())
    assert not bool(broken[exact > eps + margin].any())


def _predict(model: nn.Module):
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    return predict


def test_square_l2_stays_in_the_ball_and_breaks_a_linear_classifier_within_reach() -> None:
    torch.manual_seed(0)
    weight = torch.randn(2, 256) * 0.05
    model = LinearClassifier(weight).eval()
    x = 0.3 + 0.4 * torch.rand(40, 1, 16, 16)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1).numpy()
    exact = ((logits[:, 0] - logits[:, 1]).abs() / (weight[0] - weight[1]).norm()).numpy()
    eps = float(np.median(exact)) * 1.3
    result = square_attack(_predict(model), x.numpy(), y, eps, n_queries=1000, seed=0, norm="l2")
    norms = np.sqrt(((result.x_adv - x.numpy()) ** 2).reshape(len(y), -1).sum(1))
    assert norms.max() <= eps * (1 + 1e-5)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    broken = ~result.robust
    # random search aligns its perturbation with the boundary's normal step by step: with 1,000
    # queries every example within half the radius falls, and none beyond the radius can
    assert (exact < eps / 2).sum() >= 5 and bool(broken[exact < eps / 2].all())
    assert not bool(broken[exact > eps].any())
    with torch.no_grad():
        assert (model(torch.from_numpy(result.x_adv)).argmax(1).numpy() != y)[broken].all()


def test_square_l2_clips_into_the_box_on_saturated_images() -> None:
    torch.manual_seed(2)
    weight = torch.randn(3, 3 * 12 * 12) * 0.05
    model = LinearClassifier(weight).eval()
    x = (torch.rand(10, 3, 12, 12) > 0.5).float()
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    result = square_attack(_predict(model), x.numpy(), y, 2.0, n_queries=200, seed=3, norm="l2")
    norms = np.sqrt(((result.x_adv - x.numpy()) ** 2).reshape(len(y), -1).sum(1))
    assert norms.max() <= 2.0 * (1 + 1e-5)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("call", ["apgd", "fab", "fmn", "square"])
def test_an_unknown_norm_is_refused_by_name(two_classes, call: str) -> None:
    model, x, y, _ = two_classes
    with pytest.raises(ArgumentError, match=r"norm: must be one of 'linf', 'l2', got 'l1'"):
        if call == "apgd":
            apgd(model, x, y, 0.1, steps=1, norm="l1")  # type: ignore[arg-type]
        elif call == "fab":
            fab_targeted(model, x, y, 1 - y, steps=1, norm="l1")  # type: ignore[arg-type]
        elif call == "fmn":
            fmn(model, x, y, steps=1, norm="l1")  # type: ignore[arg-type]
        else:
            square_attack(_predict(model), x.numpy(), y.numpy(), 0.1, n_queries=3, norm="l1")  # type: ignore[arg-type]
