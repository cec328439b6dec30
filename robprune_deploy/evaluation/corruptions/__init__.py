"""Common corruptions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019): the 15 CIFAR-10-C / ImageNet-C types at severities 1
to 5, computed on the fly from ``N x C x H x W`` tensors in [0, 1] (1 or 3 channels, sides of at
least 8 pixels).

Parameters are those of the CIFAR-10-C generator, ``make_cifar_c.py`` in hendrycks/robustness
(``ImageNet-C/create_c``), CIFAR's 32 x 32 images being the smallest the reference covers. Its
OpenCV, scikit-image and ImageMagick calls are re-implemented with numpy, scipy and PIL
(:mod:`._common`). On size: lengths the reference gives in pixels (blur radii and sigmas, the
glass-blur displacement, the snow streaks) are kept in pixels, so on a 16 x 16 image a blur
covers twice the fraction of the image it covers on CIFAR; what the reference ties to the image
(the elastic transform's ``IMSIZE`` multiples, the crop of the fog fractal, the pixelate and
glass-blur loops over the image) follows the actual size.

==================  ==================================================================================
type                followed / adapted
==================  ==================================================================================
gaussian_noise      followed: ``x + N(0, c^2)``, ``c`` 0.04 ... 0.10
shot_noise          followed: ``Poisson(c x) / c``, ``c`` 500 ... 50
impulse_noise       followed: salt and pepper on each value with probability 0.01 ... 0.07
                    (scikit-image's ``random_noise`` rule)
defocus_blur        followed: the reference's anti-aliased disk (radius 0.3 ... 1.5 px), filter2D
                    with a reflected border
glass_blur          followed, including its 8-bit intermediate and the pixel copy (not swap) that
                    the reference's shuffle performs on RGB arrays (see :func:`.blur.glass_blur`)
motion_blur         re-implemented: ImageMagick's one-sided Gaussian motion kernel (radius 6 ... 9,
                    sigma 1 ... 2.5 px) at a random angle in [-45, 45]; the reference's 8-bit PNG
                    round trip is not applied to the output
zoom_blur           followed: the mean over central zooms 1 ... 1.06 (to 1.26), bilinear
snow                followed with the motion kernel above; flakes 8-bit as in the reference
frost               **substitute**: the reference's frost photographs are not available here; a
                    procedural frost layer with their measured colour, contrast and texture
                    correlation, blended with the reference's weights (:mod:`.weather`)
fog                 followed: a diamond-square fractal of size max(32, next power of two) cropped
                    to the image (the reference crops its 32 x 32 map to CIFAR's 32 x 32)
brightness          followed exactly in closed form (HSV value + 0.05 ... 0.3, :func:`.digital.brightness`)
contrast            followed: distance to the per-channel mean times 0.75 ... 0.15
elastic_transform   followed with ``IMSIZE`` = the image's smaller side (as the reference scales
                    it per dataset): random affine, then a smoothed random displacement field
pixelate            followed: PIL box filter to ``int(size * 0.95 ... 0.65)`` and back
jpeg_compression    followed: PIL JPEG at quality 80 ... 40 on the image rounded to 8 bits
==================  ==================================================================================

Outputs are not quantized to 8 bits (CIFAR-10-C stores ``uint8``), except where noted. Each
corruption is deterministic for ``(seed, type, severity)``: its random numbers come from
``numpy.random.SeedSequence(seed, spawn_key=(type index, severity))``, so the same inputs give the
same corrupted images whichever other types or severities are evaluated, and two models compared
on the same inputs and seed see the same images. The draw covers the whole batch at once: an
image's corruption depends on its position in ``x``.
"""

from robprune_deploy.evaluation.corruptions.accuracy import CorruptionAccuracy, corruption_accuracy
from robprune_deploy.evaluation.corruptions.apply import (
    CORRUPTIONS,
    DETERMINISTIC,
    MIN_SIDE,
    SEVERITIES,
    SUBSTITUTED,
    check_images,
    check_severity,
    check_types,
    corrupt,
    corruption_rng,
)

__all__ = [
    "CORRUPTIONS",
    "DETERMINISTIC",
    "MIN_SIDE",
    "SEVERITIES",
    "SUBSTITUTED",
    "CorruptionAccuracy",
    "check_images",
    "check_severity",
    "check_types",
    "corrupt",
    "corruption_accuracy",
    "corruption_rng",
]
