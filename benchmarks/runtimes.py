"""OpenVINO against onnxruntime: latency of channel-pruned and dense models, side by side.

CIFAR-style ResNet18 and VGG16-bn (32x32, random weights: enough for latency), channels removed by
l1_filter at a MACs target (``--round-to`` 8 by default), both models exported to ONNX once and served
by every runtime of ``--runtimes``, single-threaded by default (``--threads``). Each pair of sessions
runs interleaved, so machine drift hits both alike, and every ratio has its 95% bootstrap interval
over the interleaved rounds (:func:`robprune_deploy.evaluation.latency.speedup_interval`):

- per runtime, the pruned model's speed-up over the dense one (what the MACs reduction became);
- per model, each other runtime's speed against the first (``x1.10``: it ran 1.10x as fast).

    python benchmarks/runtimes.py                                  # ResNet18, VGG16-bn: 50% and 75%
    python benchmarks/runtimes.py --models digits_cnn --repeats 10 # a smoke run in seconds
    python benchmarks/runtimes.py --json benchmarks/results/runtimes.json   # with its provenance
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
from robprune_deploy.evaluation import Artifact, Speedup, compare_speed
from robprune_deploy.export import export_onnx
from robprune_deploy.models import build_model
from robprune_deploy.runtime import apply_thread_policy
from robprune_deploy.surgery import count_model

MODELS: dict[str, tuple[str, int, int]] = {
    "resnet18": ("resnet18", 3, 32),
    "vgg16_bn": ("vgg16_bn", 3, 32),
    "digits_cnn": ("digits_cnn", 1, 16),
}
"""benchmark name -> (model.name, channels, input side)."""
SHOWN = {"resnet18": "ResNet18 (CIFAR)", "vgg16_bn": "VGG16-bn", "digits_cnn": "digits CNN"}


def pruned_pair(name: str, ratio: float, round_to: int, folder: Path) -> tuple[Path, Path, float]:
    """The dense and the l1_filter-pruned model's ONNX files, and the MACs fraction removed."""
    model_name, channels, side = MODELS[name]
    x = torch.rand(1, channels, side, side)

    def fresh() -> torch.nn.Module:
        return build_model(model_name, 10, channels, (0.5,) * channels, (0.25,) * channels, image_size=side)

    torch.manual_seed(0)
    dense = fresh().eval()
    model = fresh()
    model.load_state_dict(dense.state_dict())
    data = TensorDataset(torch.rand(8, channels, side, side), torch.randint(0, 10, (8,)))
    context = PruningContext(
        train_data=make_loader(data, 8, shuffle=False), ratio=ratio, threat=ThreatModel(8 / 255, 2 / 255, 1),
        example_inputs=x,
    )  # fmt: skip
    algorithm = ALGORITHMS.get("l1_filter")
    config = algorithm.Config.model_validate({"round_to": round_to})
    stripped = algorithm(config).apply(model, context).strip().eval()
    removed = 1 - count_model(stripped, x).macs / count_model(dense, x).macs
    dense_file = export_onnx(dense, folder / f"{name}_dense.onnx", x)
    return dense_file, export_onnx(stripped, folder / f"{name}_{ratio}.onnx", x), removed


def _interval(s: Speedup) -> list[Any]:
    return [s.ratio, s.low, s.high]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet18", "vgg16_bn"], choices=sorted(MODELS))
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--runtimes", nargs="*", default=["onnxruntime", "openvino"])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of every runtime")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--round-to", type=int, default=8, help="kept channels rounded to a multiple of this")
    parser.add_argument("--json", type=Path, default=None, help="also write the table with its provenance")
    args = parser.parse_args()
    apply_thread_policy(args.threads, announce=False)  # torch too: nothing else competes for the cores
    folder = Path(tempfile.mkdtemp(prefix="runtimes-"))
    first, others = args.runtimes[0], args.runtimes[1:]
    rows: list[list[object]] = []
    for name in args.models:
        shape = (MODELS[name][1], MODELS[name][2], MODELS[name][2])
        for ratio in args.ratios:
            dense_file, pruned_file, removed = pruned_pair(name, ratio, args.round_to, folder)
            served = {
                runtime: {
                    role: Artifact.of(file, runtime=runtime, providers=["cpu"]).open(threads=args.threads)
                    for role, file in (("dense", dense_file), ("pruned", pruned_file))
                }
                for runtime in args.runtimes
            }
            for batch in args.batches:
                row: list[object] = [SHOWN[name], [100 * ratio, 100 * removed], batch]
                line = f"{name:<11} {ratio:>4.2f} MACs -{100 * removed:4.1f}% b{batch:<3}"
                for runtime in args.runtimes:
                    dense, pruned, speedup = compare_speed(
                        served[runtime]["dense"], served[runtime]["pruned"], shape, batch, args.warmup, args.repeats
                    )
                    row += [pruned.median_ms, _interval(speedup)]
                    line += (
                        f" | {runtime} pruned {pruned.median_ms:.3f} ms, dense {dense.median_ms:.3f} ms, "
                        f"x{speedup.ratio:.2f} [{speedup.low:.2f}-{speedup.high:.2f}]"
                    )
                for runtime in others:
                    for role in ("pruned", "dense"):
                        _, _, versus = compare_speed(
                            served[first][role], served[runtime][role], shape, batch, args.warmup, args.repeats
                        )
                        row.append(_interval(versus))
                        line += f" | {runtime}/{first} {role} x{versus.ratio:.2f} [{versus.low:.2f}-{versus.high:.2f}]"
                print(line, flush=True)
                rows.append(row)
    if args.json is not None:
        columns = [text_column("model"), column("MACs target (removed)", "{:.0f}% ({:.1f}%)"), column("batch")]
        for runtime in args.runtimes:
            speedup = column(f"{runtime} speed-up", "x{:.2f} [{:.2f}-{:.2f}]")
            columns += [column(f"{runtime} pruned ms", "{:.3f}"), speedup]
        for runtime in others:
            columns += [
                column(f"{runtime} vs {first}, {role}", "x{:.2f} [{:.2f}-{:.2f}]") for role in ("pruned", "dense")
            ]
        setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
        document = results_file(provenance(), {"main": table(columns, rows)}, setup=setup)
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
