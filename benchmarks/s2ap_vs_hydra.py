"""S2AP vs HYDRA side by side on one pretrained digits model.

For each sparsity and seed: the same pretrained model, the same mask-search budget and the same
fine-tuning; prints clean / PGD-20 accuracy after fine-tuning, the final score-space sharpness
(measured identically for both, at ``measure_radius``), mask flips over the last quarter of the
search, mask-search time per step, and the S2AP/HYDRA ratios. Several ``--gammas`` make a sweep:
HYDRA runs once per seed and every gamma is compared with it.

    python benchmarks/s2ap_vs_hydra.py                 # the full grid (3 seeds; about 45 minutes on 2 cores)
    python benchmarks/s2ap_vs_hydra.py --unstructured 0.95 --channel --gammas 0.01 0.03 0.1   # a gamma sweep
    python benchmarks/s2ap_vs_hydra.py --gammas 0.01 0.1 --json benchmarks/results/s2ap_vs_hydra.json   # docs
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from digits_bench import bench_parser, finetune_and_evaluate, prepare, prune
from provenance import provenance
from result_tables import column, results_file, table, text_column

FIELDS = ("clean", "pgd20", "sharp", "flips", "ms/step")
Means = dict[tuple[str, float, str, float, int], list[float]]


def docs_table(means: Means, settings: list[tuple[str, float]], s2ap: list[tuple[str, float, int]]) -> dict[str, Any]:
    """The docs' table: HYDRA's clean / PGD-20 in %, each S2AP variant's difference to it, and the
    final score-space sharpness of HYDRA and of each variant."""
    acc, delta = "{:.1f} / {:.1f}", "{:+.1f} / {:+.1f}"

    def name(gamma: float, every: int) -> str:
        return f"γ={gamma:g}" + (f", ascent_every {every}" if every != 1 else "")

    columns = [text_column("sparsity"), column("HYDRA", acc)]
    columns += [column(f"S2AP {name(g, k)} (Δ)", delta) for _, g, k in s2ap]
    chain = " → ".join(["{:.2f}"] * (1 + len(s2ap)))
    columns.append(column("sharpness HYDRA → " + " → ".join(name(g, k) for _, g, k in s2ap), chain))
    rows = []
    for granularity, ratio in settings:
        hydra = means[(granularity, ratio, "hydra", 0.0, 1)]
        ours = [means[(granularity, ratio, "s2ap", g, k)] for _, g, k in s2ap]
        rows.append(
            [
                f"{granularity} {ratio:.0%}",
                [100 * hydra[0], 100 * hydra[1]],
                *([100 * (o[0] - hydra[0]), 100 * (o[1] - hydra[1])] for o in ours),
                [hydra[2], *(o[2] for o in ours)],
            ]
        )
    return table(columns, rows)


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--search-epochs", type=int, default=8)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.1])
    parser.add_argument("--ascent-every", type=int, nargs="+", default=[1], help="S2AP ascent_every values")
    parser.add_argument("--unstructured", type=float, nargs="*", default=[0.9, 0.95, 0.99])
    parser.add_argument("--channel", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--json", type=Path, default=None, help="also write the docs' table (benchmarks/results/)")
    args = parser.parse_args()
    data, base = prepare(args)
    settings = [("unstructured", r) for r in args.unstructured] + [("channel", r) for r in args.channel]
    s2ap = [("s2ap", g, k) for g in args.gammas for k in args.ascent_every]
    variants = [("hydra", 0.0, 1), *s2ap]
    means: Means = {}
    header = f"{'granularity':<12} {'ratio':>5} {'algo':<5} {'gamma':>6} {'k':>2} "
    print(header + " ".join(f"{n:>8}" for n in FIELDS))
    for granularity, ratio in settings:
        values: dict[tuple[str, float, int], list[tuple[float, ...]]] = {v: [] for v in variants}
        for seed in range(args.seeds):
            for algo, gamma, every in variants:
                config: dict[str, object] = {"granularity": granularity, "epochs": args.search_epochs}
                if algo == "s2ap":
                    config.update(gamma=gamma, warmup_epochs=args.warmup_epochs, ascent_every=every)
                result, _ = prune(algo, base, data, ratio, seed, **config)
                epochs = result.extra["epochs"]
                tail = epochs[-max(1, len(epochs) // 4) :]
                # Step time over the epochs where S2AP takes the ascent, for both algorithms: each
                # epoch's mean (with ascent_every = k steps alternate between fresh and reused
                # ascents), the median over epochs against a shared machine's stalls.
                timed = epochs[args.warmup_epochs :] or epochs
                step_ms = 1000 * statistics.median(e["step_seconds"] for e in timed)
                outcome = finetune_and_evaluate(result, data, args.finetune_epochs, seed)
                sharp = epochs[-1]["sharpness"]
                flips = statistics.mean(e["mask_flips"] for e in tail)
                values[(algo, gamma, every)].append((outcome.clean, outcome.pgd, sharp, flips, step_ms))
        for (algo, gamma, every), rows in values.items():
            mean = [statistics.mean(r[i] for r in rows) for i in range(len(FIELDS))]
            means[(granularity, ratio, algo, gamma, every)] = mean
            print(
                f"{granularity:<12} {ratio:>5.2f} {algo:<5} {gamma:>6.3f} {every:>2} {mean[0]:>8.3f} {mean[1]:>8.3f} "
                f"{mean[2]:>8.4f} {mean[3]:>8.1f} {mean[4]:>8.1f}",
                flush=True,
            )
    print("\nS2AP vs HYDRA (means over seeds; accuracy differences in points)")
    columns = ("gamma", "k", "d_clean", "d_pgd20", "d_sharp", "flips s2ap/hydra", "step s2ap/hydra")
    print(f"{'granularity':<12} {'ratio':>5} " + " ".join(f"{c:>{max(8, len(c))}}" for c in columns))
    for granularity, ratio in settings:
        hydra = means[(granularity, ratio, "hydra", 0.0, 1)]
        for _, gamma, every in s2ap:
            ours = means[(granularity, ratio, "s2ap", gamma, every)]
            sharp = ours[2] - hydra[2]  # a difference: one linearized ascent step can lower the loss (< 0)
            flips = ours[3] / hydra[3] if hydra[3] else float("nan")
            print(
                f"{granularity:<12} {ratio:>5.2f} {gamma:>8.3f} {every:>8} {100 * (ours[0] - hydra[0]):>+8.1f} "
                f"{100 * (ours[1] - hydra[1]):>+8.1f} {sharp:>+8.3f} {flips:>16.3f} {ours[4] / hydra[4]:>15.3f}"
            )
    if args.json is not None:
        setup = {k: v for k, v in vars(args).items() if k not in ("json", "cache")}
        document = results_file(provenance(), {"main": docs_table(means, settings, s2ap)}, setup=setup)
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
