"""Adversarial-training throughput on CPU: images per CPU-second of PGD-AT training steps, today's step
against each speed-up, side by side in one run; then a short fixed-budget pretraining of ``fmnist_cnn``
on a Fashion-MNIST subset, FGSM-RS against PGD-7: images per CPU-second and validation PGD accuracy.

    python benchmarks/at_throughput.py --quick     # under 3 minutes on one idle core (no compile, no
                                                   # emulated bf16, 1 epoch of 1,024 images: indicative only)
    python benchmarks/at_throughput.py             # the README's figures

Part 1 (throughput), per model (``fmnist_cnn``: batch 128 of 28x28 Fashion-MNIST, eps 0.1, step 0.025;
``digits_cnn``: batch 32 of 16x16 digits, eps 0.2, step 0.05; PGD-7 for both), every variant trains
its own copy of the same initial network on the same batches with the same random starts, and the
variants take turns (interleaved repetitions), so a machine whose load drifts slows them alike:

- ``today``: the training step before this benchmark's changes (a new tensor per attack step and a
  third forward pass for the training accuracy), kept here as the reference;
- ``library``: :func:`robprune_deploy.training.trainer.train_step` (attack iterates updated in place,
  the accuracy read off the loss's logits); the same weights as ``today`` bit for bit (checked);
- ``channels_last``: the library step in the NHWC layout (``pretrain.channels_last``);
- ``compile``: the library step on ``torch.compile(model)``; its compile time (CPU seconds, in this
  process: inductor's compile workers are turned off, its cache is a fresh folder) is reported, and a
  failed compile is reported instead of a figure;
- ``bf16``: the library step under ``torch.autocast("cpu", torch.bfloat16)`` (fast only where the CPU
  has bf16 instructions: AVX512-BF16 or AMX; the table says whether this one has);
- ``eval_bn_attack``: the attack's passes in eval mode (BatchNorm's running statistics instead of batch
  statistics); another algorithm than PGD-AT's reference (which attacks in train mode), measured only;
- ``fgsm_rs`` and ``fgsm_rs+channels_last``: one FGSM-RS pass instead of PGD-7 (``pretrain.loss: fgsm_rs``).

The figure is images per CPU-second (``time.process_time``; wall seconds beside it), median over the
repetitions, and its ratio to ``today``.

Part 2 (pretraining), per seed: ``adversarial_train`` of ``fmnist_cnn`` for the same epochs on the same
training subset with PGD-7 (the library's step), FGSM-RS with its collapse guard, and FGSM-RS in the
channels-last layout; then FGSM-RS in the channels-last layout for ``--fast-epochs`` (default twice the
epochs: about half of PGD-7's CPU time), the comparison at equal accuracy rather than equal
epochs (a cheaper step buys more epochs for the same CPU time); then clean and PGD-10 accuracy on a
fixed validation subset (held out of the training split as the pipeline does). The bf16 check
attacks the PGD-7 model with PGD-10 under bf16 autocast and in fp32 and reports both accuracies.

Results go to ``--json`` (default benchmarks/results/at_throughput.json): the project's results
format (provenance: command, commit, date, hardware and package versions; the docs' tables), with
every measurement beside it.
"""

from __future__ import annotations

import os
import tempfile

# Before torch is imported: compile in this process (so CPU time counts it) into an empty cache.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="at_throughput_inductor_"))

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from provenance import provenance
from result_tables import column, results_file, table, text_column
from torch import nn
from torch.utils.data import Subset

from robprune_deploy.attacks import RobustLoss, ThreatModel, loss_and_adversarial_logits, pgd
from robprune_deploy.data import build_dataset, make_loader, seeded_subset, validation_split
from robprune_deploy.models import build_model
from robprune_deploy.training import (
    CollapseGuard,
    FastATPlan,
    TrainingPlan,
    adversarial_train,
    evaluate_robustness,
)
from robprune_deploy.training.trainer import train_step

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "at_throughput.json"
FMNIST_ROOT = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Setup:
    """A model of the project with its recipe's data, batch and threat (PGD-7 here for both)."""

    model: str
    data: str
    batch: int
    threat: ThreatModel


