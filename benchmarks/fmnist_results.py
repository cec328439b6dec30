"""Figures of the Fashion-MNIST grid: per-cell records, PGD-50 on the ONNX model, table, plot, sweep choice.

A record holds the figures a cell's run wrote (``summary.json``, ``statistics.json``) and PGD-50 on its
``model.onnx``. Robust accuracy is read from the summary keys ``onnx.pgd_acc`` (PGD-``eval_steps``),
``onnx.square_acc`` and, once the evaluation has it, ``onnx.autoattack_acc``; the headline column is
AutoAttack when present, else PGD-50.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PAIRS = (("s2ap", "hydra"), ("mrpf", "l1_filter"))
"""(method, baseline): paired on the same seed and pretrained model."""
COLORS = {
    "s2ap": "tab:red",
    "hydra": "tab:blue",
    "nncf_magnitude": "tab:grey",
    "mrpf": "tab:green",
    "l1_filter": "tab:orange",
}
"""One color per method in both panels."""
METRICS = (
    ("clean", "clean"),
    ("pgd20", "PGD-20"),
    ("pgd50", "PGD-50"),
    ("square", "Square"),
    ("autoattack", "AutoAttack"),
    ("val_pgd", "val PGD"),
)


def onnx_pgd(out: Path, steps: int) -> dict[str, Any]:
    """PGD-``steps`` with random start on ``out/model.onnx`` (crafted on its torch twin, classified by
    onnxruntime), on the run's own evaluation subset; written to ``out/pgd50.json`` with the
    per-example clean and PGD outcomes (packed bits) and the hash of the examples, so that two cells
    measured on the same examples can be compared example by example (exact McNemar)."""
    import hashlib

    import numpy as np
    import torch

    from robprune_deploy.atomic import write_json
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.evaluation import OnnxClassifier, pgd_outcomes
    from robprune_deploy.evaluation.twin import torch_twin
    from robprune_deploy.export import load_onnx
    from robprune_deploy.pipeline import RunContext
    from robprune_deploy.recipe import load_recipe
    from robprune_deploy.statistics import pack_outcomes

    recipe = load_recipe(out / "recipe.yaml")
    batches = RunContext(recipe, out, show_progress=False).eval_subset_batches()
    model = out / "model.onnx"
    session = OnnxClassifier(model, recipe.evaluate.providers)
    twin = torch_twin(load_onnx(model)).eval().cpu()  # built before seeding: building it draws random numbers
    threat = ThreatModel(recipe.attack.eps, recipe.attack.step_size, steps, random_start=True)
    with torch.random.fork_rng(devices=[]):  # seeded as evaluate_onnx seeds its PGD: the same figure
        torch.manual_seed(recipe.evaluate.subset_seed)
        robust = pgd_outcomes(twin, session, batches, threat)
    clean = np.concatenate([session.predict(x.numpy()).argmax(1) == y.numpy() for x, y in batches])
    examples = hashlib.sha256()
    for x, y in batches:
        examples.update(x.numpy().tobytes())
        examples.update(y.numpy().tobytes())
    figures = {
        "pgd50_acc": float(robust.mean()),
        "pgd50_steps": steps,
        "pgd50_examples": len(robust),
        "outcomes": {
            "examples": len(robust),
            "subset_sha256": examples.hexdigest(),
            "clean": pack_outcomes(clean),
            "pgd50": pack_outcomes(robust),
        },
    }
    write_json(out / "pgd50.json", figures)
    return figures


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def pretrain_record(out: Path) -> dict[str, Any]:
    recorded = json.loads((out / "state.json").read_text())
    state = recorded.get("stages", recorded).get("pretrain", {})
    return {
        "dense_clean": state.get("torch.dense_clean_acc"),
        "dense_pgd20": state.get("torch.dense_pgd_acc"),
        "dense_val_pgd": state.get("val.dense_pgd_acc"),
        "selected_epoch": state.get("pretrain.selected_epoch"),
    }


def cell_record(out: Path) -> dict[str, Any]:
    """The figures of one finished cell."""
    s = json.loads((out / "summary.json").read_text())
    stats = json.loads((out / "statistics.json").read_text())
    pgd50 = json.loads((out / "pgd50.json").read_text()) if (out / "pgd50.json").is_file() else {}
    record: dict[str, Any] = {
        "granularity": s.get("granularity"),
        "target_ratio": s.get("target_ratio"),
        "sparsity": s.get("sparsity"),
        "macs_reduction": 1 - s["macs_pruned"] / s["macs_dense"],
        "params_reduction": 1 - s["params_pruned"] / s["params_dense"],
        "clean": s.get("onnx.clean_acc"),
        "pgd20": s.get("onnx.pgd_acc"),
        "square": s.get("onnx.square_acc"),
        "autoattack": s.get("onnx.autoattack_acc"),
        "pgd50": pgd50.get("pgd50_acc"),
        "outcomes": pgd50.get("outcomes"),  # per-example, packed (robprune_deploy.statistics.unpack_outcomes)
        "examples": s.get("onnx.examples"),
        "split": s.get("splits.onnx"),
        "val_clean": s.get("val.clean_acc"),
        "val_pgd": s.get("val.pgd_acc"),
        "val_examples": s.get("data.val_examples"),
        "dense_clean": s.get("torch.dense_clean_acc"),
        "dense_pgd20": s.get("torch.dense_pgd_acc"),
        "dense_autoattack": s.get("onnx.dense_autoattack_acc"),
        "speedup": s.get("latency.speedup"),
        "gate_passed": s.get("gate.passed"),
        "finetune_selected_epoch": s.get("finetune.selected_epoch"),
    }
    record.update(_diagnostics(stats.get("extra", {})))
    return record


def _diagnostics(extra: dict[str, Any]) -> dict[str, Any]:
    """S2AP/HYDRA: final score-space sharpness, mask flips over the last quarter; MRPF: MRS spread."""
    epochs = extra.get("epochs")
    if epochs:
        tail = epochs[-max(1, len(epochs) // 4) :]
        return {
            "sharpness": epochs[-1].get("sharpness"),
            "flips": statistics.mean(e["mask_flips"] for e in tail),
            "step_seconds": statistics.mean(e["step_seconds"] for e in epochs),
        }
    mrs = [v for v in (extra.get("mrs") or {}).values() if isinstance(v, (int, float))]
    if mrs:
        ratios = list((extra.get("channel_ratios") or {}).values())
        return {
            "mrs_min": min(mrs),
            "mrs_max": max(mrs),
            "mrs_cv": statistics.pstdev(mrs) / abs(statistics.mean(mrs)) if statistics.mean(mrs) else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
        }
    return {}


# --- aggregation ------------------------------------------------------------------------------


def refresh(records: dict[str, dict[str, Any]]) -> None:
    """Re-read the figures of every finished record from its run folder (the folders are the truth;
    a record keeps its timing, seed and labels)."""
    for record in records.values():
        out = Path(record.get("out", ""))
        if record.get("status") != "done" or not out.is_dir() or record.get("task") == "sweep":
            continue
        record.update(pretrain_record(out) if record.get("task") == "pretrain" else cell_record(out))


def cells_of(records: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Finished cell records grouped by cell name, each list sorted by seed."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records.values():
        if record.get("task") == "cell" and record.get("status") == "done":
            grouped.setdefault(record["cell"], []).append(record)
    return {name: sorted(rows, key=lambda r: r["seed"]) for name, rows in sorted(grouped.items())}


def mean_sd(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    xs = [v for v in map(_number, values) if v is not None]
    if not xs:
        return None, None, 0
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def paired(
    method: list[dict[str, Any]], baseline: list[dict[str, Any]], metric: str
) -> tuple[float | None, float | None, int]:
    """Mean and sd over seeds of ``method - baseline`` (same seed, same pretrained model)."""
    base = {r["seed"]: _number(r.get(metric)) for r in baseline}
    diffs = [
        m - b for r in method if (m := _number(r.get(metric))) is not None and (b := base.get(r["seed"])) is not None
    ]
    return mean_sd(diffs)


def _pct(mean: float | None, sd: float | None, n: int, signed: bool = False) -> str:
    if mean is None:
        return "n/a"
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    if sd is not None:
        text += f" ± {100 * sd:.1f}"
    return text if n <= 1 else f"{text} ({n})"


def headline_metric(grouped: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    present = any(r.get("autoattack") is not None for rows in grouped.values() for r in rows)
    return ("autoattack", "AutoAttack") if present else ("pgd50", "PGD-50")


def render_table(data: dict[str, Any], description: str, pgd_steps: int) -> str:
    """``table.md``: power first, then the claims and their verdicts, then every cell's figures."""
    from fmnist_claims import measure_claims, render_claims, render_power

    grouped = cells_of(data.get("records", {}))
    hw = data.get("hardware", {})
    metrics = [(k, n) for k, n in METRICS if any(r.get(k) is not None for rows in grouped.values() for r in rows)]
    metrics = [(k, n.replace("PGD-50", f"PGD-{pgd_steps}")) for k, n in metrics]
    headline, label = headline_metric(grouped)
    label, outcome_label = label.replace("PGD-50", f"PGD-{pgd_steps}"), f"PGD-{pgd_steps}"
    claims = measure_claims(grouped, headline)
    lines = [
        f"# Fashion-MNIST grid ({data.get('budget')} budget)",
        "",
        f"Budget: {description}. Hardware: {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores"
        + (f", {hw['gpu']}" if hw.get("gpu") else "")
        + f", torch {hw.get('torch', '?')}.",
        "",
        *render_power(claims, label, outcome_label),
        "",
        *render_claims(claims, label, outcome_label),
        "",
        "## Accuracy per cell",
        "",
        f"Accuracy in % on {_examples(grouped)} (the ONNX model under onnxruntime; `val PGD`: the torch model on "
        "the validation split), mean ± sd over seeds (number of seeds in brackets when more than one).",
        "",
        "| cell | sparsity | MACs removed | " + " | ".join(n for _, n in metrics) + " | wall s | CPU s |",
        "|---|---:|---:|" + "---:|" * len(metrics) + "---:|---:|",
    ]
    for name, rows in grouped.items():
        sparsity = mean_sd(r.get("sparsity") for r in rows)
        macs = mean_sd(r.get("macs_reduction") for r in rows)
        cells = [_pct(*mean_sd(r.get(k) for r in rows)) for k, _ in metrics]
        seconds, cpu = (mean_sd(r.get(k) for r in rows)[0] for k in ("seconds", "cpu_seconds"))
        lines.append(
            f"| {name} | {100 * (sparsity[0] or 0):.1f} | {100 * (macs[0] or 0):.1f} | "
            + " | ".join(cells)
            + f" | {_num((seconds, None, 1), 0)} | {_num((cpu, None, 1), 0)} |"
        )
    lines += ["", "## Paired differences (method minus baseline, same seed and pretrained model)", ""]
    lines += ["| method − baseline | setting | " + " | ".join(n for _, n in metrics) + " |"]
    lines += ["|---|---|" + "---:|" * len(metrics)]
    for method, baseline in PAIRS:
        for name, rows in grouped.items():
            if not name.startswith(method + "_"):
                continue
            setting = name[len(method) + 1 :]
            base_rows = grouped.get(f"{baseline}_{setting}")
            if not base_rows:
                continue
            diffs = [_pct(*paired(rows, base_rows, k), signed=True) for k, _ in metrics]
            lines.append(f"| {method} − {baseline} | {setting} | " + " | ".join(diffs) + " |")
    lines += _diagnostic_lines(grouped)
    return "\n".join(lines) + "\n"


