"""One prepared GPU check: every CUDA figure the README lacks, in one command of at most 8 minutes.

    python benchmarks/gpu/gpu_check.py --out gpu_out                       # on the GPU machine
    python benchmarks/gpu/gpu_check.py --out /tmp/plan --dry-run           # anywhere: plan and check inputs
    python benchmarks/gpu/gpu_check.py --out /tmp/smoke --smoke --device cpu   # every step, tiny, on CPU

Steps, in order, each in its own process with its own time box (a crash, a hang or a CUDA error
in one step keeps every other step's figures), results written after each step (and by the
steps themselves as they go) to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``:

- ``doctor``: the CUDA execution provider really runs a session (not fallen back), with the reason if not.
- ``onnx_cuda``: ResNet18 and VGG16-bn (CIFAR 32x32), dense and channel-pruned to 50/75% MACs
  (l1_filter, channels a multiple of 8): torch-CUDA vs onnxruntime-CUDA parity, and CUDA latency
  dense vs pruned with I/O binding at batch 1/32/256, fp32 and fp16, next to the MACs reduction.
- ``nccl``: a one-process ``torchrun``: NCCL process group, all-reduce and DDP training steps.
- ``train_throughput``: PGD-AT (PGD-10) training images/s, fp32 vs ``attack.bf16``.
- ``s2ap_hydra``: S2AP/HYDRA mask-search step-time ratio.
- ``fmnist_run``: a full ``robprune run`` of a Fashion-MNIST recipe, time per stage from its MLflow
  runs (skipped with a note when the recipe or the dataset is missing).

No network is used; MLflow tracks to ``OUT/mlflow.db``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUDGET_S = 460  # all steps together: the check fits 8 minutes with its start-up
DATASET_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class Step:
    name: str
    seconds: int  # its time box
    what: str


STEPS = (
    Step("doctor", 30, "onnxruntime CUDA provider really used; torch GPU; versions"),
    Step("onnx_cuda", 150, "torch vs ORT-CUDA parity; CUDA latency dense vs pruned, batch 1/32/256, fp32/fp16"),
    Step("nccl", 40, "one-process torchrun: NCCL group, all-reduce, DDP steps"),
    Step("fmnist_run", 150, "full Fashion-MNIST robprune run, time per stage"),
    Step("train_throughput", 40, "PGD-AT images/s, fp32 vs attack.bf16"),
    Step("s2ap_hydra", 50, "S2AP/HYDRA mask-search step-time ratio"),
)


class Recorder:
    """A step's figures, rewritten atomically after every ``put`` (a killed step keeps what it had)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def append(self, key: str, value: Any) -> None:
        self.put(key, [*self.data.get(key, []), value])


# ---------------------------------------------------------------- inputs and planning (CPU-safe)


def default_recipe() -> Path | None:
    found = sorted((REPO / "recipes" / "fmnist").glob("*.yaml"))
    return found[0] if found else None


def dataset_root(args: argparse.Namespace) -> Path | None:
    candidates = [args.data_root] if args.data_root else []
    kit = os.environ.get("ROBPRUNE_KIT_DATASETS")
    candidates += [Path(kit) / "fashion-mnist"] if kit else []
    candidates += [REPO / ".kit-datasets" / "fashion-mnist", Path("/work/shared/datasets/fashion-mnist")]
    for root in candidates:
        if root and all((root / name).is_file() for name in DATASET_FILES):
            return Path(root)
    return None


