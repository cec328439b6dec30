"""S2AP's radius on one pretrained digits model: fixed gamma against a calibrated swap fraction.

For each sparsity and seed, HYDRA (the reference mask, and a second HYDRA on another data order as
the noise floor of the mask distance) and S2AP at every fixed ``--gammas`` and every calibrated
``--swap-fractions``, all from the same pretrained model with the same data order and budget.
Per cell: the swap fraction one ascent really makes (mean over the ascent epochs), the radius, the
search's final robust loss, the top score-space Hessian eigenvalue, clean / PGD-20 accuracy of the
searched mask before fine-tuning (and after, with ``--finetune-epochs`` > 0), and the mask distance
to HYDRA's (Hamming distance over the kept entries: 0 identical, 2 disjoint).

Every finished cell is written to ``--out`` at once (atomically) with its final mask beside it, so
an interrupted sweep resumes where it stopped: cells already in the file are not rerun. Several
processes may share one ``--out`` (e.g. one per ``--ratios`` value, each on one thread).

    python benchmarks/s2ap_radius.py                       # the full grid (3 seeds, both sparsities)
    python benchmarks/s2ap_radius.py --seeds 1 --ratios 0.95 --gammas 0.01 --swap-fractions 0.02 \\
        --search-epochs 1 --warmup-epochs 0 --train-batches 2 --eval-examples 64 --pretrain-epochs 1 \\
        --finetune-epochs 0 --out /tmp/s2ap_radius_smoke.json   # a smoke run
"""

from __future__ import annotations

import copy
import fcntl
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from digits_bench import CPU, EVAL, TRAIN, bench_parser, finetune_and_evaluate, prepare
from provenance import provenance
from robprune_s2ap.stability import final_masks, load_masks, mask_distance, save_masks
from torch import nn
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, PruningResult
from robprune_deploy.atomic import write_json
from robprune_deploy.data import DatasetBundle, make_loader
from robprune_deploy.training import evaluate_robustness

RESULTS = Path(__file__).resolve().parent / "results" / "s2ap_radius.json"


def _search(
    name: str, model: nn.Module, data: DatasetBundle, ratio: float, seed: int, batches: int | None, **config: Any
) -> tuple[PruningResult, float]:
    train = data.train
    if batches is not None:
        train = TensorDataset(*(t[: 32 * batches] for t in data.train.tensors))  # type: ignore[attr-defined]
    cls = ALGORITHMS.get(name)
    context = PruningContext(
        train_data=make_loader(train, 32, shuffle=True, seed=seed),
        epoch_loader=lambda e: make_loader(train, 32, shuffle=True, seed=seed, epoch=e),
        ratio=ratio,
        threat=TRAIN,
        example_inputs=data.test.tensors[0][:1],  # type: ignore[attr-defined]
        seed=seed,
    )
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = cls(cls.Config.model_validate(config)).apply(copy.deepcopy(model), context)
    return result, time.perf_counter() - start


def _measure(result: PruningResult, data: DatasetBundle, eval_examples: int, seconds: float) -> dict[str, Any]:
    epochs = result.extra["epochs"]
    ascent = [e for e in epochs if "swap_fraction" in e]
    test = TensorDataset(*(t[:eval_examples] for t in data.test.tensors))  # type: ignore[attr-defined]
    accuracy = evaluate_robustness(result.strip().eval(), list(make_loader(test, 256, shuffle=False)), CPU, EVAL)
    return {
        "swap_fraction": statistics.fmean(e["swap_fraction"] for e in ascent) if ascent else 0.0,
        "gamma": statistics.fmean(e["gamma"] for e in ascent) if ascent else 0.0,
        "ascent_gain": statistics.fmean(e["ascent_gain"] for e in ascent) if ascent else 0.0,
        "final_robust_loss": epochs[-1]["robust_loss"],
        "final_probe_loss": epochs[-1]["probe_loss"],
        "final_sharpness": epochs[-1]["sharpness"],
        "hessian_top_eigenvalue": epochs[-1].get("hessian_top_eigenvalue"),
        "search_clean_acc": accuracy["clean_acc"],
        "search_pgd20_acc": accuracy["pgd_acc"],
        "search_seconds": seconds,
        "final_mask_sha256": result.extra["final_mask_sha256"],
    }


def _record(out: Path, key: str, row: dict[str, Any], setup: dict[str, Any]) -> None:
    """Add one cell to ``out`` under a lock, re-reading it first: several processes (say one per
    ratio) can share one results file without losing each other's cells."""
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
        results["setup"] = setup
        results["provenance"] = provenance()
        results.setdefault("cells", {})[key] = row
        write_json(out, results)


def _variant_order(variant: str) -> tuple[int, float]:
    """HYDRA, its other data order, then the fixed radii and the calibrated ones, each ascending."""
    name, _, value = variant.partition("=")
    rank = ["hydra", "hydra_other_order", "gamma", "swap_fraction"].index(name)
    return rank, float(value) if value else 0.0


