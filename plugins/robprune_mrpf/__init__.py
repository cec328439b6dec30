"""MRPF (module robustness sensitivity, adaptive structured pruning) and the uniform L1-filter baseline.

Registered through the ``robprune_deploy.algorithms`` entry points as ``mrpf`` and ``l1_filter``.
This package uses only the public API of :mod:`robprune_deploy`.
"""

from robprune_mrpf.algorithm import MRPF, L1Filter, L1FilterConfig, MRPFConfig

__all__ = ["MRPF", "L1Filter", "L1FilterConfig", "MRPFConfig"]