SETUPS = {
    "fmnist_cnn": Setup("fmnist_cnn", "fashion_mnist", 128, ThreatModel(0.1, 0.025, 7)),
    "digits_cnn": Setup("digits_cnn", "digits", 32, ThreatModel(0.2, 0.05, 7)),
}
VARIANTS = (
    "today",
    "library",
    "channels_last",
    "compile",
    "bf16",
    "eval_bn_attack",
    "fgsm_rs",
    "fgsm_rs+channels_last",
)


def textbook_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """The attack loop before this change: a new tensor for every iterate."""
    x = x.detach()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        x_adv = (x + torch.empty_like(x).uniform_(-threat.eps, threat.eps)).clamp(0.0, 1.0)
        for _ in range(threat.steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv).float(), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + threat.step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - threat.eps), x + threat.eps).clamp(0.0, 1.0)
    finally:
        for p in params:
            p.requires_grad_(True)
    return x_adv.detach()


def today_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel
) -> None:
    """The PGD-AT step before this change, with its third forward pass for the training accuracy."""
    x_adv = textbook_pgd(model, x, y, threat)
    loss = F.cross_entropy(model(x_adv), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        int((model(x_adv).argmax(1) == y).sum())


def eval_bn_attack_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel
) -> None:
    """The library's step with the attack's passes in eval mode (BatchNorm's running statistics)."""
    model.eval()
    x_adv = pgd(model, x, y, threat)
    model.train()
    loss, logits = loss_and_adversarial_logits(model, x, y, x_adv, RobustLoss.PGD_AT)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    int((logits.detach().argmax(1) == y).sum())


