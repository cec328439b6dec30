"""MRPF vs the uniform L1-filter baseline vs NNCF magnitude pruning on one pretrained digits model.

Same pretrained model, same fine-tuning budget; MRPF and l1_filter remove the given fraction of
MACs physically; nncf_magnitude masks the same fraction of weights (unstructured, no speed-up).

    python benchmarks/mrpf_vs_uniform.py                   # 3 seeds at 50% and 75% MACs
    python benchmarks/mrpf_vs_uniform.py --seeds 1 --finetune-epochs 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from digits_bench import digits, finetune_and_evaluate, pretrained, prune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_cache"))
    parser.add_argument("--model", default="digits_cnn", choices=["digits_cnn", "digits_resnet"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.cache.mkdir(parents=True, exist_ok=True)
    data = digits()
    base = pretrained(data, args.pretrain_epochs, args.cache, args.model)
    print(f"{'ratio':>5} {'algorithm':<15} {'clean':>6} {'pgd20':>6} {'pgd sd':>6} {'params':>8} {'MACs':>9}")
    for ratio in args.ratios:
        means = {}
        for algo in ("mrpf", "l1_filter", "nncf_magnitude"):
            outcomes = []
            for seed in range(args.seeds):
                config = {"calibration_size": 256} if algo == "mrpf" else {}
                result, _ = prune(algo, base, data, ratio, seed, **config)
                outcomes.append(finetune_and_evaluate(result, data, args.finetune_epochs, seed))
            means[algo] = (
                statistics.mean(o.clean for o in outcomes),
                statistics.mean(o.pgd for o in outcomes),
                statistics.pstdev(o.pgd for o in outcomes),
                outcomes[0].params,
                outcomes[0].macs,
            )
            c, p, sd, n, m = means[algo]
            print(f"{ratio:>5.2f} {algo:<15} {c:>6.3f} {p:>6.3f} {sd:>6.3f} {n:>8d} {m:>9d}", flush=True)
        for other in ("l1_filter", "nncf_magnitude"):
            print(
                f"{ratio:>5.2f} mrpf - {other:<15} clean {means['mrpf'][0] - means[other][0]:+.3f} "
                f"pgd20 {means['mrpf'][1] - means[other][1]:+.3f}"
            )


if __name__ == "__main__":
    main()
