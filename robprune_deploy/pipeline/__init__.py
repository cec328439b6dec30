"""The pipeline: stages that read and write files so they can run alone, resume, or chain."""

from robprune_deploy.pipeline.context import RunContext, resolve_device
from robprune_deploy.pipeline.run import SUMMARY, run_pipeline, run_recipe

__all__ = ["SUMMARY", "RunContext", "resolve_device", "run_pipeline", "run_recipe"]
