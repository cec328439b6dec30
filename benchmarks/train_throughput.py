"""Adversarial training throughput (images/s): HYDRA and S2AP mask search and PGD-AT fine-tuning on
ResNet18 with 32x32 synthetic batches; single process vs 2 processes (gloo, CPU) and, on a GPU,
fp32 vs bf16 attack passes.

    python benchmarks/train_throughput.py --steps 3                     # single process
    torchrun --nproc_per_node 2 benchmarks/train_throughput.py --steps 3 # 2 processes (run both, compare)
    python benchmarks/train_throughput.py --device cuda --bf16 both      # on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel, distributed
from robprune_deploy.data import make_loader
from robprune_deploy.models import build_model
from robprune_deploy.training import TrainingPlan, adversarial_train


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
        cls(cls.Config.model_validate(config)).apply(model, context)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", choices=["off", "on", "both"], default="off")
    args = parser.parse_args()
    env, device = distributed.initialize(torch.device(args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.bf16]
    results = {}
    for kind in ("hydra", "s2ap", "finetune"):
        for bf16 in modes:
            results[(kind, bf16)] = images_per_second(kind, device, args.batch, args.steps, bf16, args.model)
    if env.is_main:
        print(f"world size {env.world_size}, device {device}, model {args.model}, batch {args.batch}/rank")
        for (kind, bf16), value in results.items():
            print(f"{kind:<9} {'bf16' if bf16 else 'fp32':<5} {value:9.1f} images/s")
        if len(modes) == 2:
            for kind in ("hydra", "s2ap", "finetune"):
                print(f"{kind:<9} bf16/fp32 {results[(kind, True)] / results[(kind, False)]:.2f}")
        print(f"s2ap/hydra step-time ratio {results[('hydra', modes[0])] / results[('s2ap', modes[0])]:.2f}")
    distributed.shutdown()


if __name__ == "__main__":
    main()
