"""Plots people compare (PNG, written atomically, logged to MLflow)."""

from robprune_deploy.reporting.plots import (
    plot_gate,
    plot_layers,
    plot_security_curves,
    plot_training,
    save_figure,
    training_figure,
)

__all__ = ["plot_gate", "plot_layers", "plot_security_curves", "plot_training", "save_figure", "training_figure"]
