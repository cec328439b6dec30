"""The security curve: robust accuracy against the L-inf radius, from one minimum-norm attack.

FMN finds each example's smallest adversarial perturbation on the torch twin; onnxruntime must
agree that the point is misclassified, else the distance is not counted (``inf``). The robust
accuracy at radius ``e`` is then the fraction of examples whose distance exceeds ``e``: a whole
curve from one run, in the style of the Adversarial Pruning Benchmark.

A minimum-norm attack with a fixed budget can miss adversarial points that the (fixed-radius)
ensemble finds. Each example's distance is therefore the smallest *known* one: FMN's, or the
distance of the ensemble's adversarial input when that is smaller. The curve then agrees with the
ensemble at the recipe's eps and stays a valid upper bound of the robust accuracy everywhere;
FMN's own figures are kept beside it (``fmn_distances``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robprune_deploy.attacks.fmn import fmn_linf
from robprune_deploy.evaluation.runtimes import Predictor
from robprune_deploy.progress import progress_bar


@dataclass(frozen=True)
class SecurityCurve:
    """Per-example smallest adversarial L-inf distance (0: misclassified clean; ``inf``: none found)."""

    distances: np.ndarray
    steps: int
    fmn_distances: np.ndarray | None = None

    @property
    def examples(self) -> int:
        return int(self.distances.size)

    def accuracy_at(self, eps: float) -> float:
        return float((self.distances > eps).mean()) if self.distances.size else 0.0

    @property
    def median_distance(self) -> float:
        """Median over all examples (misclassified ones count as 0, unbroken ones as ``inf``)."""
        return float(np.median(self.distances)) if self.distances.size else float("nan")

    def grid(self, points: int = 41, upto: float | None = None) -> list[tuple[float, float]]:
        """``(eps, accuracy)`` from 0 to ``upto`` (default: the largest finite distance)."""
        finite = self.distances[np.isfinite(self.distances)]
        top = upto if upto is not None else (float(finite.max()) if finite.size else 1.0)
        return [(float(e), self.accuracy_at(float(e))) for e in np.linspace(0.0, max(top, 1e-6), points)]

    def fmn_accuracy_at(self, eps: float) -> float | None:
        """FMN's own robust accuracy at ``eps``, before the ensemble's points are merged in."""
        fmn = self.fmn_distances
        return None if fmn is None or not fmn.size else float((fmn > eps).mean())

    def merged(self, known: np.ndarray) -> SecurityCurve:
        """This curve with other attacks' adversarial distances (``inf``: none) taken where smaller."""
        return SecurityCurve(np.minimum(self.distances, known), self.steps, self.distances.copy())

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "examples": self.examples,
            "median_linf_distance": self.median_distance,
            "distances": [float(d) for d in self.distances],
            "fmn_distances": None if self.fmn_distances is None else [float(d) for d in self.fmn_distances],
        }


def security_curve(
    twin: nn.Module,
    session: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 100,
    batch_size: int = 256,
    show_progress: bool = True,
) -> SecurityCurve:
    """FMN on ``(x, y)`` (CPU tensors in [0, 1]) against the twin, each distance checked on the session."""
    device = next(iter(twin.parameters()), torch.empty(0)).device
    distances = np.empty(len(y), dtype=np.float64)
    chunks = [slice(i, i + batch_size) for i in range(0, len(y), batch_size)]
    with progress_bar("fmn (security curve)", steps * len(chunks), show_progress) as bar:
        for part in chunks:
            xb, yb = x[part].to(device), y[part].to(device)
            x_adv, distance = fmn_linf(twin.eval(), xb, yb, steps=steps, on_step=bar.advance)
            confirmed = session.predict(x_adv.cpu().numpy()).argmax(1) != yb.cpu().numpy()
            d = distance.cpu().numpy().astype(np.float64)
            distances[part] = np.where(confirmed, d, np.inf)
    return SecurityCurve(distances, steps)