def plan(step: Step, args: argparse.Namespace) -> tuple[bool, str]:
    """Whether the step can run, and what it will do or why not (checked without a GPU)."""
    if step.name == "doctor":
        import robprune_deploy.environment  # noqa: F401

        return True, "robprune doctor's probes with evaluate.providers [cuda] and device cuda"
    if step.name == "onnx_cuda":
        import onnxruntime as ort

        from robprune_deploy.algorithms import ALGORITHMS
        from robprune_deploy.models import build_model

        ALGORITHMS.get("l1_filter")
        for model in args.models:
            build_model(model, 10, 3, (0.5,) * 3, (0.25,) * 3)
        if not hasattr(ort.InferenceSession, "io_binding"):
            return False, "this onnxruntime has no I/O binding"
        return True, f"{args.models} at {args.ratios} MACs, batches {args.batches}, fp32 and fp16"
    if step.name == "nccl":
        import torch.distributed as dist
        import torch.distributed.run  # noqa: F401

        nccl = dist.is_available() and dist.is_nccl_available()
        return True, "torchrun --nproc_per_node 1" + ("" if nccl else " (this torch has no NCCL: gloo on CPU)")
    if step.name in ("train_throughput", "s2ap_hydra"):
        from robprune_deploy.algorithms import ALGORITHMS

        ALGORITHMS.get("hydra")
        ALGORITHMS.get("s2ap")
        return True, f"ResNet18 32x32, PGD-10, batch {args.train_batch}"
    if step.name == "fmnist_run":
        return plan_fmnist(args)
    raise ValueError(step.name)


def plan_fmnist(args: argparse.Namespace) -> tuple[bool, str]:
    from robprune_deploy.data import DATASETS
    from robprune_deploy.errors import RobPruneError
    from robprune_deploy.recipe import load_recipe

    recipe_path = args.recipe or default_recipe()
    if recipe_path is None or not Path(recipe_path).is_file():
        return False, f"skipped: no Fashion-MNIST recipe ({recipe_path or 'recipes/fmnist/*.yaml'} not found)"
    root = dataset_root(args)
    if root is None:
        return False, "skipped: no Fashion-MNIST files (--data-root, $ROBPRUNE_KIT_DATASETS or the shared copy)"
    try:
        recipe = load_recipe(recipe_path, [f"data.root={root}", *args.fmnist_set])
    except RobPruneError as exc:
        return False, f"skipped: {exc}"
    if recipe.data.name not in DATASETS.names():
        return False, f"skipped: data.name {recipe.data.name} is not registered in this checkout"
    return True, f"robprune run {recipe_path} with data.root={root}"


# ---------------------------------------------------------------- steps (run in their own process)


def step_doctor(args: argparse.Namespace, rec: Recorder) -> None:
    from robprune_deploy.environment import diagnose
    from robprune_deploy.recipe import Recipe

    recipe = Recipe.model_validate({"device": args.device, "evaluate": {"providers": ["cuda"]}})
    recipe.tracking.tracking_uri = f"sqlite:///{args.out / 'mlflow.db'}"
    found = diagnose(recipe)
    cuda = found.onnxruntime.probes.get("CUDAExecutionProvider")
    rec.put("onnxruntime", f"{found.onnxruntime.package} {found.onnxruntime.version}")
    rec.put("ort_cuda_used", bool(cuda and cuda.works))
    rec.put("ort_cuda_reason", cuda.reason if cuda else "CUDAExecutionProvider not in this build")
    rec.put("gpus", [f"{g.name} ({g.memory_gib} GiB, compute {g.capability})" for g in found.torch.gpus])
    rec.put("torch", f"{found.torch.version} (CUDA {found.torch.cuda_build}, cuDNN {found.torch.cudnn})")
    rec.put("checks", [f"{c.name}: {c.status.value}: {c.detail}" for c in found.checks])
    rec.put("onnxruntime_builds_warning", found.onnxruntime_builds.warning())


