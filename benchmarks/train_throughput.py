"""Adversarial training throughput (images/s): HYDRA and S2AP mask search and PGD-AT fine-tuning on
ResNet18 with 32x32 synthetic batches; single process vs 2 processes (gloo, CPU) and, on a GPU,
fp32 vs bf16 attack passes.

    python benchmarks/train_throughput.py --steps 3                 # 1 vs 2 processes (gloo), one table
    python benchmarks/train_throughput.py --device cuda --bf16 both --processes 1   # fp32 vs bf16 on a GPU

Each process runs ``--threads`` torch threads (default 1), so 2 processes use 2 cores where 1
process uses one: the ratio is the data-parallel scaling, not a thread-count effect.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel, distributed
from robprune_deploy.data import make_loader
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, adversarial_train

KINDS = ("hydra", "s2ap", "finetune")


def images_per_second(kind: str, device: torch.device, batch: int, steps: int, bf16: bool, model_name: str) -> float:
    env = distributed.current()
    data = TensorDataset(
        torch.rand(batch * steps * env.world_size, 3, 32, 32), torch.randint(0, 10, (batch * steps * env.world_size,))
    )
    threat = ThreatModel(8 / 255, 2 / 255, 10, bf16=bf16)
    model = build_model(model_name, 10, 3, (0.5,) * 3, (0.25,) * 3).to(device)

    def loader(epoch: int) -> torch.utils.data.DataLoader:
        return make_loader(data, batch, shuffle=True, epoch=epoch, distributed=env.enabled)

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if kind == "finetune":
        adversarial_train(model, TrainingPlan(epochs=1, lr=0.01), threat, loader, device=device, show_progress=False)
    else:
        config = {"epochs": 1, **({"gamma": 0.1, "warmup_epochs": 0} if kind == "s2ap" else {})}
        cls = ALGORITHMS.get(kind)
        context = PruningContext(
            train_data=loader(0),
            epoch_loader=loader,
            ratio=0.9,
            threat=threat,
            example_inputs=data.tensors[0][:1].to(device),
            device=device,
        )
        result = cls(cls.Config.model_validate(config)).apply(model, context)
        # The search's own per-step clock: excludes score set-up and the end-of-epoch sharpness probe.
        return batch * env.world_size / result.extra["epochs"][0]["step_seconds_median"]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict[str, float] | None:
    """Images/s of every (stage, precision) in this process group; None on ranks other than 0."""
    env, device = distributed.initialize(torch.device(args.device))
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.bf16]
    results = {}
    for kind in KINDS:
        for bf16 in modes:
            value = images_per_second(kind, device, args.batch, args.steps, bf16, args.model)
            results[f"{kind} {'bf16' if bf16 else 'fp32'}"] = value
    distributed.shutdown()
    return results if env.is_main else None


def in_processes(args: argparse.Namespace, processes: int) -> dict[str, float]:
    """The same measurement under ``torchrun --nproc_per_node processes`` (gloo on CPU, nccl on GPU)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            __file__, "--device", args.device, "--model", args.model, "--batch", str(args.batch),
            "--steps", str(args.steps), "--bf16", args.bf16, "--threads", str(args.threads),
            "--processes", "1", "--json", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32, help="per process")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per process")
    parser.add_argument("--bf16", choices=["off", "on", "both"], default="off")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--processes", type=int, default=2, help="also measure under torchrun with this many")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # where a torchrun child reports
    args = parser.parse_args()
    if os.environ.get("WORLD_SIZE"):  # a torchrun child of in_processes()
        results = measure(args)
        if results is not None and args.json:
            args.json.write_text(json.dumps(results))
        return
    single = measure(args)
    assert single is not None
    columns = {"1 process": single}
    if args.processes > 1:
        columns[f"{args.processes} processes"] = in_processes(args, args.processes)
    print(f"{args.model}, device {args.device}, batch {args.batch} per process, {args.threads} thread(s) per process")
    print(f"{'stage':<15}" + "".join(f"{name + ' img/s':>20}" for name in columns) + "   ratio")
    for key, value in single.items():
        row = f"{key:<15}" + "".join(f"{c[key]:>20.1f}" for c in columns.values())
        if len(columns) > 1:
            row += f"   x{list(columns.values())[-1][key] / value:.2f}"
        print(row)
    for precision in ("fp32", "bf16"):
        if f"hydra {precision}" in single:
            ratio = single[f"hydra {precision}"] / single[f"s2ap {precision}"]
            print(f"s2ap/hydra step-time ratio ({precision}, 1 process): {ratio:.3f}")
    if "hydra bf16" in single and "hydra fp32" in single:
        for kind in KINDS:
            print(f"{kind:<9} bf16/fp32 throughput {single[f'{kind} bf16'] / single[f'{kind} fp32']:.2f}")


if __name__ == "__main__":
    main()
