"""INT8 on top of channel pruning: onnxruntime latency and robust accuracy, side by side in one run.

For each model: dense FP32, channel-pruned FP32 (l1_filter at each MACs ratio, exact counting),
dense INT8 and pruned INT8 (``nncf.quantize``, ONNX backend, on the exported FP32 files), timed
interleaved against the dense FP32 file under the same session options, at batch 1 and 32. Robust
accuracy: PGD crafted on the torch model for FP32; for INT8 the per-example worst case of PGD on the
straight-through twin and PGD transferred from the FP32 model, every input classified by onnxruntime.

The digits CNN and the Fashion-MNIST CNN are adversarially trained here (briefly: ``--epochs``, on
``--train-images``), pruned, then adversarially fine-tuned for ``--finetune-epochs``; the CIFAR-style
ResNet18 keeps random weights (latency only: its accuracy columns say n/a). The ``dense FP32`` row
times the dense file against itself: its ratio shows the timing noise of the machine. Sessions run
one intra-op thread by default (``--threads``): two sessions' spinning thread pools on a small
machine would otherwise slow each other down.

    python benchmarks/int8_speedup.py                                   # digits, fmnist, resnet18
    python benchmarks/int8_speedup.py --fmnist-root /path/to/fashion-mnist --repeats 50   # the docs' figures
    python benchmarks/int8_speedup.py --repeats 50 --json benchmarks/results/int8_speedup.json   # the docs' table
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from provenance import provenance
from result_tables import column, results_file, table, text_column
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.data import build_dataset, make_loader, seeded_subset
from robprune_deploy.evaluation import Artifact, EvaluationProtocol, OnnxClassifier, compare_latency, evaluate_artifact
from robprune_deploy.export import export_onnx
from robprune_deploy.gate.measure import twin_of
from robprune_deploy.models import build_model
from robprune_deploy.quantization import quantize_onnx
from robprune_deploy.surgery import count_model
from robprune_deploy.training import TrainingPlan, adversarial_train, evaluate_robustness

MODELS: dict[str, tuple[str, str | None, int, ThreatModel]] = {
    "digits": ("digits_cnn", "digits", 16, ThreatModel(0.2, 0.05, 10)),
    "fmnist": ("fmnist_cnn", "fashion_mnist", 28, ThreatModel(0.1, 0.025, 10)),
    "resnet18": ("resnet18", None, 32, ThreatModel(8 / 255, 2 / 255, 10)),
}
"""benchmark name -> (model.name, dataset (None: random weights and inputs), input side, eval threat)."""


def _data(
    dataset: str | None, side: int, args: argparse.Namespace
) -> tuple[Any, Any, tuple[float, ...], tuple[float, ...]]:
    if dataset is None:
        x = torch.rand(256, 3, side, side)
        random = TensorDataset(x, torch.randint(0, 10, (256,)))
        return random, random, (0.5,) * 3, (0.25,) * 3
    bundle = build_dataset(dataset, args.fmnist_root if dataset == "fashion_mnist" else None, side, augment=False)
    train = seeded_subset(bundle.train, args.train_images, 0)
    return train, seeded_subset(bundle.test, args.examples, 0), bundle.mean, bundle.std


def _train(model: torch.nn.Module, train: Any, epochs: int, lr: float, threat: ThreatModel) -> None:
    if epochs:
        adversarial_train(
            model,
            TrainingPlan(epochs=epochs, lr=lr),
            ThreatModel(threat.eps, threat.step_size * 2, 3),
            lambda e: make_loader(train, 64, shuffle=True, epoch=e),
            device=torch.device("cpu"),
            stage="benchmark",
            show_progress=False,
        )


def _robust(model: torch.nn.Module, test: Any, threat: ThreatModel) -> float:
    return evaluate_robustness(model.eval(), make_loader(test, 256, shuffle=False), torch.device("cpu"), threat)[
        "pgd_acc"
    ]


@dataclass(frozen=True)
class Setup:
    test: Any
    batches: list[Any]
    threat: ThreatModel
    calibration: Any
    trained: bool
    dense_macs: int


Variant = tuple[float, str, Path, float | None]


def measure_variants(
    fp32_path: Path, fp32_model: torch.nn.Module, macs: int, label: str, setup: Setup
) -> list[Variant]:
    """The FP32 file and its INT8 model: MACs reduction, label, file and robust accuracy (None untrained)."""
    fp32_acc = _robust(fp32_model, setup.test, setup.threat) if setup.trained else None
    int8_path = quantize_onnx(fp32_path, fp32_path.with_suffix(".int8.onnx"), setup.calibration)
    int8_acc = None
    if setup.trained:
        int8 = Artifact.of(int8_path, "int8", providers=["cpu"])
        twins = {"ste": twin_of(int8_path), "transfer": fp32_model}
        int8_acc = evaluate_artifact(int8, EvaluationProtocol(setup.threat), setup.batches, twins=twins).pgd_acc
    ratio = setup.dense_macs / macs
    return [(ratio, f"{label} FP32", fp32_path, fp32_acc), (ratio, f"{label} INT8", int8_path, int8_acc)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=sorted(MODELS))
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="dense adversarial training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--examples", type=int, default=300, help="test images robust accuracy is measured on")
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--fmnist-root", type=Path, default=None, help="Fashion-MNIST IDX folder (default: Debian's)")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads per session (0: its default)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the docs' table (benchmarks/results/)")
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="int8-speedup-"))
    rows: list[list[object]] = []  # the docs' table, one row per printed line
    header = f"{'model':<9} {'variant':<16} {'MACs x':>6} {'PGD acc':>7} {'INT8 drop':>9} "
    print(header + " ".join(f"{'b' + str(b) + ' ms':>9} {'x dense':>7}" for b in args.batches))
    for name in args.models:
        model_name, dataset, side, threat = MODELS[name]
        channels = 3 if dataset is None else 1
        train, test, mean, std = _data(dataset, side, args)
        x = torch.stack([train[i][0] for i in range(1)])
        dense = build_model(model_name, 10, channels, mean, std, image_size=side)
        _train(dense, train, args.epochs if dataset else 0, 0.05, threat)
        dense.eval()
        calibration = torch.stack([train[i][0] for i in range(min(args.calibration, len(train)))]).numpy()
        batches = list(make_loader(test, 256, shuffle=False))
        dense_macs = count_model(dense, x).macs
        dense_path = export_onnx(dense, folder / f"{name}_dense.onnx", x)
        variants: list[tuple[float, str, Path, float | None]] = []

        setup = Setup(test, batches, threat, calibration, dataset is not None, dense_macs)
        variants += measure_variants(dense_path, dense, dense_macs, "dense", setup)
        for ratio in args.ratios:
            model = build_model(model_name, 10, channels, mean, std, image_size=side)
            model.load_state_dict(dense.state_dict())
            context = PruningContext(
                train_data=make_loader(train, 64, shuffle=False), ratio=ratio, threat=threat, example_inputs=x
            )
            algorithm = ALGORITHMS.get("l1_filter")
            stripped = algorithm(algorithm.Config.model_validate({"round_to": 8})).apply(model, context).strip()
            _train(stripped, train, args.finetune_epochs if dataset else 0, 0.01, threat)
            stripped.eval()
            path = export_onnx(stripped, folder / f"{name}_{ratio}.onnx", x)
            variants += measure_variants(path, stripped, count_model(stripped, x).macs, f"pruned {ratio:.0%}", setup)
        shape = tuple(x.shape[1:])
        for macs_x, label, path, acc in variants:
            fp32_label = label.replace("INT8", "FP32")
            fp32_acc = next(a for _, lab, _, a in variants if lab == fp32_label)
            drop = None if acc is None or fp32_acc is None else fp32_acc - acc
            shown_drop = "" if drop is None or "FP32" in label else f"{drop:+.3f}"
            line = f"{name:<9} {label:<16} {macs_x:>6.2f} {'n/a' if acc is None else f'{acc:.3f}':>7} {shown_drop:>9} "
            row: list[object] = [name, label, macs_x, "n/a" if acc is None else acc]
            row.append(None if drop is None or "FP32" in label else drop)
            for batch in args.batches:
                d, c = compare_latency(
                    OnnxClassifier(dense_path, ["cpu"], args.threads),
                    OnnxClassifier(path, ["cpu"], args.threads),
                    shape,
                    batch,
                    args.warmup,
                    args.repeats,
                )
                line += f"{c.median_ms:>9.3f} {d.median_ms / c.median_ms:>7.2f} "
                row += [c.median_ms, d.median_ms / c.median_ms]
            print(line, flush=True)
            rows.append(row)
    if args.json is not None:
        columns = [
            text_column("model"),
            text_column("variant"),
            column("MACs x", "{:.2f}"),
            column("PGD acc", "{:.3f}"),
        ]
        columns.append(column("INT8 drop", "{:+.3f}"))
        for b in args.batches:
            columns += [column(f"b{b} ms", "{:.3f}"), column(f"b{b} x dense", "{:.2f}")]
        setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps(results_file(provenance(), {"main": table(columns, rows)}, setup=setup), indent=2)
        )


if __name__ == "__main__":
    main()
