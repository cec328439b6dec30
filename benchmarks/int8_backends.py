"""NNCF's ONNX backend vs its torch backend for INT8: onnxruntime latency of the two INT8 files.

Both quantize the digits CNN (random weights, the same calibration images): the ONNX backend on the
exported FP32 file (what ``robprune quantize`` does), the torch backend on the module, followed by
``nncf.strip`` and export. The torch backend JIT-compiles NNCF's C++ kernels on first use; on a slow
machine raise NNCF's limit:

    NNCF_EXTENSION_LOAD_TIMEOUT=0 python benchmarks/int8_backends.py
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import nncf
import onnx
import torch

from robprune_deploy.data import build_dataset
from robprune_deploy.evaluation import OnnxClassifier, compare_latency
from robprune_deploy.export import export_onnx
from robprune_deploy.models import build_model
from robprune_deploy.quantization import initializer_types, quantize_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="int8-backends-"))
    data = build_dataset("digits", None, 16)
    model = build_model("digits_cnn", 10, 1, data.mean, data.std).eval()
    example = torch.zeros(1, 1, 16, 16)
    calibration = data.train.tensors[0][:256]  # type: ignore[attr-defined]
    fp32 = export_onnx(model, folder / "fp32.onnx", example)
    onnx_backend = quantize_onnx(fp32, folder / "onnx_backend.onnx", calibration.numpy())
    batches = [calibration[i : i + 32] for i in range(0, len(calibration), 32)]
    quantized = nncf.strip(nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches)), example_input=example)
    torch_backend = folder / "torch_backend.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            quantized, (example,), str(torch_backend), input_names=["input"], output_names=["logits"],
            opset_version=18, dynamo=False, dynamic_axes={"input": {0: "batch"}},
        )  # fmt: skip
    a, b = OnnxClassifier(onnx_backend, ["cpu"]), OnnxClassifier(torch_backend, ["cpu"])
    x = data.test.tensors[0].numpy()  # type: ignore[attr-defined]
    agreement = (a.predict(x).argmax(1) == b.predict(x).argmax(1)).mean()
    print(f"initializers: onnx backend {dict(initializer_types(onnx.load(str(onnx_backend))))}")
    print(f"              torch backend {dict(initializer_types(onnx.load(str(torch_backend))))}")
    print(f"argmax agreement of the two INT8 models on {len(x)} digits test images: {agreement:.4f}")
    for batch in (1, 32):
        ta, tb = compare_latency(a, b, (1, 16, 16), batch, 5, args.repeats)
        print(
            f"batch {batch}: onnx backend {ta.median_ms:.3f} ms, torch backend {tb.median_ms:.3f} ms "
            f"(x{tb.median_ms / ta.median_ms:.2f})"
        )


if __name__ == "__main__":
    main()
