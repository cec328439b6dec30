"""Shared set-up of the digits benchmarks: one pretrained model, the same fine-tuning and evaluation."""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robprune_deploy import ALGORITHMS, PruningContext, PruningResult
from robprune_deploy.attacks import ThreatModel
from robprune_deploy.checkpoints import load_model_weights, save_checkpoint
from robprune_deploy.data import DatasetBundle, build_dataset, make_loader
from robprune_deploy.models import build_model
from robprune_deploy.surgery import count_model
from robprune_deploy.training import TrainingPlan, adversarial_train, evaluate_robustness

TRAIN = ThreatModel(0.2, 0.05, 7)
EVAL = ThreatModel(0.2, 0.05, 20)
CPU = torch.device("cpu")


@dataclass
class Outcome:
    clean: float
    pgd: float
    params: int
    macs: int
    extra: dict


def digits() -> DatasetBundle:
    return build_dataset("digits", None, 16)


def pretrained(data: DatasetBundle, epochs: int, cache: Path, name: str = "digits_cnn") -> nn.Module:
    """The adversarially pretrained digits model ``name`` (cached on disk so every benchmark starts from it)."""
    model = build_model(name, 10, 1, data.mean, data.std)
    path = cache / f"{name}_pgd7_e{epochs}.pt"
    if path.is_file():
        return load_model_weights(model, path)
    torch.manual_seed(0)
    adversarial_train(
        model,
        TrainingPlan(epochs=epochs, lr=0.05),
        TRAIN,
        lambda e: make_loader(data.train, 32, shuffle=True, epoch=e),
        device=CPU,
        show_progress=False,
    )
    save_checkpoint({"model": model.state_dict()}, path)
    return model


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every digits benchmark takes: seeds, budgets, the model and the pretrained cache."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_cache"))
    parser.add_argument("--model", default="digits_cnn", choices=["digits_cnn", "digits_resnet"])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pin it on a shared machine)")
    return parser


def prepare(args: argparse.Namespace) -> tuple[DatasetBundle, nn.Module]:
    """The digits data and the pretrained model of ``args`` on ``args.threads`` threads."""
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    data = digits()
    return data, pretrained(data, args.pretrain_epochs, args.cache, args.model)


def prune(
    name: str, model: nn.Module, data: DatasetBundle, ratio: float, seed: int, **config: object
) -> tuple[PruningResult, float]:
    """Run algorithm ``name``; returns the result and the wall time."""
    cls = ALGORITHMS.get(name)
    context = PruningContext(
        train_data=make_loader(data.train, 32, shuffle=True, seed=seed),
        epoch_loader=lambda e: make_loader(data.train, 32, shuffle=True, seed=seed, epoch=e),
        ratio=ratio,
        threat=TRAIN,
        example_inputs=data.test.tensors[0][:1],
        seed=seed,  # type: ignore[attr-defined]
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = cls(cls.Config.model_validate(config)).apply(copy.deepcopy(model), context)
    return result, time.perf_counter() - start


def finetune_and_evaluate(result: PruningResult, data: DatasetBundle, epochs: int, seed: int) -> Outcome:
    """The pipeline's fine-tuning (PGD-AT, lr 0.01, cosine) then clean / PGD-20 on the test split."""
    channel = result.granularity.value == "channel"
    model = result.strip() if channel else result.model
    adversarial_train(
        model,
        TrainingPlan(epochs=epochs, lr=0.01),
        TRAIN,
        lambda e: make_loader(data.train, 32, shuffle=True, seed=seed, epoch=e),
        device=CPU,
        stage="finetune",
        seed=seed,
        show_progress=False,
    )
    deployable = model if channel else result.strip()
    metrics = evaluate_robustness(deployable, list(make_loader(data.test, 256, shuffle=False)), CPU, EVAL)
    count = count_model(deployable, data.test.tensors[0][:1])  # type: ignore[attr-defined]
    params = count.params if channel else count.nonzero_params
    macs = count.macs if channel else count.effective_macs
    return Outcome(metrics["clean_acc"], metrics["pgd_acc"], params, macs, result.extra)