def _pruned_models(name: str, ratios: list[float]) -> list[tuple[float, Any, float]]:
    """The dense model and one l1_filter-pruned copy per MACs ratio: (ratio, model, MACs reduction)."""
    import torch
    from torch.utils.data import TensorDataset

    from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
    from robprune_deploy.data import make_loader
    from robprune_deploy.models import build_model
    from robprune_deploy.surgery import count_model

    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    dense = build_model(name, 10, 3, (0.5,) * 3, (0.25,) * 3).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so parity is not measured on identities
        dense.train()
        for _ in range(3):
            dense(torch.rand(32, 3, 32, 32))
        dense.eval()
    dense_macs = count_model(dense, x).macs
    out: list[tuple[float, Any, float]] = [(0.0, dense, 0.0)]
    data = TensorDataset(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    algorithm = ALGORITHMS.get("l1_filter")
    for ratio in ratios:
        model = copy.deepcopy(dense)
        context = PruningContext(
            train_data=make_loader(data, 8, shuffle=False), ratio=ratio, threat=ThreatModel(8 / 255, 2 / 255, 1),
            example_inputs=x,
        )  # fmt: skip
        stripped = algorithm(algorithm.Config.model_validate({"round_to": 8})).apply(model, context).strip().eval()
        out.append((ratio, stripped, 1 - count_model(stripped, x).macs / dense_macs))
    return out


def _bound_runner(session: Any, x: Any, device: str) -> Callable[[], None]:
    """One I/O-bound run of ``session`` on ``x`` (input and output stay on the device)."""
    import onnxruntime as ort

    kind = "cuda" if device.startswith("cuda") else "cpu"
    binding = session.io_binding()
    value = ort.OrtValue.ortvalue_from_numpy(x, kind, 0)
    binding.bind_ortvalue_input(session.get_inputs()[0].name, value)
    binding.bind_output(session.get_outputs()[0].name, kind, 0)

    def run() -> None:
        session.run_with_iobinding(binding)

    run.keep = (binding, value)  # type: ignore[attr-defined]
    return run


def step_onnx_cuda(args: argparse.Namespace, rec: Recorder) -> None:
    import numpy as np
    import torch

    from robprune_deploy.evaluation import OnnxClassifier
    from robprune_deploy.export import export_onnx

    providers = ["cuda", "cpu"] if args.device.startswith("cuda") else ["cpu"]
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-onnx-"))
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False  # the torch reference in strict fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    probe = rng.random((64, 3, 32, 32), dtype=np.float32)
    rec.put("parity_reference", "torch in strict fp32 (TF32 off) on 64 random images; onnxruntime with its defaults")
    for name in args.models:
        variants = _pruned_models(name, args.ratios)
        sessions: dict[tuple[float, str], Any] = {}
        for ratio, model, reduction in variants:
            tag = "dense" if ratio == 0 else f"{ratio:.2f}"
            example = torch.rand(1, 3, 32, 32)
            path = export_onnx(copy.deepcopy(model), folder / f"{name}_{tag}.onnx", example)
            onnx_fp32 = OnnxClassifier(path, providers)
            rec.append("providers", {"model": name, "variant": tag, "precision": "fp32", "used": onnx_fp32.provider})
            with torch.no_grad():
                reference = model.to(device)(torch.from_numpy(probe).to(device)).float().cpu().numpy()
            logits = onnx_fp32.predict(probe)
            rec.append("parity", {
                "model": name, "variant": tag, "precision": "fp32", "provider": onnx_fp32.provider,
                "max_abs_diff": float(np.abs(logits - reference).max()),
                "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                "macs_reduction": reduction,
            })  # fmt: skip
            sessions[(ratio, "fp32")] = onnx_fp32.session
            try:
                half = copy.deepcopy(model).half()
                path16 = export_onnx(half, folder / f"{name}_{tag}_fp16.onnx", example.half())
                onnx_fp16 = OnnxClassifier(path16, providers)
                logits16 = onnx_fp16.session.run(None, {onnx_fp16.input_name: probe.astype(np.float16)})[0]
                rec.append("parity", {
                    "model": name, "variant": tag, "precision": "fp16", "provider": onnx_fp16.provider,
                    "max_abs_diff": float(np.abs(logits16.astype(np.float32) - reference).max()),
                    "argmax_agreement": float((logits16.argmax(1) == reference.argmax(1)).mean()),
                    "macs_reduction": reduction,
                })  # fmt: skip
                sessions[(ratio, "fp16")] = onnx_fp16.session
            except Exception as exc:  # fp16 "where supported": record why not
                rec.append("fp16_unsupported", f"{name} {tag}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        for ratio, _, reduction in variants[1:]:
            for precision in ("fp32", "fp16"):
                if (ratio, precision) not in sessions or (0.0, precision) not in sessions:
                    continue
                for batch in args.batches:
                    dtype = np.float16 if precision == "fp16" else np.float32
                    x = rng.random((batch, 3, 32, 32), dtype=np.float32).astype(dtype)
                    try:
                        dense_run = _bound_runner(sessions[(0.0, precision)], x, args.device)
                        pruned_run = _bound_runner(sessions[(ratio, precision)], x, args.device)
                        dense_ms, pruned_ms = _interleaved_ms(dense_run, pruned_run, args.warmup, args.repeats)
                    except Exception as exc:
                        rec.append("latency_errors", f"{name} {ratio} {precision} b{batch}: {exc}")
                        continue
                    macs_x = 1 / (1 - reduction)
                    rec.append("latency", {
                        "model": name, "ratio": ratio, "macs_reduction": round(reduction, 4), "macs_x": macs_x,
                        "batch": batch, "precision": precision, "dense_ms": dense_ms, "pruned_ms": pruned_ms,
                        "speedup": dense_ms / pruned_ms, "speedup_per_macs_x": dense_ms / pruned_ms / macs_x,
                    })  # fmt: skip


def _interleaved_ms(first: Callable[[], None], second: Callable[[], None], warmup: int, repeats: int) -> tuple:
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            bucket.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def step_train_throughput(args: argparse.Namespace, rec: Recorder) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from robprune_deploy import ThreatModel
    from robprune_deploy.data import make_loader
    from robprune_deploy.models import build_model
    from robprune_deploy.training import TrainingPlan, adversarial_train

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    batch, steps = args.train_batch, args.train_steps
    data = TensorDataset(torch.rand(batch * steps, 3, 32, 32), torch.randint(0, 10, (batch * steps,)))
    model = build_model("resnet18", 10, 3, (0.5,) * 3, (0.25,) * 3).to(device)
    rec.put("setup", f"ResNet18 32x32, PGD-10 (eps 8/255), batch {batch}, {steps} steps per timing, {args.device}")
    results: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_ in range(args.rounds + 1):  # round 0 warms cuDNN's autotuner up for both precisions
        for precision in ("fp32", "bf16"):
            threat = ThreatModel(8 / 255, 2 / 255, 10, bf16=precision == "bf16")
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            adversarial_train(
                model, TrainingPlan(epochs=1, lr=0.01), threat,
                lambda e: make_loader(data, batch, shuffle=False), device=device, show_progress=False,
            )  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_:
                results[precision].append(batch * steps / (time.perf_counter() - start))
                rec.put("images_per_second", {k: statistics.median(v) for k, v in results.items() if v})
    fp32, bf16 = (statistics.median(results[k]) for k in ("fp32", "bf16"))
    rec.put("bf16_over_fp32", bf16 / fp32)


def step_s2ap_hydra(args: argparse.Namespace, rec: Recorder) -> None:
    import torch
    from torch.utils.data import TensorDataset

    sys.path.insert(0, str(REPO / "benchmarks"))
    from s2ap_step_cost import step_ms

    from robprune_deploy import ThreatModel
    from robprune_deploy.models import build_model

    torch.backends.cudnn.benchmark = True
    batch, steps = args.train_batch, 6
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(batch * steps, 3, 32, 32), torch.randint(0, 10, (batch * steps,)))
    dense = build_model("resnet18", 10, 3, (0.5,) * 3, (0.25,) * 3)
    threat = ThreatModel(8 / 255, 2 / 255, 10)
    times: dict[str, list[float]] = {"hydra": [], "s2ap": []}
    rec.put("setup", f"ResNet18 32x32, PGD-10, batch {batch}, {steps} steps per epoch, rounds interleaved")
    for _ in range(args.rounds):
        for variant, config in (("hydra", {}), ("s2ap", {"gamma": 0.1, "warmup_epochs": 0})):
            model = copy.deepcopy(dense).to(args.device)
            times[variant].append(step_ms(model, data, threat, batch, args.device, **config))
            rec.put("step_ms", {k: statistics.median(v) for k, v in times.items() if v})
    rec.put("s2ap_over_hydra", statistics.median(times["s2ap"]) / statistics.median(times["hydra"]))


def step_nccl(args: argparse.Namespace, rec: Recorder) -> None:
    report = args.out / "steps" / "nccl_child.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        str(Path(__file__).resolve()), "--nccl-child", str(report), "--device", args.device,
        "--out", str(args.out), "--train-batch", str(args.train_batch),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=_seconds(args, "nccl") - 5)
    if report.is_file():
        for key, value in json.loads(report.read_text()).items():
            rec.put(key, value)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited {done.returncode}: {_tail(done.stderr)}")


