"""S2AP (score-space sharpness-aware adversarial pruning) and HYDRA for robprune-deploy.

Registered through the ``robprune_deploy.algorithms`` entry points as ``s2ap`` and ``hydra``.
This package uses only the public API of :mod:`robprune_deploy`.
"""

from robprune_s2ap.algorithm import HYDRA, S2AP, HydraConfig, S2APConfig

__all__ = ["HYDRA", "S2AP", "HydraConfig", "S2APConfig"]
