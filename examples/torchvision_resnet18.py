"""A torchvision ResNet18 (3-channel stem) on 1-channel digits: repeat the gray channel inside the model,
remove half of its MACs as whole channels, and export an ONNX graph that still takes 1-channel input."""

import argparse
from pathlib import Path

import nncf
import onnx
import torch
import torchvision
from torch.utils.data import DataLoader, Subset

import robprune_deploy as rp
from robprune_deploy.data import build_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5, help="adversarial training epochs")
parser.add_argument("--train-examples", type=int, default=None, help="train on a subset (a smoke test)")
parser.add_argument("--out", type=Path, default=Path("runs/torchvision_example"))
args = parser.parse_args()
torch.manual_seed(0)

data = build_dataset("digits")  # 1 x 16 x 16, pixels in [0, 1]
train_set = data.train if args.train_examples is None else Subset(data.train, range(args.train_examples))
train = DataLoader(train_set, batch_size=64, shuffle=True)
threat = rp.ThreatModel(eps=0.2, step_size=0.05, steps=3)

# The input module normalizes the gray channel and repeats it 3 times for the RGB stem
# (what `--set data.channels=3` does in a recipe): the deployed model takes the data as it is.
model = rp.NormalizedClassifier(torchvision.models.resnet18(num_classes=10), data.mean, data.std, channels=3)
rp.adversarial_train(model, train, threat, epochs=args.epochs, lr=0.05)

# Remove 50% of the MACs as whole channels of coupled groups (residual adds included).
result = rp.prune(model, "l1_filter", nncf.Dataset(train), ratio=0.5, attack=threat, round_to=8)
stats = result.statistics()
print(f"MACs {stats.macs_dense:,} -> {stats.macs_pruned:,}, params {stats.params_dense:,} -> {stats.params_pruned:,}")
deployable = result.strip()  # a smaller ResNet18, no masks
rp.adversarial_train(deployable, train, threat, epochs=max(1, args.epochs // 2), lr=0.01)

args.out.mkdir(parents=True, exist_ok=True)
path = rp.export_onnx(deployable, args.out / "model.onnx", data.test[0][0].unsqueeze(0))
shape = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
test = [(x, y) for x, y in DataLoader(Subset(data.test, range(128)), batch_size=64)]
report = rp.evaluate_onnx(path, test, torch_model=deployable, threat=threat)
print(f"ONNX input {shape}; onnxruntime clean {report.clean_acc:.3f}, PGD {report.pgd_acc:.3f}")
