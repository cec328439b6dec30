"""Mask-search step cost of S2AP against HYDRA, measured interleaved in one process.

A shared machine drifts (other jobs, frequency scaling), so the variants take turns: every round
runs one short mask-search epoch of HYDRA, then of S2AP with each ``ascent_every``, on the same
batches; the figure is the median over rounds of each epoch's mean step time, in CPU seconds of this
process (``--wall``: wall seconds). Prints the step times and the ratios S2AP/HYDRA.

The limit: an S2AP step is a HYDRA step plus one more evaluation of the search's robust loss on
the same crafted batch, with its backward pass (TRADES by default: two forward passes). Each round
also times that pass alone, on the HYDRA step's masked network and crafted batch, and the column
``limit`` is ``(HYDRA step + pass) / HYDRA step``: what S2AP at ``ascent_every: 1`` cannot go below
without changing its arithmetic.

    python benchmarks/s2ap_step_cost.py                               # digits CNN (PGD-7) and ResNet18 (PGD-10)
    python benchmarks/s2ap_step_cost.py --models resnet18 --batch 128 --device cuda
    python benchmarks/s2ap_step_cost.py --batch 16 --json benchmarks/results/s2ap_step_cost.json   # the docs' table
    python benchmarks/s2ap_step_cost.py --models resnet18 --batch 16 --search-loss pgd_at   # one forward per loss
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from provenance import provenance
from result_tables import column, results_file, table, text_column
from robprune_s2ap.search import batchnorm_affine_parameters, frozen_batchnorm_statistics
from robprune_s2ap.setup_scores import attach_unstructured
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.attacks import RobustLoss, craft_adversarial, loss_on_adversarial
from robprune_deploy.data import build_dataset, make_loader
from robprune_deploy.models import build_model

SETUPS = {
    # model: (input channels, image size, threat of the field's convention for that data)
    "digits_cnn": (1, 16, ThreatModel(0.2, 0.05, 7)),
    "resnet18": (3, 32, ThreatModel(8 / 255, 2 / 255, 10)),
}
SHOWN = {"digits_cnn": "digits CNN 16x16", "resnet18": "ResNet18 32x32"}


def step_ms(
    model: torch.nn.Module,
    data: TensorDataset,
    threat: ThreatModel,
    batch: int,
    device: str,
    wall: bool,
    **config: object,
) -> float:
    name = "s2ap" if config.get("gamma") else "hydra"
    cls = ALGORITHMS.get(name)
    context = PruningContext(
        train_data=make_loader(data, batch, shuffle=False),
        ratio=0.9,
        threat=threat,
        example_inputs=data.tensors[0][:1].to(device),
        device=torch.device(device),
    )
    # The end-of-epoch Hessian probe is not part of a step: off, it only costs the benchmark time.
    result = cls(cls.Config.model_validate({"epochs": 1, "hessian_eigenvalue": False, **config})).apply(model, context)
    # The mean, not the median: with ascent_every = k the step cost alternates between a fresh
    # ascent and a reused one, and the epoch's cost is their mean.
    return 1000 * result.extra["epochs"][0]["step_seconds" if wall else "step_cpu_seconds"]


def extra_pass_ms(
    model: torch.nn.Module,
    data: TensorDataset,
    threat: ThreatModel,
    batch: int,
    device: str,
    wall: bool,
    loss: RobustLoss = RobustLoss.TRADES,
) -> float:
    """One evaluation of the search loss (``loss``; HYDRA's default, TRADES) and its backward on a crafted batch.

    The network is set up as the search sets it up (unstructured scores at ratio 0.9, BatchNorm in
    train mode, scores and BatchNorm's affine parameters trained); the mean over the batches.
    """
    model = model.to(device).train()
    score_set = attach_unstructured(model, 0.9, "local", None)
    score_set.refresh()
    scores = list(score_set.parameters())
    trained = scores + batchnorm_affine_parameters(model, scores)
    for p in model.parameters():
        p.requires_grad_(any(p is t for t in trained))
    clock = time.perf_counter if wall else time.process_time
    seconds = []
    batches = list(make_loader(data, batch, shuffle=False))
    for index, (x, y) in enumerate([batches[0], *batches]):  # the first pass warms up, untimed
        x, y = x.to(device), y.to(device)
        with parametrize.cached():
            x_adv = craft_adversarial(model, x, y, threat, loss)
        with frozen_batchnorm_statistics(model):
            start = clock()
            loss_on_adversarial(model, x, y, x_adv, loss).backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if index > 0:
                seconds.append(clock() - start)
    return 1000 * statistics.fmean(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="mask-search steps per epoch (a multiple of every k)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ascent-every", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--search-loss",
        choices=[loss.value for loss in RobustLoss],
        default=RobustLoss.TRADES.value,
        help="the search's robust loss for both methods (default TRADES, HYDRA's; pgd_at: one forward pass per loss)",
    )
    parser.add_argument("--wall", action="store_true", help="wall seconds instead of this process's CPU seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the docs' table (benchmarks/results/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loss = RobustLoss(args.search_loss)
    hydra: dict[str, object] = {"search_loss": loss.value}
    variants: dict[str, dict[str, object]] = {"hydra": hydra} | {
        f"s2ap k={k}": {"gamma": 0.1, "warmup_epochs": 0, "ascent_every": k, "search_loss": loss.value}
        for k in args.ascent_every
    }
    clock = "wall" if args.wall else "CPU"
    print(
        f"{'model':<11} "
        + " ".join(f"{v + ' ms':>13}" for v in variants)
        + f"{'pass ms':>10}   ratios to hydra ({clock})"
    )
    rows: list[list[object]] = []  # the docs' table: S2AP's step time over HYDRA's, per ascent_every
    for name in args.models:
        channels, size, threat = SETUPS[name]
        torch.manual_seed(0)
        if name == "digits_cnn":
            digits = build_dataset("digits", None, size)
            data = TensorDataset(*(t[: args.batch * args.steps] for t in digits.train.tensors))  # type: ignore[attr-defined]
            mean, std = digits.mean, digits.std
        else:
            n = args.batch * args.steps
            data = TensorDataset(torch.rand(n, channels, size, size), torch.randint(0, 10, (n,)))
            mean, std = (0.5,) * channels, (0.25,) * channels
        dense = build_model(name, 10, channels, mean, std)
        times: dict[str, list[float]] = {v: [] for v in [*variants, "pass"]}
        for _ in range(args.rounds):
            for variant, config in variants.items():
                model = build_model(name, 10, channels, mean, std)
                model.load_state_dict(dense.state_dict())
                times[variant].append(
                    step_ms(model.to(args.device), data, threat, args.batch, args.device, args.wall, **config)
                )
            model = build_model(name, 10, channels, mean, std)
            model.load_state_dict(dense.state_dict())
            times["pass"].append(extra_pass_ms(model, data, threat, args.batch, args.device, args.wall, loss))
        medians = {v: statistics.median(t) for v, t in times.items()}
        ratios = " ".join(f"{v}: {medians[v] / medians['hydra']:.3f}" for v in variants if v != "hydra")
        limit = (medians["hydra"] + medians["pass"]) / medians["hydra"]
        print(
            f"{name:<11} " + " ".join(f"{medians[v]:>13.1f}" for v in variants) + f"{medians['pass']:>10.1f}"
            f"   {ratios}  limit (k=1): {limit:.3f}",
            flush=True,
        )
        label = f"{SHOWN[name]}, PGD-{threat.steps}, batch {args.batch}, {loss.value} search loss"
        rows.append([label, *(medians[f"s2ap k={k}"] / medians["hydra"] for k in args.ascent_every), limit, clock])
    if args.json is not None:
        columns = [text_column("model, attack")]
        columns += [column(f"S2AP `ascent_every: {k}`", "{:.2f}") for k in args.ascent_every]
        columns += [column("limit (`ascent_every: 1`)", "{:.2f}"), text_column("time")]
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps(results_file(provenance(), {"main": table(columns, rows)}, setup=setup), indent=2)
        )


if __name__ == "__main__":
    main()
