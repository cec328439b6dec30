"""From a plain torch ``nn.Module`` to a gated ONNX file with the Python API (digits, CPU, about a minute)."""

import argparse
import copy
from pathlib import Path

import nncf
import torch
from torch import nn
from torch.utils.data import DataLoader

import robprune_deploy as rp
from robprune_deploy.data import build_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10, help="adversarial training epochs (fewer for a smoke test)")
parser.add_argument("--out", type=Path, default=Path("runs/api_example"))
parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override the gate's recipe")
args = parser.parse_args()
torch.manual_seed(0)


class Net(nn.Module):  # any classifier whose inputs are pixels in [0, 1]
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


data = build_dataset("digits")  # 16x16 gray digits; the gate below measures on the same test split
train = DataLoader(data.train, batch_size=64, shuffle=True)
threat = rp.ThreatModel(eps=0.2, step_size=0.05, steps=5)  # L-inf, in pixel units

# 1. Make the model robust first: pruning a model that never saw an attack gives nothing worth gating.
model = rp.adversarial_train(Net(), train, threat, epochs=args.epochs, lr=0.05)
dense = copy.deepcopy(model)

# 2. Search 80% unstructured masks with S2AP under the robust loss; the head stays dense.
result = rp.prune(model, "s2ap", nncf.Dataset(train), ratio=0.8, attack=threat,
                  ignored_scope=nncf.IgnoredScope(names=["head"]),
                  epochs=max(1, args.epochs // 2), warmup_epochs=args.epochs // 4, gamma=0.01)  # fmt: skip
print(result.statistics().layer_table())

# 3. Fine-tune adversarially with the masks frozen, then fold them into plain weights.
rp.adversarial_train(result.model, train, threat, epochs=max(1, args.epochs // 3), lr=0.01)
deployable = result.strip()

# 4. Export both models and gate the pruned one against the dense one under onnxruntime.
args.out.mkdir(parents=True, exist_ok=True)
example = data.test[0][0].unsqueeze(0)
rp.export_onnx(dense, args.out / "dense.onnx", example)
rp.export_onnx(deployable, args.out / "model.onnx", example)
verdict = rp.gate_onnx(
    args.out / "model.onnx",
    baseline=args.out / "dense.onnx",
    report=args.out / "gate",
    recipe={
        "attack": {"eps": 0.2, "step_size": 0.05},
        "evaluate": {"num_examples": 200, "square_queries": 100, "square_examples": 100},
        "gate": {"min_clean_acc": 0.85, "min_pgd_acc": 0.2, "max_pgd_drop": 0.05},
    },
    overrides=args.set,  # e.g. --set evaluate.num_examples=50, as on the command line
)
print(f"gate {'PASSED' if verdict.passed else 'FAILED: ' + ', '.join(verdict.failures)} ({args.out / 'gate'})")
raise SystemExit(0 if verdict.passed else 1)
