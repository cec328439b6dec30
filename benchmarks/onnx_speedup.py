"""Measured onnxruntime speed-up of channel-pruned models vs MACs reduction.

CIFAR-style ResNet18 and VGG16-bn (32x32), and the vision transformers MobileViT-XXS and ViT-Tiny
(timm, at their ImageNet resolution unless ``--image-size`` says otherwise; heads, MLP units and
convolution channels pruned). Random weights are enough for latency. Channels are removed with the
l1_filter algorithm at a MACs target (exact counting), both models are exported to ONNX and timed
interleaved under the same session options.

    python benchmarks/onnx_speedup.py                        # ResNet18, VGG16-bn: 50% and 75%, batch 1 and 32
    python benchmarks/onnx_speedup.py --model mobilevit_xxs vit_tiny --batches 1 8
    python benchmarks/onnx_speedup.py --repeats 10 --providers cuda cpu
    python benchmarks/onnx_speedup.py --json benchmarks/results/onnx_speedup.json   # the docs' table
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from provenance import provenance
from result_tables import column, results_file, table, text_column
from torch.utils.data import TensorDataset

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.data import make_loader
from robprune_deploy.evaluation import OnnxClassifier, compare_latency
from robprune_deploy.export import export_onnx
from robprune_deploy.models import build_model
from robprune_deploy.surgery import count_model

MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    "resnet18": ("resnet18", {}, 32),
    "vgg16_bn": ("vgg16_bn", {}, 32),
    "mobilevit_xxs": ("timm:mobilevit_xxs", {}, 256),
    "vit_tiny": ("timm:vit_tiny_patch16_224", {}, 224),
}
"""benchmark name -> (model.name, model.kwargs, default input side)."""
SHOWN = {
    "resnet18": "ResNet18 (CIFAR)",
    "vgg16_bn": "VGG16-bn",
    "mobilevit_xxs": "MobileViT-XXS",
    "vit_tiny": "ViT-Tiny",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet18", "vgg16_bn"], choices=sorted(MODELS))
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model's own)")
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--providers", nargs="*", default=["cpu"])
    parser.add_argument("--round-to", type=int, default=8, help="kept channels rounded to a multiple of this")
    parser.add_argument("--json", type=Path, default=None, help="also write the docs' table (benchmarks/results/)")
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="onnx-speedup-"))
    print(
        f"{'model':<13} {'side':>4} {'ratio':>5} {'MACs red.':>9} {'MACs x':>7} "
        + " ".join(
            f"{'b' + str(b) + ' dense ms':>13} {'pruned ms':>10} {'speed-up':>8} {'/MACs x':>7}" for b in args.batches
        )
    )
    rows: list[list[object]] = []  # the docs' table: speed-up and its fraction of the MACs reduction
    for name in args.models:
        model_name, kwargs, native = MODELS[name]
        side = args.image_size or native
        x = torch.rand(1, 3, side, side)
        data = TensorDataset(torch.rand(8, 3, side, side), torch.randint(0, 10, (8,)))

        def fresh(model_name: str = model_name, kwargs: dict[str, Any] = kwargs, side: int = side) -> torch.nn.Module:
            return build_model(model_name, 10, 3, (0.5,) * 3, (0.25,) * 3, image_size=side, kwargs=kwargs)

        dense = fresh().eval()
        dense_path = export_onnx(dense, folder / f"{name}_dense.onnx", x)
        dense_macs = count_model(dense, x).macs
        for ratio in args.ratios:
            model = fresh()
            model.load_state_dict(dense.state_dict())
            context = PruningContext(
                train_data=make_loader(data, 8, shuffle=False),
                ratio=ratio,
                threat=ThreatModel(8 / 255, 2 / 255, 1),
                example_inputs=x,
            )
            algorithm = ALGORITHMS.get("l1_filter")
            config = algorithm.Config.model_validate({"round_to": args.round_to})
            stripped = algorithm(config).apply(model, context).strip().eval()
            macs = count_model(stripped, x).macs
            path = export_onnx(stripped, folder / f"{name}_{ratio}.onnx", x)
            line = f"{name:<13} {side:>4} {ratio:>5.2f} {1 - macs / dense_macs:>9.3f} {dense_macs / macs:>7.2f} "
            row: list[object] = [SHOWN[name], side, [100 * ratio, 100 * (1 - macs / dense_macs)]]
            for batch in args.batches:
                d, p = compare_latency(
                    OnnxClassifier(dense_path, args.providers),
                    OnnxClassifier(path, args.providers),
                    (3, side, side),
                    batch,
                    args.warmup,
                    args.repeats,
                )
                speedup = d.median_ms / p.median_ms
                line += (
                    f"{d.median_ms:>13.3f} {p.median_ms:>10.3f} {speedup:>8.2f} {speedup / (dense_macs / macs):>7.2f} "
                )
                row.append([speedup, speedup / (dense_macs / macs)])
            print(line)
            rows.append(row)
    if args.json is not None:
        columns = [text_column("model"), column("side"), column("MACs target (removed)", "{:.0f}% ({:.1f}%)")]
        columns += [column(f"batch {b} speed-up (/MACs x)", "{:.2f} ({:.2f})") for b in args.batches]
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps(results_file(provenance(), {"main": table(columns, rows)}, setup=setup), indent=2)
        )


if __name__ == "__main__":
    main()
