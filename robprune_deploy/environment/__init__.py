"""What this machine offers a recipe: packages, GPUs, onnxruntime providers, the tracking store.

``robprune doctor`` prints :func:`diagnose`'s findings; the probes are usable on their own.
"""

from robprune_deploy.environment.diagnosis import Check, Diagnosis, Status, diagnose
from robprune_deploy.environment.packages import OnnxruntimeBuilds, installed, onnxruntime_builds
from robprune_deploy.environment.providers import OnnxruntimeProbe, probe_onnxruntime
from robprune_deploy.environment.tracking_probe import TrackingProbe, probe_tracking_uri

__all__ = [
    "Check",
    "Diagnosis",
    "OnnxruntimeBuilds",
    "OnnxruntimeProbe",
    "Status",
    "TrackingProbe",
    "diagnose",
    "installed",
    "onnxruntime_builds",
    "probe_onnxruntime",
    "probe_tracking_uri",
]