def nccl_child(args: argparse.Namespace) -> None:
    """Inside torchrun: the process group, one all-reduce, and DDP training steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from robprune_deploy.models import build_model

    rec = Recorder(Path(args.nccl_child))
    cuda = args.device.startswith("cuda")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend)
    rec.put("backend", dist.get_backend())
    rec.put("world_size", dist.get_world_size())
    if cuda:
        rec.put("nccl_version", ".".join(str(v) for v in torch.cuda.nccl.version()))
    value = torch.full((4,), 2.0, device=device)
    dist.all_reduce(value)
    rec.put("all_reduce_ok", bool(torch.allclose(value.cpu(), torch.full((4,), 2.0 * dist.get_world_size()))))
    model = DistributedDataParallel(
        build_model("resnet18", 10, 3, (0.5,) * 3, (0.25,) * 3).to(device), device_ids=[device] if cuda else None
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = (
        torch.rand(args.train_batch, 3, 32, 32, device=device),
        torch.randint(0, 10, (args.train_batch,), device=device),
    )
    for step in range(8):
        if step == 3:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    rec.put("ddp_images_per_second", 5 * args.train_batch / (time.perf_counter() - start))
    dist.destroy_process_group()


def step_fmnist_run(args: argparse.Namespace, rec: Recorder) -> None:
    ok, note = plan_fmnist(args)
    if not ok:
        rec.put("note", note)
        return
    recipe = args.recipe or default_recipe()
    out = args.out / "fmnist_run"
    db = f"sqlite:///{args.out / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "robprune_deploy.cli.main", "--quiet", "run", str(recipe), "--out", str(out),
        "--tracking-uri", db, "--set", f"data.root={dataset_root(args)}",
    ]  # fmt: skip
    for override in args.fmnist_set:
        command += ["--set", override]
    rec.put("command", " ".join(command[1:]))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_seconds(args, "fmnist_run") - 10)
    except subprocess.TimeoutExpired:
        rec.put("wall_seconds", time.perf_counter() - start)
        rec.put("stage_seconds", _stage_seconds(db, None))  # the stages that finished
        raise RuntimeError(f"robprune run did not finish in {_seconds(args, 'fmnist_run') - 10:.0f} s") from None
    rec.put("wall_seconds", time.perf_counter() - start)
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    keys = ("onnx.provider", "onnx.clean_acc", "onnx.pgd_acc", "torch.pgd_acc", "onnx.max_abs_diff",
            "latency.speedup", "gate.passed", "mlflow.run_id")  # fmt: skip
    rec.put("summary", {k: summary.get(k) for k in keys})
    rec.put("stage_seconds", _stage_seconds(db, summary.get("mlflow.run_id")))
    if done.returncode != 0:
        raise RuntimeError(f"robprune run exited {done.returncode}: {_tail(done.stderr)}")


def _stage_seconds(tracking_uri: str, parent: str | None) -> dict[str, float]:
    """Each finished stage's wall time, from its nested MLflow run (``parent``: default the latest run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if parent is None:
        parents = client.search_runs(experiments, "attributes.start_time > 0", order_by=["attributes.start_time DESC"])
        top = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
        if not top:
            return {}
        parent = top[0].info.run_id
    runs = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{parent}'")
    return {
        r.data.tags.get("mlflow.runName", r.info.run_id): round((r.info.end_time - r.info.start_time) / 1000, 1)
        for r in sorted(runs, key=lambda r: r.info.start_time)
        if r.info.end_time and r.info.status == "FINISHED"
    }