def bf16_native() -> bool:
    """Whether this CPU has bf16 instructions oneDNN uses (otherwise bf16 runs emulated, slowly)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


class Trainee:
    """One variant's network, optimizer and step."""

    def __init__(self, variant: str, initial: nn.Module, setup: Setup) -> None:
        self.variant = variant
        self.model = copy.deepcopy(initial)
        self.channels_last = variant.endswith("channels_last")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        fast = FastATPlan() if variant.startswith("fgsm_rs") else None
        self.plan = TrainingPlan(epochs=1, lr=0.01, fast=fast, channels_last=self.channels_last)
        self.threat = fast.threat(setup.threat) if fast is not None else setup.threat
        self.net: nn.Module = self.model
        self.compile_seconds: float | None = None

    def compile(self) -> None:
        self.net = torch.compile(self.model)  # type: ignore[assignment]

    def steps(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for x, y in batches:
            self.step(x, y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.net.train()
        if self.variant == "today":
            today_step(self.net, self.optimizer, x, y, self.threat)
            return
        if self.variant == "eval_bn_attack":
            eval_bn_attack_step(self.net, self.optimizer, x, y, self.threat)
            return
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.variant == "bf16" else contextlib.nullcontext()
        with autocast:
            train_step(self.net, self.net, self.optimizer, x, y, self.plan, self.threat, 0)


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """``(CPU seconds, wall seconds)`` of ``action``."""
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.process_time() - cpu, time.perf_counter() - wall


def dataset(name: str, root: Path | None) -> Any:
    return build_dataset(name, root if name == "fashion_mnist" else None, None, augment=False)


def throughput(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Part 1 for one model: every variant's images per CPU-second, interleaved."""
    bundle = dataset(setup.data, args.data_root)
    loader = make_loader(bundle.train, setup.batch, shuffle=True, seed=0)
    batches = [batch for _, batch in zip(range(args.steps), loader, strict=False)]
    torch.manual_seed(0)
    initial = build_model(setup.model, bundle.num_classes, 1, bundle.mean, bundle.std)
    variants = [v for v in VARIANTS if v in args.variants]
    trainees = {v: Trainee(v, initial, setup) for v in variants}
    failures: dict[str, str] = {}
    if "compile" in trainees:
        trainee = trainees["compile"]
        try:
            trainee.compile()
            # The first steps compile (the attack's graph with frozen weights, then the loss's); the
            # eager library step is the fallback a failed compile leaves.
            cpu, _ = timed(lambda: trainee.steps(batches[:2]))
            trainee.compile_seconds = cpu
        except Exception as error:  # any compiler failure: report it, measure the rest
            failures["compile"] = f"compile failed ({type(error).__name__}: {str(error).splitlines()[:1]})"
            del trainees["compile"]
    for variant, trainee in trainees.items():  # one untimed step each: first-call allocations, oneDNN's kernels
        if variant != "compile":
            torch.manual_seed(-1 % 2**31)
            trainee.step(*batches[0])
    cpu_times: dict[str, list[float]] = {v: [] for v in trainees}
    wall_times: dict[str, list[float]] = {v: [] for v in trainees}
    for repetition in range(args.repeats):
        for variant, trainee in trainees.items():
            torch.manual_seed(repetition)  # the same random starts for every variant
            cpu, wall = timed(lambda t=trainee: t.steps(batches))  # type: ignore[misc]
            cpu_times[variant].append(cpu)
            wall_times[variant].append(wall)
    images = setup.batch * len(batches)
    base = images / statistics.median(cpu_times["today"]) if "today" in cpu_times else None
    rows: dict[str, Any] = {}
    for variant in variants:
        if variant in failures:
            rows[variant] = {"error": failures[variant]}
            continue
        rate = images / statistics.median(cpu_times[variant])
        rows[variant] = {
            "images_per_cpu_second": rate,
            "images_per_wall_second": images / statistics.median(wall_times[variant]),
            "ratio_to_today": rate / base if base else None,
            "cpu_seconds": cpu_times[variant],
            "wall_seconds": wall_times[variant],
        }
        if trainees[variant].compile_seconds is not None:
            rows[variant]["compile_cpu_seconds"] = trainees[variant].compile_seconds
    if "today" in trainees and "library" in trainees:
        rows["library"]["weights_equal_today"] = _same_weights(trainees["today"].model, trainees["library"].model)
    if "library" in trainees:
        for variant in ("channels_last", "compile", "bf16"):
            if variant in trainees:
                rows[variant]["max_weight_difference_to_library"] = _weight_difference(
                    trainees["library"].model, trainees[variant].model
                )
    return {"batch": setup.batch, "steps_per_repetition": len(batches), "threat": vars(setup.threat), "variants": rows}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether every parameter is equal bit for bit (BatchNorm's running statistics are not parameters)."""
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _weight_difference(a: nn.Module, b: nn.Module) -> float:
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True))


class TimedGuard(CollapseGuard):
    """The library's guard, counting the CPU seconds its measurements take."""

    cpu_seconds: float = 0.0

    def measure(self, model: nn.Module) -> tuple[float, float]:
        start = time.process_time()
        try:
            return super().measure(model)
        finally:
            self.cpu_seconds += time.process_time() - start


LONG = "fgsm_rs+channels_last_longer"
"""The pretraining arm that trains FGSM-RS for ``--fast-epochs``: PGD-7's accuracy at less CPU time."""


def pretraining(args: argparse.Namespace) -> dict[str, Any]:
    """Part 2: PGD-7 against FGSM-RS (guarded) pretraining of fmnist_cnn, same epochs, same subset."""
    setup = SETUPS["fmnist_cnn"]
    bundle = build_dataset("fashion_mnist", args.data_root, None, augment=True)
    train_idx, val_idx = validation_split(len(bundle.train), 5000)  # type: ignore[arg-type]  # the recipes' split
    train = seeded_subset(Subset(bundle.train, train_idx), args.train_images, 0)
    val = seeded_subset(Subset(bundle.unaugmented_train, val_idx), args.val_images, 0)
    val_batches = list(make_loader(val, 500, shuffle=False))
    guard_x, guard_y = next(
        iter(make_loader(seeded_subset(val, args.guard_images, 1), args.guard_images, shuffle=False))
    )
    val_threat = setup.threat.with_steps(10)
    epochs = {"pgd7": args.epochs, "fgsm_rs": args.epochs, "fgsm_rs+channels_last": args.epochs, LONG: args.fast_epochs}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in epochs}
    models: dict[str, nn.Module] = {}
    for seed in range(args.seeds):
        for name in runs:
            torch.manual_seed(seed)
            model = build_model("fmnist_cnn", bundle.num_classes, 1, bundle.mean, bundle.std)
            fast = None if name == "pgd7" else FastATPlan()
            plan = TrainingPlan(
                epochs=epochs[name],
                lr=0.05,
                fast=fast,
                channels_last="channels_last" in name,
                eps_warmup_epochs=0,
            )
            guard = TimedGuard((guard_x, guard_y), val_threat, seed=seed) if fast is not None else None

            def loader(epoch: int, seed: int = seed) -> Any:
                return make_loader(train, setup.batch, shuffle=True, seed=seed, epoch=epoch)

            def run_training(
                model: nn.Module = model,
                plan: TrainingPlan = plan,
                guard: CollapseGuard | None = guard,
                seed: int = seed,
            ) -> None:
                adversarial_train(
                    model, plan, setup.threat, loader, device=CPU, seed=seed, show_progress=False, guard=guard
                )

            cpu, wall = timed(run_training)
            figures = evaluate_robustness(model, val_batches, CPU, val_threat, seed=0)
            images = epochs[name] * len(train)  # type: ignore[arg-type]
            runs[name].append(
                {
                    "seed": seed,
                    "epochs": epochs[name],
                    "cpu_seconds": cpu,
                    "wall_seconds": wall,
                    "images_per_cpu_second": images / cpu,
                    "guard_cpu_seconds": guard.cpu_seconds if guard is not None else 0.0,
                    "val_clean_acc": figures["clean_acc"],
                    "val_pgd10_acc": figures["pgd_acc"],
                    **({"collapsed_epoch": guard.collapsed_epoch} if guard is not None else {}),
                }
            )
            models.setdefault(name, model)
            print(
                f"  pretrain {name:<22} seed {seed}: {images / cpu:7.1f} img/CPU-s, clean {figures['clean_acc']:.3f}, "
                f"PGD-10 {figures['pgd_acc']:.3f}",
                flush=True,
            )
    summary = {}
    for name, rows in runs.items():
        summary[name] = {
            "epochs": rows[0]["epochs"],
            "cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in rows),
            "images_per_cpu_second": statistics.fmean(r["images_per_cpu_second"] for r in rows),
            "guard_share_of_cpu": statistics.fmean(r["guard_cpu_seconds"] / r["cpu_seconds"] for r in rows),
            "val_clean_acc": statistics.fmean(r["val_clean_acc"] for r in rows),
            "val_pgd10_acc": statistics.fmean(r["val_pgd10_acc"] for r in rows),
        }
    for name in summary:
        summary[name]["speed_ratio_to_pgd7"] = (
            summary[name]["images_per_cpu_second"] / summary["pgd7"]["images_per_cpu_second"]
        )
        summary[name]["cpu_ratio_to_pgd7"] = summary[name]["cpu_seconds"] / summary["pgd7"]["cpu_seconds"]
        summary[name]["pgd10_points_vs_pgd7"] = 100 * (
            summary[name]["val_pgd10_acc"] - summary["pgd7"]["val_pgd10_acc"]
        )
    return {
        "train_images": len(train),  # type: ignore[arg-type]
        "val_images": len(val),  # type: ignore[arg-type]
        "epochs": args.epochs,
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
        "bf16_attack_check": (
            bf16_attack_check(models["pgd7"], val_batches[0], val_threat) if "bf16" in args.variants else None
        ),
    }


def bf16_attack_check(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], threat: ThreatModel
) -> dict[str, Any]:
    """PGD-10 accuracy of one model with the attack in fp32 and under CPU bf16 autocast (128 images)."""
    x, y = batch[0][:128], batch[1][:128]
    model.eval()
    results: dict[str, Any] = {"native_bf16": bf16_native()}
    for name, context in (("fp32", contextlib.nullcontext()), ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        torch.manual_seed(0)
        start = time.process_time()
        with context:
            x_adv = pgd(model, x, y, threat)
        results[f"{name}_attack_cpu_seconds"] = time.process_time() - start
        with torch.no_grad():
            results[f"pgd10_acc_{name}_attack"] = float((model(x_adv).argmax(1) == y).float().mean())
    return results


def measurement_provenance() -> dict[str, Any]:
    """The project's provenance record, with what bears on these figures: bf16 instructions, the load."""
    record = provenance()
    record["hardware"]["bf16_instructions"] = bf16_native()
    record["hardware"]["load_average_at_start"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return record


LABELS = {
    "today": "the step before (PGD-7)",
    "library": "library step (the same weights bit for bit)",
    "channels_last": "`channels_last: true`",
    "compile": "`torch.compile` of the model",
    "bf16": "bf16 autocast",
    "eval_bn_attack": "attack in eval mode (not adopted)",
    "fgsm_rs": "`pretrain.loss: fgsm_rs`",
    "fgsm_rs+channels_last": "`fgsm_rs` and `channels_last`",
}


def results_tables(report: dict[str, Any]) -> dict[str, Any]:
    """The docs' tables: throughput per variant and model, and the pretraining comparison."""
    tables: dict[str, Any] = {}
    models = list(report["throughput"])
    if models:
        columns = [text_column("variant")]
        for model in models:
            columns += [column(f"`{model}` images/CPU-s", "{:.0f}"), column(f"`{model}` x before", "{:.2f}")]
        variants = [v for v in VARIANTS if any(v in report["throughput"][m]["variants"] for m in models)]
        rows = []
        for variant in variants:
            row: list[Any] = [LABELS[variant]]
            for model in models:
                figures = report["throughput"][model]["variants"].get(variant, {})
                row += [figures.get("images_per_cpu_second"), figures.get("ratio_to_today")]
            rows.append(row)
        tables["throughput"] = table(columns, rows)
    if report.get("pretraining"):
        summary = report["pretraining"]["summary"]
        names = {
            "pgd7": "PGD-7",
            "fgsm_rs": "FGSM-RS (guarded)",
            "fgsm_rs+channels_last": "FGSM-RS, `channels_last`",
            LONG: "FGSM-RS, `channels_last`, longer",
        }
        columns = [
            text_column("pretraining"),
            column("epochs"),
            column("images/CPU-s", "{:.1f}"),
            column("x PGD-7", "{:.2f}"),
            column("CPU time x PGD-7", "{:.2f}"),
            column("val clean", "{:.1f}"),
            column("val PGD-10", "{:.1f}"),
            column("points vs PGD-7", "{:+.1f}"),
            column("guard's CPU share", "{:.0f}%"),
        ]
        rows = [
            [
                names[name],
                row.get("epochs"),
                row["images_per_cpu_second"],
                row["speed_ratio_to_pgd7"],
                row.get("cpu_ratio_to_pgd7"),
                100 * row["val_clean_acc"],
                100 * row["val_pgd10_acc"],
                row["pgd10_points_vs_pgd7"],
                100 * row["guard_share_of_cpu"],
            ]
            for name, row in summary.items()
        ]
        tables["pretraining"] = table(columns, rows)
    return tables


def print_tables(report: dict[str, Any]) -> None:
    for model, result in report["throughput"].items():
        steps, repeats = result["steps_per_repetition"], report["arguments"]["repeats"]
        print(f"\n{model}: batch {result['batch']}, PGD-{result['threat']['steps']} (FGSM-RS: 1 step), "
              f"{steps} step(s) x {repeats} interleaved repetitions")  # fmt: skip
        print(f"  {'variant':<24}{'img/CPU-s':>11}{'img/wall-s':>12}{'x today':>9}  note")
        for variant, row in result["variants"].items():
            if "error" in row:
                print(f"  {variant:<24}{'-':>11}{'-':>12}{'-':>9}  {row['error']}")
                continue
            notes = []
            if "weights_equal_today" in row:
                notes.append(f"weights equal today's: {row['weights_equal_today']}")
            if "compile_cpu_seconds" in row:
                notes.append(f"compile {row['compile_cpu_seconds']:.1f} CPU-s")
            if "max_weight_difference_to_library" in row:
                notes.append(f"max |w - library w| {row['max_weight_difference_to_library']:.1e}")
            if variant == "bf16" and not report["provenance"]["hardware"]["bf16_instructions"]:
                notes.append("no bf16 instructions: emulated")
            ratio = f"{row['ratio_to_today']:.2f}" if row["ratio_to_today"] else "-"
            print(f"  {variant:<24}{row['images_per_cpu_second']:>11.1f}{row['images_per_wall_second']:>12.1f}"
                  f"{ratio:>9}  {'; '.join(notes)}")  # fmt: skip
    if "pretraining" in report:
        part = report["pretraining"]
        print(f"\nfmnist_cnn pretraining: {part['train_images']} training images x {part['epochs']} epochs, "
              f"{part['seeds']} seed(s); validation: {part['val_images']} images, PGD-10")  # fmt: skip
        print(f"  {'run':<30}{'img/CPU-s':>11}{'x PGD-7':>9}{'clean':>8}{'PGD-10':>8}{'points':>8}{'guard':>8}")
        for name, row in part["summary"].items():
            accuracy = f"{row['val_clean_acc']:>8.3f}{row['val_pgd10_acc']:>8.3f}{row['pgd10_points_vs_pgd7']:>+8.1f}"
            guard = f"{100 * row['guard_share_of_cpu']:>7.0f}%"
            print(
                f"  {name:<30}{row['images_per_cpu_second']:>11.1f}{row['speed_ratio_to_pgd7']:>9.2f}{accuracy}{guard}"
            )
        check = part["bf16_attack_check"]
        if check is None:
            return
        print(f"  bf16 attack check (PGD-7 model, 128 images): PGD-10 accuracy {check['pgd10_acc_fp32_attack']:.3f} "
              f"(fp32 attack), {check['pgd10_acc_bf16_attack']:.3f} (bf16 attack); CPU-s "
              f"{check['fp32_attack_cpu_seconds']:.1f} vs {check['bf16_attack_cpu_seconds']:.1f} "
              f"(bf16 instructions: {check['native_bf16']})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (under 3 minutes on one idle core)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--models", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (default 5; quick 3)")
    parser.add_argument("--steps", type=int, help="optimizer steps per repetition (default 4; quick 1)")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default 5; quick 1)")
    parser.add_argument("--train-images", type=int, help="pretraining subset (default 10000; quick 1024)")
    parser.add_argument("--val-images", type=int, help="validation subset (default 1000; quick 256)")
    parser.add_argument("--seeds", type=int, help="pretraining seeds (default 2; quick 1)")
    parser.add_argument("--fast-epochs", type=int, help="epochs of the longer FGSM-RS arm (default twice --epochs)")
    parser.add_argument("--guard-images", type=int, help="FGSM-RS guard batch (default 256, the recipe's; quick 128)")
    parser.add_argument("--no-pretraining", action="store_true", help="part 1 only")
    parser.add_argument("--no-throughput", action="store_true", help="part 2 only")
    parser.add_argument("--data-root", type=Path, default=FMNIST_ROOT, help="the Fashion-MNIST IDX files")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    quick = {
        "repeats": 3,
        "steps": 1,
        "epochs": 1,
        "train_images": 1024,
        "val_images": 256,
        "seeds": 1,
        "guard_images": 128,
    }
    full = {
        "repeats": 5,
        "steps": 4,
        "epochs": 5,
        "train_images": 10000,
        "val_images": 1000,
        "seeds": 2,
        "guard_images": 256,
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.fast_epochs is None:
        args.fast_epochs = 2 * args.epochs
    if args.quick and "--variants" not in sys.argv:
        # Not quick: compiling takes minutes, and emulated bf16 runs about 10x slower than fp32.
        args.variants = [v for v in args.variants if v != "compile" and (v != "bf16" or bf16_native())]
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"provenance": measurement_provenance(), "mode": "quick" if args.quick else "full"}
    report["arguments"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
    report["threads"] = torch.get_num_threads()
    started = time.perf_counter()
    report["throughput"] = {}
    for name in [] if args.no_throughput else args.models:
        print(f"measuring {name} ...", flush=True)
        report["throughput"][name] = throughput(SETUPS[name], args)
    if not args.no_pretraining:
        print("pretraining fmnist_cnn ...", flush=True)
        report["pretraining"] = pretraining(args)
    report["wall_seconds"] = time.perf_counter() - started
    report = results_file(report.pop("provenance"), results_tables(report), **report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)
    print(f"\n{report['wall_seconds']:.0f} s wall; written: {args.json}")


if __name__ == "__main__":
    main()
