"""S2AP vs HYDRA side by side on one pretrained digits model.

For each sparsity and seed: the same pretrained model, the same mask-search budget and the same
fine-tuning; prints clean / PGD-20 accuracy after fine-tuning, the final score-space sharpness
(measured identically for both), mask flips over the last epochs, mask-search time per step, and
the S2AP/HYDRA ratios.

    python benchmarks/s2ap_vs_hydra.py                 # the full grid (3 seeds; tens of minutes on 2 cores)
    python benchmarks/s2ap_vs_hydra.py --seeds 1 --search-epochs 4 --finetune-epochs 2
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
    parser.add_argument("--search-epochs", type=int, default=8)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--unstructured", type=float, nargs="*", default=[0.9, 0.95, 0.99])
    parser.add_argument("--channel", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_cache"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.cache.mkdir(parents=True, exist_ok=True)
    data = digits()
    base = pretrained(data, args.pretrain_epochs, args.cache)
    settings = [("unstructured", r) for r in args.unstructured] + [("channel", r) for r in args.channel]
    rows = []
    names = ("granularity", "ratio", "algo", "clean", "pgd20", "sharp", "flips", "ms/step")
    header = f"{names[0]:<12} {names[1]:>5} {names[2]:<5} " + " ".join(f"{n:>8}" for n in names[3:])
    print(header)
    for granularity, ratio in settings:
        per_algo: dict[str, list[tuple[float, float, float, float, float]]] = {"hydra": [], "s2ap": []}
        for seed in range(args.seeds):
            for algo in ("hydra", "s2ap"):
                config: dict[str, object] = {"granularity": granularity, "epochs": args.search_epochs}
                if algo == "s2ap":
                    config.update(gamma=args.gamma, warmup_epochs=args.warmup_epochs)
                result, _ = prune(algo, base, data, ratio, seed, **config)
                epochs = result.extra["epochs"]
                tail = epochs[-max(1, len(epochs) // 4) :]
                step_ms = 1000 * statistics.mean(e["step_seconds"] for e in epochs[args.warmup_epochs :] or epochs)
                outcome = finetune_and_evaluate(result, data, args.finetune_epochs, seed)
                per_algo[algo].append(
                    (
                        outcome.clean,
                        outcome.pgd,
                        epochs[-1]["sharpness"],
                        statistics.mean(e["mask_flips"] for e in tail),
                        step_ms,
                    )
                )
        for algo, values in per_algo.items():
            mean = [statistics.mean(v[i] for v in values) for i in range(5)]
            rows.append((granularity, ratio, algo, *mean))
            print(
                f"{granularity:<12} {ratio:>5.2f} {algo:<5} {mean[0]:>6.3f} {mean[1]:>6.3f} {mean[2]:>8.4f} "
                f"{mean[3]:>7.1f} {mean[4]:>8.1f}"
            )
    print("\nS2AP vs HYDRA (means over seeds)")
    columns = ("d_clean", "d_pgd20", "sharp s2ap/hydra", "step s2ap/hydra")
    print(f"{'granularity':<12} {'ratio':>5} {columns[0]:>8} {columns[1]:>8} {columns[2]:>17} {columns[3]:>16}")
    for i in range(0, len(rows), 2):
        hydra, s2ap = rows[i], rows[i + 1]
        sharp_ratio = s2ap[5] / hydra[5] if hydra[5] else float("nan")
        print(
            f"{hydra[0]:<12} {hydra[1]:>5.2f} {s2ap[3] - hydra[3]:>+8.3f} {s2ap[4] - hydra[4]:>+8.3f} "
            f"{sharp_ratio:>17.3f} {s2ap[7] / hydra[7]:>16.3f}"
        )


if __name__ == "__main__":
    main()