STEP_FUNCTIONS: dict[str, Callable[[argparse.Namespace, Recorder], None]] = {
    "doctor": step_doctor,
    "onnx_cuda": step_onnx_cuda,
    "nccl": step_nccl,
    "train_throughput": step_train_throughput,
    "s2ap_hydra": step_s2ap_hydra,
    "fmnist_run": step_fmnist_run,
}
STEP_BY_NAME = {s.name: s for s in STEPS}


def _seconds(args: argparse.Namespace, name: str) -> float:
    """The seconds this step was given (its box, or less when the overall budget runs out)."""
    return args.step_seconds or STEP_BY_NAME[name].seconds * (args.box_scale or (6.0 if args.smoke else 1.0))


# ---------------------------------------------------------------- the driver


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _write(out: Path, results: dict[str, Any]) -> None:
    for name, text in (
        ("gpu_check.json", json.dumps(results, indent=2, default=str)),
        ("gpu_check.md", render(results)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(out / name)


def run_step(step: Step, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Run one step in its own process group, killed after ``seconds``; its figures survive a kill."""
    figures = args.out / "steps" / f"{step.name}.json"
    figures.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--step", step.name, "--step-seconds", str(seconds)]
    command += args.passthrough
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=seconds)
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        status = "timeout"
    result: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - started, 1), "time_box": seconds}
    if figures.is_file():
        result["figures"] = json.loads(figures.read_text())
    if status != "ok":
        result["error"] = f"killed after {seconds:.0f} s" if status == "timeout" else _tail(stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, gpu_check.md, steps/")
    parser.add_argument("--dry-run", action="store_true", help="plan every step and check its inputs; run nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for a CPU run of every code path)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--recipe", type=Path, default=None, help="Fashion-MNIST recipe (default recipes/fmnist/*.yaml)"
    )
    parser.add_argument("--data-root", type=Path, default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--fmnist-set", action="append", default=[], metavar="K=V", help="override for the run")
    parser.add_argument("--only", nargs="*", default=None, help="run only these steps")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps together")
    parser.add_argument(
        "--box-scale", type=float, default=None, help="multiply every time box (default 1; 6 with --smoke)"
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--nccl-child", help=argparse.SUPPRESS)
    parser.add_argument("--step-seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-batch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--dry-run",)]
    sizes(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps").mkdir(exist_ok=True)
    if args.nccl_child:
        nccl_child(args)
        return 0
    if args.step:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        STEP_FUNCTIONS[args.step](args, Recorder(args.out / "steps" / f"{args.step}.json"))
        return 0
    return drive(args)


def sizes(args: argparse.Namespace) -> None:
    """Problem sizes: the real check, or tiny ones for --smoke."""
    args.models = ["resnet18", "vgg16_bn"]
    args.ratios = [0.5, 0.75]
    args.batches = [1, 32, 256]
    args.warmup, args.repeats, args.train_steps, args.rounds = 10, 50, 8, 3
    if args.smoke:
        args.models, args.ratios, args.batches = ["resnet18"], [0.5], [1, 4]
        args.warmup, args.repeats, args.train_steps, args.rounds = 1, 3, 2, 1
        if "--train-batch" not in (args.passthrough or []):
            args.train_batch = 8
            args.passthrough += ["--train-batch", "8"]
        tiny = [
            "pretrain.epochs=1", "finetune.epochs=1", "data.train_subset=256", "data.test_subset=128",
            "evaluate.num_examples=32", "evaluate.square_queries=5", "evaluate.square_examples=8",
        ]  # fmt: skip
        new = [o for o in tiny if o not in args.fmnist_set]
        args.fmnist_set = [*args.fmnist_set, *new]
        args.passthrough += [x for o in new for x in ("--fmnist-set", o)]


def drive(args: argparse.Namespace) -> int:
    import platform

    results: dict[str, Any] = {
        "mode": "dry-run" if args.dry_run else ("smoke" if args.smoke else "check"),
        "device": args.device,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps": {},
    }
    deadline = time.perf_counter() + args.budget
    scale = args.box_scale or (6.0 if args.smoke else 1.0)
    chosen = [Step(s.name, round(s.seconds * scale), s.what) for s in STEPS if args.only is None or s.name in args.only]
    results["planned_seconds"] = sum(s.seconds for s in chosen)
    for step in chosen:
        try:
            runnable, note = plan(step, args)
        except Exception as exc:
            runnable, note = False, f"input check failed: {type(exc).__name__}: {exc}"
        entry: dict[str, Any] = {"what": step.what, "time_box": step.seconds, "plan": note}
        if args.dry_run or not runnable:
            entry["status"] = "planned" if runnable else ("skipped" if note.startswith("skipped") else "blocked")
        else:
            left = deadline - time.perf_counter()
            if left < 10:
                entry.update(status="not run", error="the overall budget was spent")
            else:
                print(f"[gpu_check] {step.name} (at most {min(step.seconds, left):.0f} s) ...", flush=True)
                entry.update(run_step(step, args, min(step.seconds, left)))
                print(f"[gpu_check] {step.name}: {entry['status']} in {entry['seconds']} s", flush=True)
        results["steps"][step.name] = entry
        _write(args.out, results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _write(args.out, results)
    print((args.out / "gpu_check.md").read_text())
    bad = [n for n, e in results["steps"].items() if e["status"] in ("blocked", "failed", "timeout")]
    if args.dry_run:
        over = results["planned_seconds"] > args.budget
        if over:
            print(f"error: the steps' time boxes add up to {results['planned_seconds']} s > --budget {args.budget:g}")
        return 1 if bad or over else 0
    return 1 if bad else 0


# ---------------------------------------------------------------- the report


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    out = [f"# GPU check ({results['mode']}, device {results['device']}, {results['host']}, {results['started']})", ""]
    out += ["| step | status | seconds | note |", "|---|---|---|---|"]
    for name, entry in results["steps"].items():
        note = entry.get("error") or entry.get("plan", "")
        out.append(f"| {name} | {entry['status']} | {entry.get('seconds', '')} | {note} |")
    for name, entry in results["steps"].items():
        figures = entry.get("figures")
        if not figures:
            continue
        out += ["", f"## {name}", ""]
        for key, value in figures.items():
            if key == "latency":
                columns = ["model", "ratio", "macs_reduction", "macs_x", "batch", "precision", "dense_ms", "pruned_ms",
                           "speedup", "speedup_per_macs_x"]  # fmt: skip
                out += [_table(value, columns), ""]
            elif key == "parity":
                columns = ["model", "variant", "precision", "provider", "max_abs_diff", "argmax_agreement"]
                out += [_table(value, columns), ""]
            elif key == "providers":
                used = sorted({f"{p['used']}" for p in value})
                out += [f"- sessions ran on: {', '.join(used)} ({len(value)} sessions)", ""]
            else:
                out.append(f"- {key}: {json.dumps(value, default=str) if not isinstance(value, str) else value}")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
