"""Experiment tracking: the :class:`Tracker` protocol the pipeline logs through."""

from robprune_deploy.tracking.tracker import NullTracker, Tracker

__all__ = ["NullTracker", "Tracker"]