COLUMNS = (
    ("sparsity", "{:.0%}"),
    ("variant", "{}"),
    ("seeds", "{}"),
    ("swap", "{:.3f}"),
    ("gamma", "{:.4f}"),
    ("final robust loss", "{:.3f}"),
    ("PGD-20 after search", "{:.3f}"),
    ("clean", "{:.3f}"),
    ("d(HYDRA)", "{:.3f}"),
    ("Hessian top eigenvalue", "{:.0f}"),
)
KEYS = (
    "swap_fraction", "gamma", "final_robust_loss", "search_pgd20_acc", "search_clean_acc",
    "mask_distance_to_hydra", "hessian_top_eigenvalue",
)  # search_seconds stays in the file only: wall time on a shared machine compares nothing  # fmt: skip


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def tables(results: dict[str, Any]) -> dict[str, Any]:
    """The docs' table (``benchmarks/result_tables.py`` renderer): per sparsity and variant, means
    over the seeds in the file."""
    from result_tables import column, table, text_column

    cells = list(results.get("cells", {}).values())
    rows = []
    for ratio in sorted({c["ratio"] for c in cells}):
        for variant in sorted({c["variant"] for c in cells if c["ratio"] == ratio}, key=_variant_order):
            chosen = [c for c in cells if c["ratio"] == ratio and c["variant"] == variant]
            rows.append([ratio, variant, len(chosen), *(_mean(chosen, key) for key in KEYS)])
    columns = [text_column(name) if name == "variant" else column(name, template) for name, template in COLUMNS]
    return {"radius": table(columns, rows)}


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--gammas", type=float, nargs="*", default=[0.002, 0.005, 0.01, 0.03, 0.1])
    parser.add_argument("--swap-fractions", type=float, nargs="*", default=[0.005, 0.01, 0.02, 0.05])
    parser.add_argument("--search-epochs", type=int, default=8)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=None, help="batches of 32 per epoch (default: all)")
    parser.add_argument("--eval-examples", type=int, default=450)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="only print the table of --out, as the docs show it")
    args = parser.parse_args()
    if args.report:
        from result_tables import render

        print(render(args.out))
        return
    data, base = prepare(args)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    masks_dir = args.out.with_suffix("")  # <out>/ beside <out>.json: one .npz per cell
    budget = {"epochs": args.search_epochs, "granularity": "unstructured"}
    variants: list[tuple[str, str, dict[str, Any]]] = [("hydra", "hydra", {})]
    variants += [(f"gamma={g}", "s2ap", {"gamma": g, "warmup_epochs": args.warmup_epochs}) for g in args.gammas]
    variants += [
        (f"swap_fraction={f}", "s2ap", {"swap_fraction": f, "warmup_epochs": args.warmup_epochs})
        for f in args.swap_fractions
    ]
    setup = {
        "model": args.model,
        "pretrain_epochs": args.pretrain_epochs,
        "search_epochs": args.search_epochs,
        "warmup_epochs": args.warmup_epochs,
        "train_batches": args.train_batches,
        "finetune_epochs": args.finetune_epochs,
        "eval_examples": args.eval_examples,
    }
    cells: dict[str, Any] = results.get("cells", {})
    for ratio in args.ratios:
        for seed in range(args.seeds):
            reference = masks_dir / f"r{ratio}_s{seed}_hydra.npz"
            # HYDRA on another data order (seed + 1000): how far masks move without any ascent.
            for label, algorithm, config, run_seed in [
                *((label, algo, cfg, seed) for label, algo, cfg in variants),
                ("hydra_other_order", "hydra", {}, seed + 1000),
            ]:
                key = f"ratio={ratio}|seed={seed}|{label}"
                mask_file = masks_dir / f"r{ratio}_s{seed}_{label}.npz"
                if key in cells and mask_file.is_file():
                    continue
                result, seconds = _search(
                    algorithm, base, data, ratio, run_seed, args.train_batches, **budget, **config
                )
                row = {"ratio": ratio, "seed": seed, "variant": label, **config}
                row.update(_measure(result, data, args.eval_examples, seconds))
                masks = final_masks(result)
                # HYDRA's own cell runs first and is its own reference (distance 0).
                row["mask_distance_to_hydra"] = mask_distance(
                    masks, load_masks(reference) if reference.is_file() else masks
                )
                if args.finetune_epochs > 0:
                    outcome = finetune_and_evaluate(result, data, args.finetune_epochs, seed)
                    row["finetuned_clean_acc"], row["finetuned_pgd20_acc"] = outcome.clean, outcome.pgd
                save_masks(masks, mask_file)
                _record(args.out, key, row, setup)
                print(
                    f"{key:<40} swap {row['swap_fraction']:.4f} gamma {row['gamma']:.4f} "
                    f"loss {row['final_robust_loss']:.3f} pgd20 {row['search_pgd20_acc']:.3f} "
                    f"d(hydra) {row['mask_distance_to_hydra']:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
