"""The verdict's records, collected from its sweeps: one per completed trial, read from the trial's run folder.

A sweep (``robprune sweep``) writes ``OUT/sweep.json``: every trial with its settings (here the seed
and ``compression.ratio``), its state and its run folder. A record holds what the claims need from
that folder, so that the committed ``results.json`` renders without the run folders:

- ``summary.json``: the shipped ONNX model's clean, PGD-20 and AutoAttack-fast accuracies (and how
  many test examples each covers), validation accuracy, sparsity, MACs;
- ``outcomes.json``: the per-example outcomes behind those accuracies, copied bit-packed;
- ``statistics.json`` (S2AP/HYDRA): the last search epoch's score-space Hessian dominant eigenvalue
  (largest magnitude, by power iteration as PyHessian finds it: negative where the strongest curvature
  is negative) and sharpness;
- ``plots/<algorithm>_final_mask.npz`` (S2AP/HYDRA): the final mask, for the cross-seed Hamming
  distance of each cell (:func:`mask_distances`, the S2AP paper's stability measure).

The verdict continues on another machine from what is committed: the studies (journal files beside
``results.json``) say which trials are done, so no worker runs them again, and the records of trials
whose run folders stayed behind come from the committed ``results.json``, their masks from its
``masks/`` folder (:func:`keep_mask`, :func:`merged`).
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"


def setting_name(ratio: float, granularity: str | None) -> str:
    """``u99`` for 99% unstructured sparsity, ``75`` for 75% of the MACs removed (channel)."""
    percent = round(100 * ratio)
    return f"u{percent}" if granularity == "unstructured" else str(percent)


def _last_epoch(stats: dict[str, Any]) -> dict[str, Any]:
    epochs = (stats.get("extra") or {}).get("epochs") or []
    return epochs[-1] if epochs else {}


def _triggered(folder: Path) -> list[str] | None:
    """The attack-failure indicators that fired on the shipped model (``gate.json``; they are reported,
    not gating, in the verdict's recipes), ``None`` when none was measured."""
    gate_file = folder / "gate.json"
    if not gate_file.is_file():
        return None
    candidate = (json.loads(gate_file.read_text()).get("robustness") or {}).get("candidate") or {}
    indicators = candidate.get("indicators") or {}
    return sorted(name for name, entry in indicators.items() if entry.get("triggered")) if indicators else None


def run_record(folder: Path) -> dict[str, Any]:
    """The figures of one finished run folder."""
    summary = json.loads((folder / "summary.json").read_text())
    stats_file = folder / "statistics.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    last = _last_epoch(stats)
    outcomes_file = folder / "outcomes.json"
    stored = json.loads(outcomes_file.read_text()) if outcomes_file.is_file() else None
    algorithm = summary.get("algorithm")
    mask = folder / "plots" / f"{algorithm}_final_mask.npz"
    return {
        "algorithm": algorithm,
        "granularity": summary.get("granularity"),
        "target_ratio": summary.get("target_ratio"),
        "sparsity": summary.get("sparsity"),
        "macs_reduction": 1 - summary["macs_pruned"] / summary["macs_dense"],
        "clean": summary.get("onnx.clean_acc"),
        "pgd20": summary.get("onnx.pgd_acc"),
        "autoattack": summary.get("onnx.autoattack_acc"),
        "examples": summary.get("onnx.examples"),
        "autoattack_examples": summary.get("onnx.autoattack_examples"),
        "split": summary.get("splits.onnx"),
        "val_clean": summary.get("val.clean_acc"),
        "val_pgd": summary.get("val.pgd_acc"),
        "gate_passed": summary.get("gate.passed"),
        "indicators_triggered": _triggered(folder),
        "hessian": last.get("hessian_top_eigenvalue"),
        "sharpness": last.get("sharpness"),
        "mask_sha256": (stats.get("extra") or {}).get("final_mask_sha256"),
        "mask_file": str(mask) if mask.is_file() else None,
        "outcomes": None
        if stored is None
        else {"subset_sha256": stored["subset_sha256"], "split": stored.get("split"), **stored["outcomes"]},
    }


Place = tuple[str, float, int]
"""A trial's place in the verdict: its sweep, ``compression.ratio`` and seed."""


def trial_place(record: dict[str, Any]) -> Place:
    """A trial's place in the verdict, as its sweep gives it: sweep, ``compression.ratio`` and seed."""
    return record["sweep"], float(record["target_ratio"]), int(record["seed"])


def sweep_records(name: str, out: Path) -> tuple[list[dict[str, Any]], dict[Place, str], dict[Place, str]]:
    """The records of the completed trials of sweep ``name`` (output folder ``out``); a line per
    setting and seed no trial of the sweep has completed (what is missing: the last attempt's state;
    a failed attempt that a retry completed is not missing); and the completed trials whose run
    folders are not on this machine (their records are in the committed ``results.json`` when they
    were reported where they ran). Both by :func:`trial_place`."""
    document = json.loads((out / "sweep.json").read_text())
    records: list[dict[str, Any]] = []
    missing: dict[Place, str] = {}
    elsewhere: dict[Place, str] = {}
    completed: set[Place] = set()
    for trial in sorted(document["trials"], key=lambda t: t["number"]):
        params = trial["params"]
        label = f"{name} trial {trial['number']} ({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"
        place = (name, float(params["compression.ratio"]), int(params["seed"]))
        if trial["state"] != COMPLETE:
            missing[place] = f"{label}: {trial['state']}"
            continue
        completed.add(place)
        if not trial.get("run_folder") or not (out / trial["run_folder"] / "summary.json").is_file():
            elsewhere[place] = f"{label}: its run folder is not here, nor its record in the committed results"
            continue
        figures = run_record(out / trial["run_folder"])
        setting = setting_name(figures["target_ratio"], figures["granularity"])
        records.append(
            {
                "task": "cell",
                "status": "done",
                "sweep": name,
                "cell": f"{name}_{setting}",
                "setting": setting,
                "seed": params["seed"],
                "trial": trial["number"],
                "run_folder": str(Path(out.name) / trial["run_folder"]),
                "seconds": trial.get("seconds"),
                **figures,
            }
        )
    return records, {place: line for place, line in missing.items() if place not in completed}, elsewhere


def keep_mask(record: dict[str, Any], results: Path) -> None:
    """Copy the record's final mask from its run folder into ``results/masks/`` (committed with
    ``results.json``) and point the record's ``mask`` there, relative to ``results``."""
    source = record.pop("mask_file", None)
    if not source:
        return
    target = results / "masks" / record["sweep"] / f"{record['setting']}_seed{record['seed']}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    from robprune_deploy.atomic import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    record["mask"] = target.relative_to(results).as_posix()


def merged(found: list[dict[str, Any]], committed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This machine's records, and the committed ones of the trials it has no run folder of (this
    machine's record of a trial wins: it was read from the run folder just now)."""
    here = {trial_place(r) for r in found}
    return [*found, *(r for r in committed if r.get("task") == "cell" and trial_place(r) not in here)]


def grouped(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by cell, each cell's sorted by seed."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        cells.setdefault(record["cell"], []).append(record)
    return {name: sorted(rows, key=lambda r: r["seed"]) for name, rows in sorted(cells.items())}


def mask_distances(rows: Sequence[dict[str, Any]], results: Path) -> dict[str, Any] | None:
    """The normalized Hamming distance between the final masks of every two seeds of one cell
    (:func:`robprune_s2ap.stability.mask_distance`: 0 identical, 2 disjoint; half of it is the fraction
    of kept entries swapped), from the masks kept under ``results`` (:func:`keep_mask`); ``None`` for
    a cell without masks or with fewer than 2."""
    files = [(r["seed"], results / r["mask"]) for r in rows if r.get("mask") and (results / r["mask"]).is_file()]
    if len(files) < 2:
        return None
    from robprune_s2ap.stability import load_masks, mask_distance

    masks = {seed: load_masks(path) for seed, path in files}
    pairs = {f"{a}-{b}": mask_distance(masks[a], masks[b]) for a, b in itertools.combinations(sorted(masks), 2)}
    values = list(pairs.values())
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "pairs": pairs,
    }
