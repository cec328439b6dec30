"""The pipeline: stages that read and write files so they can run alone, resume, or chain.

``robprune_deploy.pipeline.run`` holds the whole-pipeline driver (it depends on the gate, which in
turn uses the stage context defined here, so it is imported from its module, not re-exported).
"""

from robprune_deploy.pipeline.context import RunContext, resolve_device

__all__ = ["RunContext", "resolve_device"]
