"""MRPF vs the uniform L1-filter baseline vs NNCF magnitude pruning on one pretrained digits model.

Same pretrained model, same fine-tuning budget; MRPF and l1_filter remove the given fraction of
MACs physically; nncf_magnitude masks the same fraction of weights (unstructured, no speed-up).

    python benchmarks/mrpf_vs_uniform.py                   # 3 seeds at 50% and 75% MACs
    python benchmarks/mrpf_vs_uniform.py --seeds 1 --finetune-epochs 2
    python benchmarks/mrpf_vs_uniform.py --json benchmarks/results/mrpf_vs_uniform.json   # the docs' table
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from digits_bench import bench_parser, finetune_and_evaluate, prepare, prune
from provenance import provenance
from result_tables import column, results_file, table, text_column

ALGORITHMS = ("mrpf", "l1_filter", "nncf_magnitude")
HEADINGS = ("MRPF", "l1_filter (uniform)", "nncf_magnitude (masks only)")


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--json", type=Path, default=None, help="also write the docs' table (benchmarks/results/)")
    args = parser.parse_args()
    data, base = prepare(args)
    print(f"{'ratio':>5} {'algorithm':<15} {'clean':>6} {'pgd20':>6} {'pgd sd':>6} {'params':>8} {'MACs':>9}")
    rows: list[list[object]] = []  # the docs' table: clean / PGD-20 in % per algorithm
    for ratio in args.ratios:
        means = {}
        for algo in ALGORITHMS:
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
        rows.append([f"{ratio:.0%}", *([100 * means[a][0], 100 * means[a][1]] for a in ALGORITHMS)])
    if args.json is not None:
        columns = [text_column("MACs removed"), *(column(h, "{:.1f} / {:.1f}") for h in HEADINGS)]
        setup = {k: v for k, v in vars(args).items() if k not in ("json", "cache")}
        document = results_file(provenance(), {"main": table(columns, rows)}, setup=setup)
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
