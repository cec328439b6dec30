"""The 15 common corruptions (CIFAR-10-C's types and parameters) and the corruption accuracy.

Each corruption is checked for what a gate relies on: the same seed gives the same images, pixels
stay in [0, 1], shape and dtype are kept, and a higher severity changes the image more (for the
types whose reference parameters grow monotonically; see the notes on glass and motion blur). A
small model trained on the digits loses accuracy under them, and the per-example outcomes add up
to the reported figures.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.corruptions import (
    CORRUPTIONS,
    DETERMINISTIC,
    SEVERITIES,
    CorruptionAccuracy,
    corrupt,
    corruption_accuracy,
)
from robprune_deploy.evaluation.corruptions.blur import disk
from robprune_deploy.evaluation.corruptions.digital import brightness

TYPES = list(CORRUPTIONS)


@pytest.fixture(scope="module")
def digits_images(digits) -> torch.Tensor:
    return digits.test.tensors[0][:120]


@pytest.fixture(scope="module")
def colour_images() -> torch.Tensor:
    """28 x 28 RGB images with flat regions, gradients and saturated pixels."""
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(12, 3, 1, 1, generator=generator)
    ramp = torch.linspace(0, 1, 28)
    images = 0.5 * base + 0.5 * ramp.view(1, 1, 1, 28) * ramp.view(1, 1, 28, 1)
    images[:, :, 10:18, 10:18] = (torch.rand(12, 3, 1, 1, generator=generator) > 0.5).float()
    return images


@pytest.mark.parametrize("name", TYPES)
def test_each_corruption_keeps_shape_dtype_and_range_and_is_deterministic(name, digits_images, colour_images) -> None:
    for images in (digits_images, colour_images.double()):
        for severity in (1, 3, 5):
            out = corrupt(images, name, severity, seed=7)
            assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
            assert float(out.min()) >= 0 and float(out.max()) <= 1 and bool(torch.isfinite(out).all())
            assert torch.equal(out, corrupt(images, name, severity, seed=7))
            other = corrupt(images, name, severity, seed=8)
            if name in DETERMINISTIC:
                assert torch.equal(out, other)
            else:
                assert not torch.equal(out, other)
            assert not torch.equal(out, images)


def _change(images: torch.Tensor, name: str) -> list[float]:
    return [float((corrupt(images, name, s, seed=0) - images).abs().mean()) for s in SEVERITIES]


@pytest.mark.parametrize(
    "name", ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "contrast"]
)
def test_noise_blur_and_contrast_change_the_image_more_at_each_severity(name, digits_images, colour_images) -> None:
    for images in (digits_images, colour_images):
        change = _change(images, name)
        assert all(later > earlier for earlier, later in itertools.pairwise(change)), change


def test_motion_blur_grows_with_severity_up_to_a_tie_the_reference_builds_in(digits_images) -> None:
    """Severities 3 and 4 (radius 6 and 8, sigma 2) differ only by kernel taps of weight below
    0.3%, so the random angles can order them either way; the others grow clearly."""
    change = _change(digits_images, "motion_blur")
    assert change[0] < change[1] < change[2] and change[3] < change[4]
    assert change[3] == pytest.approx(change[2], rel=0.03)
    assert change[4] > 1.1 * change[2]


def test_glass_blur_grows_with_its_shuffle_passes(digits_images) -> None:
    """Glass blur's severities 1-3 differ in the blur's sigma (0.05 to 0.4) around one shuffle pass,
    4-5 make two passes: the pixel change follows the passes, not the sigma."""
    change = _change(digits_images, "glass_blur")
    assert min(change[3:]) > 1.4 * max(change[:3])


def test_most_types_change_the_image_more_at_each_severity(digits_images) -> None:
    monotone = [n for n in TYPES if all(b > a for a, b in itertools.pairwise(_change(digits_images, n)))]
    assert len(monotone) >= 10, monotone


def test_brightness_is_the_hsv_round_trip_in_closed_form() -> None:
    """HSV value + c, clipped, converted back, as the reference does with scikit-image."""
    import colorsys

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 5, 5))
    x[0, :, 0, 0] = 0.0  # black: saturation 0, becomes grey c
    out = brightness(x, 3, rng)
    for i, r, c in itertools.product(range(2), range(5), range(5)):
        h, s, v = colorsys.rgb_to_hsv(*x[i, :, r, c])
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.15, 1.0))
        assert np.allclose(out[i, :, r, c], expected, atol=1e-12)


def test_defocus_kernel_is_a_normalized_antialiased_disk() -> None:
    for radius, alias in ((0.3, 0.4), (1, 0.2), (1.5, 0.1)):
        kernel = disk(radius, alias)
        assert kernel.sum() == pytest.approx(1.0)
        assert np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1])
        centre = kernel.shape[0] // 2
        assert kernel.shape[0] % 2 == 1 and kernel[centre, centre] == pytest.approx(kernel.max())


def test_a_corruption_does_not_depend_on_the_other_types_evaluated(digits_images) -> None:
    predict = _constant_predict(10)
    y = torch.zeros(len(digits_images), dtype=torch.int64)
    both = corruption_accuracy(predict, digits_images, y, ["fog", "snow"], [2], seed=3)
    alone = corruption_accuracy(predict, digits_images, y, ["snow"], [2], seed=3)
    assert np.array_equal(both.correct[("snow", 2)], alone.correct[("snow", 2)])
    assert torch.equal(corrupt(digits_images, "snow", 2, seed=3), corrupt(digits_images, "snow", 2, seed=3))


def _constant_predict(classes: int):
    def predict(batch: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(classes)[0], (len(batch), 1))

    return predict


@pytest.fixture(scope="module")
def trained_mlp(digits) -> nn.Module:
    """A small MLP trained briefly on the digits (clean accuracy around 0.95)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = digits.train.tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        for batch in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def test_mean_corruption_accuracy_of_a_trained_model_is_below_its_clean_accuracy(digits, trained_mlp) -> None:
    x, y = digits.test.tensors[0][:150], digits.test.tensors[1][:150]

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return trained_mlp(torch.from_numpy(batch)).numpy()

    report = corruption_accuracy(predict, x, y, seed=0, batch_size=64)
    assert isinstance(report, CorruptionAccuracy)
    assert report.examples == 150 and len(report.correct) == 15 * 5
    assert report.clean_accuracy > 0.9
    assert report.mean_accuracy < report.clean_accuracy - 0.05
    # per-example outcomes add up to the figures, so a paired drop can be computed from them
    assert report.per_example.mean() == pytest.approx(report.mean_accuracy)
    assert report.type_accuracy["gaussian_noise"] == pytest.approx(
        np.mean([report.accuracy[("gaussian_noise", s)] for s in SEVERITIES])
    )
    assert report.accuracy[("contrast", 5)] < report.accuracy[("contrast", 1)]
    summary = report.to_dict()
    assert summary["substituted"] == ["frost"] and summary["mean_corruption_acc"] == report.mean_accuracy
    assert len(summary["cell_acc"]) == 75
    # the same seed gives the same per-example outcomes (the paired comparison relies on it)
    again = corruption_accuracy(predict, x, y, ["glass_blur", "snow"], [1, 4], seed=0)
    assert np.array_equal(again.correct[("snow", 4)], report.correct[("snow", 4)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"types": ["fog", "rain"]}, r"types\[1\]: unknown corruption 'rain'"),
        ({"types": ["fog", "fog"]}, r"types\[1\]: 'fog' is listed twice"),
        ({"types": "fog"}, r"types: must be a non-empty list"),
        ({"severities": [1, 6]}, r"severities\[1\]: must be an integer from 1 to 5, got 6"),
        ({"severities": [2, 2]}, r"severities: must not repeat"),
        ({"seed": -1}, r"seed: must be an integer >= 0"),
        ({"batch_size": 0}, r"batch_size: must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(digits_images, kwargs, message) -> None:
    y = torch.zeros(len(digits_images), dtype=torch.int64)
    with pytest.raises(ArgumentError, match=message):
        corruption_accuracy(_constant_predict(10), digits_images, y, **kwargs)


def test_bad_images_are_refused_by_name() -> None:
    with pytest.raises(ArgumentError, match=r"x: values must be finite and in \[0, 1\]"):
        corrupt(torch.full((2, 1, 16, 16), 1.5), "fog", 1)
    with pytest.raises(ArgumentError, match=r"x: must be N x C x H x W with C 1 or 3 and H, W >= 8"):
        corrupt(torch.rand(2, 2, 16, 16), "fog", 1)
    with pytest.raises(ArgumentError, match=r"x: must be N x C x H x W"):
        corrupt(torch.rand(2, 1, 4, 4), "fog", 1)
    with pytest.raises(ArgumentError, match=r"severity: must be an integer from 1 to 5, got 0"):
        corrupt(torch.rand(2, 1, 16, 16), "fog", 0)
    with pytest.raises(ArgumentError, match=r"y: must be 2 integer labels"):
        corruption_accuracy(_constant_predict(10), torch.rand(2, 1, 16, 16), torch.zeros(3, dtype=torch.int64))
