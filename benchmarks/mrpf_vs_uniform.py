"""MRPF vs the uniform L1-filter baseline vs NNCF magnitude pruning on one pretrained digits model.

Same pretrained model, same fine-tuning budget; MRPF and l1_filter remove the given fraction of
MACs physically; nncf_magnitude masks the same fraction of weights (unstructured, no speed-up).

    python benchmarks/mrpf_vs_uniform.py                   # 3 seeds at 50% and 75% MACs
    python benchmarks/mrpf_vs_uniform.py --seeds 1 --finetune-epochs 2
"""

from __future__ import annotations

import statistics

from digits_bench import bench_parser, finetune_and_evaluate, prepare, prune


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    args = parser.parse_args()
    data, base = prepare(args)
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