def _examples(grouped: dict[str, list[dict[str, Any]]]) -> str:
    kinds = sorted({(r.get("examples"), r.get("split")) for rows in grouped.values() for r in rows}, key=str)
    return ", ".join(f"{n} images of the {split} split" for n, split in kinds) or "the test split"


def _diagnostic_lines(grouped: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["", "## Mechanism measurements", ""]
    search = [(n, rows) for n, rows in grouped.items() if rows[0].get("sharpness") is not None]
    if search:
        lines += [
            "| cell | final score-space sharpness | mask flips per epoch (last quarter) | s/step |",
            "|---|---:|---:|---:|",
        ]
        for name, rows in search:
            sharp, flips, step = (mean_sd(r.get(k) for r in rows) for k in ("sharpness", "flips", "step_seconds"))
            lines.append(f"| {name} | {_num(sharp)} | {_num(flips, 0)} | {_num(step, 3)} |")
    mrs = [(n, rows) for n, rows in grouped.items() if rows[0].get("mrs_max") is not None]
    if mrs:
        lines += ["", "| cell | MRS min … max | MRS coefficient of variation | channel ratios min … max |"]
        lines += ["|---|---:|---:|---:|"]
        for name, rows in mrs:
            r = rows[0]
            lines.append(
                f"| {name} | {r['mrs_min']:.3g} … {r['mrs_max']:.3g} | {_num(mean_sd(x.get('mrs_cv') for x in rows))} "
                f"| {r.get('ratio_min', 0):.2f} … {r.get('ratio_max', 0):.2f} |"
            )
    return lines if len(lines) > 3 else []


def _num(stat: tuple[float | None, float | None, int], digits: int = 3) -> str:
    mean, sd, _ = stat
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def plot_grid(data: dict[str, Any], path: Path, pgd_steps: int) -> Path:
    """Robust accuracy against unstructured sparsity (left) and MACs removed (right), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robprune_deploy.reporting.plots import save_figure

    grouped = cells_of(data.get("records", {}))
    metric, label = headline_metric(grouped)
    label = label.replace("PGD-50", f"PGD-{pgd_steps}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    panels = {"unstructured": axes[0], "structured": axes[1]}
    lines: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for rows in grouped.values():
        algorithm, granularity = rows[0]["algorithm"], rows[0].get("granularity")
        panel = "unstructured" if granularity == "unstructured" else "structured"
        x = mean_sd(r.get("sparsity" if panel == "unstructured" else "macs_reduction") for r in rows)[0]
        y, sd, _ = mean_sd(r.get(metric) for r in rows)
        if x is not None and y is not None:
            lines.setdefault((panel, algorithm), []).append((100 * x, 100 * y, 100 * (sd or 0)))
    for (panel, algorithm), points in sorted(lines.items()):
        points.sort()
        axes_ = panels[panel]
        axes_.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=3,
            color=COLORS.get(algorithm),
            label=algorithm
            if panel == "unstructured" or algorithm in ("mrpf", "l1_filter")
            else f"{algorithm} (channel)",
        )
    # the dense reference in the plotted metric where the runs measured it, else PGD-20
    dense_key, dense_label = ("dense_autoattack", label) if metric == "autoattack" else ("dense_pgd20", "PGD-20")
    dense = mean_sd(r.get(dense_key) for rows in grouped.values() for r in rows)[0]
    for name, axes_ in panels.items():
        axes_.set_xlabel("weight sparsity (%)" if name == "unstructured" else "MACs removed physically (%)")
        axes_.set_title(f"{name}: {label} accuracy on the ONNX model")
        if dense is not None:
            axes_.axhline(100 * dense, color="grey", linestyle=":", label=f"dense ({dense_label})")
        if axes_.has_data():
            axes_.legend(fontsize=8)
    axes[0].set_ylabel(f"{label} accuracy (%), test split")
    fig.suptitle(f"Fashion-MNIST, eps 0.1, {data.get('budget')} budget; error bars: sd over seeds", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(data: dict[str, Any], results_dir: Path, description: str, pgd_steps: int) -> list[Path]:
    from robprune_deploy.atomic import write_text

    table = write_text(results_dir / "table.md", render_table(data, description, pgd_steps))
    return [table, plot_grid(data, results_dir / "grid.png", pgd_steps), results_dir / "results.json"]


def log_to_mlflow(data: dict[str, Any], files: Sequence[Path], uri: str, budget: str) -> None:
    """One MLflow run with the per-cell means as metrics and the table, plot and results as artifacts."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("fmnist-grid")
    with mlflow.start_run(run_name=f"fmnist-grid-{budget}"):
        mlflow.set_tag("budget", budget)
        for name, rows in cells_of(data.get("records", {})).items():
            for key, _ in METRICS:
                mean, sd, _ = mean_sd(r.get(key) for r in rows)
                if mean is not None:
                    mlflow.log_metric(f"{name}.{key}", mean)
                if sd is not None:
                    mlflow.log_metric(f"{name}.{key}_sd", sd)
        for file in files:
            if file.is_file():
                mlflow.log_artifact(str(file))


# --- the sweep --------------------------------------------------------------------------------


def switched_off(record: dict[str, Any]) -> str | None:
    """Why a sweep variant turns its method's own mechanism off, else ``None``. Such a variant is the
    baseline under another name (S2AP with no ascent epoch is HYDRA): it is reported as an ablation
    and never chosen, or the sweep could pick the baseline and call it the method."""
    if record.get("algorithm") != "s2ap":
        return None
    import yaml

    config = yaml.safe_load((Path(record["out"]) / "recipe.yaml").read_text())["compression"]["config"]
    if config.get("gamma", 1) == 0:
        return "gamma 0: no sharpness ascent"
    if config.get("warmup_epochs", 0) >= config.get("epochs", 0):
        return f"warm-up {config['warmup_epochs']} of {config['epochs']} search epochs: no ascent epoch"
    return None


def choose_sweep(data: dict[str, Any], path: Path, sweeps: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
    """Per algorithm, the variant chosen on validation PGD accuracy, written to ``path`` with every
    variant's figures. The rule is :func:`robprune_deploy.statistics.choose_variant`: the recipe's
    default (variant 0) is kept unless a variant beats it by more than one standard error of their
    paired difference over at least 2 seeds (the error of the difference the choice rests on, not of
    one accuracy); a variant that switches the method off is an ablation, never the choice."""
    from robprune_deploy.atomic import write_json, write_text
    from robprune_deploy.statistics import choose_variant

    chosen: dict[str, Any] = {}
    for algorithm in sweeps:
        rows = [
            r
            for r in data.get("records", {}).values()
            if r.get("task") == "sweep" and r.get("algorithm") == algorithm and r.get("status") == "done"
        ]
        variants: dict[int, dict[str, Any]] = {}  # one record per variant, for its settings
        scores: dict[int, dict[int, float]] = {}
        clean: dict[int, dict[int, float]] = {}
        for r in sorted(rows, key=lambda r: (r["variant"], r.get("seed", 0))):
            variants.setdefault(r["variant"], r)
            scores.setdefault(r["variant"], {})
            if r.get("val_pgd") is not None:
                scores[r["variant"]][r.get("seed", 0)] = r["val_pgd"]
            if r.get("val_clean") is not None:
                clean.setdefault(r["variant"], {})[r.get("seed", 0)] = r["val_clean"]
        if 0 not in variants:
            print(f"{algorithm}: the default (variant 0) has not run; no choice")
            continue
        ablation = {v: switched_off(r) for v, r in variants.items()}
        choice = choose_variant(scores, 0, excluded={v: why for v, why in ablation.items() if why})
        best = variants[choice.chosen]
        chosen[algorithm] = {
            "cell": best["cell"],
            "chosen": best["sets"],
            "relative": best["relative"],
            "reason": choice.reason,
            "variants": [
                {
                    "variant": v,
                    "sets": r["sets"],
                    "seeds": sorted(scores[v]),
                    "val_pgd": statistics.fmean(scores[v].values()) if scores[v] else None,
                    "val_clean": statistics.fmean(clean[v].values()) if clean.get(v) else None,
                    **({"gain": choice.gains[v].mean, "gain_se": choice.gains[v].se} if v in choice.gains else {}),
                    **({"ablation": ablation[v]} if ablation[v] else {}),
                }
                for v, r in variants.items()
            ],
        }
        print(f"{algorithm}: chose {best['sets'] or 'the recipe defaults'} ({choice.reason})")
    write_json(path, chosen)
    write_text(path.with_suffix(".md"), render_sweep(chosen))


def render_sweep(chosen: dict[str, Any]) -> str:
    """``sweep.md``: every variant's validation figures and paired gain, the choice marked, ablations named."""
    lines = [
        "# Validation sweep",
        "",
        "Accuracy in % on the validation split (the torch model, best fine-tuning epoch), mean over the seeds "
        "listed; gain: the paired difference from the default over the same seeds, ± its standard error. The "
        "default is kept unless a gain exceeds its standard error over at least 2 seeds.",
        "",
        "| algorithm | cell | variant | setting | seeds | val clean | val PGD | gain ± SE | |",
        "|---|---|---:|---|---|---:|---:|---:|---|",
    ]
    for algorithm, entry in chosen.items():
        for v in entry["variants"]:
            setting = ", ".join(v["sets"]) or "recipe default"
            mark = "**chosen**" if v["sets"] == entry["chosen"] else v.get("ablation", "")
            clean, pgd = (f"{100 * x:.1f}" if x is not None else "-" for x in (v["val_clean"], v["val_pgd"]))
            gain = f"{100 * v['gain']:+.1f} ± {100 * v['gain_se']:.1f}" if "gain" in v else "-"
            seeds = ", ".join(map(str, v.get("seeds", []))) or "-"
            lines.append(
                f"| {algorithm} | {entry['cell']} | {v['variant']} | {setting} | {seeds} | {clean} | {pgd} | {gain} "
                f"| {mark} |"
            )
    return "\n".join(lines) + "\n"


SWEEP_MARK = "# Chosen on validation by benchmarks/fmnist_grid.py --sweep:"


def write_recipes(sweep_file: Path, recipes: Path) -> None:
    """Write the chosen values into every ``recipes/fmnist/<algorithm>_*.yaml``; multipliers scale the
    recipe's own value (epoch counts chosen under a small budget scale to the recipe's budget). A
    recipe whose defaults were kept is left as it is; a written one says so in its header, and a
    second call with the same choice changes nothing (a multiplier is never applied twice)."""
    import yaml

    chosen = json.loads(sweep_file.read_text())
    for algorithm, entry in chosen.items():
        for recipe in sorted(recipes.glob(f"{algorithm}_*.yaml")):
            if recipe.stem.rsplit("_", 1)[0] != algorithm:
                continue
            if not entry["relative"]:
                print(f"{recipe}: defaults kept")
                continue
            mark = f"{SWEEP_MARK} {json.dumps(entry['relative'])}\n"
            text = recipe.read_text()
            if mark in text:
                print(f"{recipe}: already written")
                continue
            header = "".join(
                line for line in text.splitlines(keepends=True) if line.startswith("#") and SWEEP_MARK not in line
            )
            document = yaml.safe_load(text)
            for dotted, value in entry["relative"].items():
                *parents, leaf = dotted.split(".")
                node = document
                for part in parents:
                    node = node.setdefault(part, {})
                if isinstance(value, list):  # ["x", k]: scale the recipe's own value
                    current = node[leaf]
                    value = max(1, round(current * value[1])) if isinstance(current, int) else current * value[1]
                node[leaf] = value
            body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)
            recipe.write_text(header + mark + body)
            print(f"{recipe}: {entry['relative']}")
