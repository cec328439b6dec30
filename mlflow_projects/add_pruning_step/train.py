"""The "existing" training step: adversarial training of a digits CNN, saving a plain state dict.

It knows nothing about pruning; the checkpoint it writes is what the pruning step consumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import torch

from robprune_deploy.attacks import ThreatModel
from robprune_deploy.checkpoints import save_checkpoint
from robprune_deploy.data import build_dataset, make_loader
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, adversarial_train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = build_dataset("digits", None, 16)
    model = build_model("digits_cnn", data.num_classes, 1, data.mean, data.std)
    with mlflow.start_run(run_name="train"):
        adversarial_train(
            model,
            TrainingPlan(epochs=args.epochs, lr=0.05),
            ThreatModel(0.2, 0.05, 7),
            lambda e: make_loader(data.train, 32, shuffle=True, epoch=e),
            device=torch.device("cpu"),
            on_epoch_end=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch + 1),  # epochs from 1
            show_progress=False,
        )
        save_checkpoint({"model": model.state_dict()}, args.checkpoint)
        mlflow.log_param("checkpoint", str(args.checkpoint.resolve()))


if __name__ == "__main__":
    main()
