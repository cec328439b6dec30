"""Shared fixtures: the embedded digits data and small, really trained models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings

from robprune_deploy.data import DatasetBundle, build_dataset
from robprune_deploy.models import build_model
from robprune_deploy.pipeline.recipe_threads import forward_macs
from robprune_deploy.runtime import apply_thread_policy, choose_threads
from robprune_deploy.runtime.thread_policy import measure_machine

MAX_WORKERS = 4
"""``-n auto`` starts at most this many workers: each holds torch, MLflow and onnxruntime (about
1 GB), and the suite's longest group of tests, not the core count, bounds its time beyond that."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto``: one worker per core the load leaves free (affinity mask and cgroup quota
    respected, as the thread policy does), so that a busy machine is not oversubscribed."""
    return min(MAX_WORKERS, measure_machine().free_cores)


SLOW_MODULES = (
    "test_reliability.py",
    "test_sweep.py",
    "test_autoattack.py",
    "test_distributed.py",
    "test_mlflow_project.py",
    "test_run_output.py",
)
"""Modules of a minute and more, run first: pytest-xdist hands out work units in collection order
(``--no-loadscope-reorder``, pyproject's addopts), so the workers then finish on the short ones
together instead of one of them starting a long module last."""

SHARED_RUN_MODULES = frozenset(
    f"tests/{path.name}" for path in Path(__file__).parent.glob("test_*.py") if "digits_run" in path.read_text()
)
"""The modules that use the session's ``digits_run`` (a whole pipeline, a minute or two): one work unit,
so that one worker builds it."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow modules first, in :data:`SLOW_MODULES` order; every module's tests keep their order."""
    rank = {name: index for index, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's work units: a module each (its module-scoped fixtures are built once), except the
    :data:`SHARED_RUN_MODULES`, which form one."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "digits_run" if module in SHARED_RUN_MODULES else module

    return ModuleScheduling(config, log)


def _suite_threads() -> int:
    """The thread policy's ``auto`` for the digits CNN the tests train (batch 32), chosen once and
    shared among pytest-xdist's workers.

    Exported as ``OMP_NUM_THREADS`` so that in-process runs (whose ``auto`` respects it) and child
    processes use the same count: a run killed and resumed in a child must end bit for bit where an
    in-process reference run ends, and a loaded machine gets no more threads than it has free cores.
    """
    with torch.device("meta"):
        cnn = build_model("digits_cnn", 10, 1, [0.5], [0.5])
    threads = choose_threads("auto", work_macs=forward_macs(cnn, (1, 16, 16)) * 32).threads
    return max(1, threads // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


# No example database (it replays earlier failures): hypothesis would write it into the repository
# while, on another worker (pytest -n), a test checks that nothing there changes.
settings.register_profile("suite", database=None)
settings.load_profile("suite")

SUITE_THREADS = _suite_threads()
os.environ["OMP_NUM_THREADS"] = str(SUITE_THREADS)
torch.set_num_threads(SUITE_THREADS)


@pytest.fixture(autouse=True)
def _suite_threads_for_every_test() -> Iterator[None]:
    """A test whose recipe sets ``runtime.threads`` changes this process's threads; the next test
    starts with the suite's again (``auto`` respects the exported ``OMP_NUM_THREADS``)."""
    yield
    if torch.get_num_threads() != SUITE_THREADS:
        apply_thread_policy("auto")


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    """scikit-learn's digits at 16x16, the project's embedded default data."""
    return build_dataset("digits", None, 16)


@pytest.fixture(scope="session")
def robust_cnn_state(digits: DatasetBundle) -> dict[str, torch.Tensor]:
    """A digits CNN briefly adversarially trained (PGD-3, eps 0.2): a realistic starting point."""
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.data import make_loader
    from robprune_deploy.models import build_model
    from robprune_deploy.training import TrainingPlan, adversarial_train

    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    adversarial_train(
        model,
        TrainingPlan(epochs=4, lr=0.05),
        ThreatModel(0.2, 0.07, 3),
        lambda e: make_loader(digits.train, 32, shuffle=True, epoch=e),
        device=torch.device("cpu"),
        stage="fixture",
        show_progress=False,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def robust_cnn(digits: DatasetBundle, robust_cnn_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh copy of the briefly adversarially trained digits CNN."""
    from robprune_deploy.models import build_model

    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    model.load_state_dict(robust_cnn_state)
    return model


# The attack ensemble at a budget for tests that are not about it (tests/test_autoattack.py is).
LIGHT_EVAL = [
    "evaluate.apgd_steps=10",
    "evaluate.apgd_targets=1",
    "evaluate.curve_steps=0",
    "evaluate.indicator_examples=20",
]

PGD_ONLY = [
    "evaluate.attacks=pgd",
    "evaluate.square_queries=0",
    "evaluate.curve_steps=0",
    "evaluate.indicator_examples=0",
]
"""The evaluation for whole runs whose test is about something else: PGD only (no ensemble, square
attack, security curve or indicators)."""

FAST_RUN = [
    "pretrain.epochs=5",
    "compression.config.epochs=2",
    "finetune.epochs=1",
    "evaluate.num_examples=200",
    "evaluate.square_queries=60",
    "evaluate.square_examples=60",
    "evaluate.apgd_steps=20",
    "evaluate.curve_steps=20",
    "evaluate.curve_examples=60",
    "evaluate.indicator_examples=30",
    "evaluate.latency.repeats=5",
    "evaluate.latency.warmup=1",
    "gate.min_clean_acc=0.5",
    "gate.min_pgd_acc=0.1",
    "gate.max_pgd_drop=0.3",
]
"""Overrides that make a digits pipeline take well under a minute on 2 cores."""


def overrides(*items: str) -> list[str]:
    """``--set`` arguments for the CLI."""
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One whole `robprune run` of the HYDRA digits recipe, tracked in a temporary MLflow store."""
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    from robprune_deploy.cli.main import main

    root = tmp_path_factory.mktemp("digits_run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"
    out = root / "out"
    key = Ed25519PrivateKey.generate()  # the run signs its release record
    private, public = root / "signer.pem", root / "signer.pub.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    code = main(
        [
            "run",
            str(recipe),
            "--out",
            str(out),
            "--tracking-uri",
            uri,
            "--quiet",
            "--sign-key",
            str(private),
            *overrides(*FAST_RUN, "tracking.registered_model=digits-test", "tracking.alias=candidate"),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    return {"out": out, "uri": uri, "recipe": recipe, "summary": summary, "public_key": public}


def subprocess_env(processes: int = 1, **extra: str) -> dict[str, str]:
    """The environment for a child process: no MLflow run or experiment leaked from this process
    (``mlflow.set_experiment`` exports ``MLFLOW_EXPERIMENT_ID``), and the suite's threads
    (:data:`SUITE_THREADS`) shared among the ``processes`` it starts (torchrun's workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "OMP_NUM_THREADS": str(max(1, SUITE_THREADS // processes)), **extra}


class LinearClassifier(torch.nn.Module):
    """Logits ``W x`` without bias: the minimal L-inf distance from x to the y/t boundary is
    ``|f_y - f_t| / ||w_y - w_t||_1``, so an attack's success can be checked exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.fc.weight.data = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """A tracking server that accepts connections and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
