"""MLflow tracking: a parent run per pipeline, nested runs per stage, logged and registered models."""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import nn

from robprune_deploy.errors import TrackingError
from robprune_deploy.runtime import configure_session_options, current_thread_choice
from robprune_deploy.tracking.models import WEIGHTS_FILE
from robprune_deploy.tracking.project import ParentRun, choose_parent, link_runs
from robprune_deploy.tracking.store_checks import default_tracking_uri, local_store_path

_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. /]")


def thread_tags() -> dict[str, str]:
    """The threads this process chose (:mod:`robprune_deploy.runtime.thread_policy`) and why.

    Tags, not params: the recipe's ``runtime.threads`` (``auto`` or a number) is the param, and a
    resumed run reuses its MLflow run, where a param may not change but ``auto`` may choose anew.
    """
    choice = current_thread_choice()
    if choice is None:
        return {}
    return {"runtime.threads": str(choice.threads), "runtime.threads_reason": choice.reason[:5000]}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def param_text(value: Any) -> str:
    """A param value spelled as in a recipe or ``--set`` (``[cuda, cpu]``, ``null``, ``true``), not as a
    Python repr with literal quotes (``['cuda', 'cpu']``, ``None``, ``True``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict, bool)) or value is None:
        text: str = yaml.safe_dump(value, default_flow_style=True, width=10_000)
        return text.removesuffix("\n").removesuffix("\n...")
    return str(value)


def onnx_requirements() -> list[str]:
    """The pip requirements of a logged ONNX model, naming the onnxruntime distribution installed here.

    ``onnxruntime`` and ``onnxruntime-gpu`` install the same module folder and overwrite each other,
    so a model that asks for both cannot be installed cleanly; MLflow's inference lists both when the
    GPU build is installed.
    """
    from importlib import metadata

    requirements = []
    for distribution in ("onnx", "numpy"):
        requirements.append(f"{distribution}=={metadata.version(distribution)}")
    for runtime in ("onnxruntime-gpu", "onnxruntime"):
        try:
            requirements.append(f"{runtime}=={metadata.version(runtime)}")
            break
        except metadata.PackageNotFoundError:
            continue
    return requirements


_FOLDER_NAME = re.compile(r"[^0-9A-Za-z_-]")


def artifact_location_beside_store(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: beside the database
    (``<database folder>/mlruns/<name>``); ``None`` (MLflow's placement) for other stores.

    MLflow's default puts them under ``./mlruns`` of whatever folder the command ran in, outside the
    folders the user named; a file store holds its own artifacts, a server decides.
    """
    local = local_store_path(uri)
    if local is None or local[0] != "sqlite":
        return None
    folder = local[1].expanduser().resolve().parent / "mlruns" / (_FOLDER_NAME.sub("_", experiment) or "_")
    return folder.as_uri()


def experiment_beside_store(client: Any, uri: str, experiment: str) -> str:
    """The id of ``experiment`` in the store of ``client`` (at ``uri``), created at
    :func:`artifact_location_beside_store` when it does not exist yet.

    :raises MlflowException: when it can be neither found nor created (another process creating it
        meanwhile is not an error: its id is returned).
    """
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            client.create_experiment(experiment, artifact_location=artifact_location_beside_store(uri, experiment))
        )
    except Exception:  # another process created it meanwhile
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def torch_requirements() -> list[str]:
    """The pip requirements of a logged torch model: the pytorch flavor's own (torch, cloudpickle)
    and numpy, pinned to the versions installed here.

    Named rather than inferred: MLflow's inference loads the model in a child process and scans every
    installed distribution, which took 12 of the 13 seconds of logging a digits CNN.
    """
    from importlib import metadata

    return [f"{d}=={metadata.version(d)}" for d in ("torch", "cloudpickle", "numpy")]


class _ExactOnnxFlavor:
    """``mlflow.onnx`` for ``mlflow.models.Model.log``, except that the flavor's data file holds
    ``data`` byte for byte: ``onnx.save_model`` would parse and re-serialize it, and what the gate
    registers must be the bytes it hashed and measured."""

    __name__ = "mlflow.onnx"  # Model.log records the flavor module's name

    def __init__(self, data: bytes) -> None:
        self.data = data

    def save_model(self, path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import mlflow.onnx

        mlflow.onnx.save_model(self.data, path, mlflow_model=mlflow_model, save_as_external_data=False, **kwargs)
        (Path(path) / mlflow_model.flavors["onnx"]["data"]).write_bytes(self.data)


class MlflowTracker:
    """Records a pipeline into MLflow.

    :param tracking_uri: any MLflow tracking URI (default:
        :func:`~robprune_deploy.tracking.store_checks.default_tracking_uri`).
    :param experiment: experiment name (created when missing).
    :param timeout_s: seconds a tracking server has to answer one request.
    :param retries: retries of an unanswered request (see :mod:`robprune_deploy.tracking.store_checks`).
    :raises TrackingError: naming the URI when the store cannot be used or the server does not answer.

    Making one checks the store and writes nothing; :meth:`open` (or the first :meth:`pipeline`)
    writes first, so a run refused by its preflight leaves no new SQLite file behind.
    """

    def __init__(self, tracking_uri: str | None, experiment: str, *, timeout_s: float = 4.0, retries: int = 2) -> None:
        from robprune_deploy.tracking.store_checks import bound_http_waits, check_server, check_store

        self.tracking_uri = tracking_uri or default_tracking_uri()
        bound_http_waits(timeout_s, retries)
        check_server(self.tracking_uri, timeout_s, retries)  # before importing mlflow, which takes seconds
        check_store(self.tracking_uri)
        import mlflow

        self.mlflow = mlflow
        self.experiment = experiment
        self.parent: ParentRun | None = None
        self.run_id: str | None = None
        self.model_uri: str | None = None

    def open(self) -> ParentRun:
        """Point MLflow at the store (creating a new SQLite file's tables) and choose the parent run
        and experiment; once, on the first call.

        :raises TrackingError: naming the URI when the store cannot be used.
        """
        if self.parent is not None:
            return self.parent
        try:
            self.mlflow.set_tracking_uri(self.tracking_uri)
            # Inside `mlflow run` the project's run (MLFLOW_RUN_ID) is the parent unless MLflow put it
            # in its Default experiment; see robprune_deploy.tracking.project.
            parent = choose_parent(self.experiment)
            if parent.experiment is not None:
                experiment_id = experiment_beside_store(
                    self.mlflow.MlflowClient(), self.tracking_uri, parent.experiment
                )
                self.mlflow.set_experiment(experiment_id=experiment_id)
            elif parent.resume_experiment_id is not None:
                # Nested runs start in the active experiment: the stages go where their parent is (a
                # sweep's trial run, a project run), not into Default, where the UI would not nest them.
                self.mlflow.set_experiment(experiment_id=parent.resume_experiment_id)
        except Exception as exc:
            raise TrackingError(
                f"tracking.tracking_uri {self.tracking_uri}: cannot use it ({str(exc).splitlines()[0]})"
            ) from None
        self.parent = parent
        return parent

    @contextlib.contextmanager
    def _run(self, name: str, nested: bool, run_id: str | None = None) -> Iterator[Any]:
        run = self.mlflow.start_run(run_id=run_id, run_name=name, nested=nested)
        try:
            yield run
        except BaseException as exc:
            # Every open run of a crashed pipeline ends FAILED with the error attached; of an
            # interrupted one (Ctrl-C, SIGTERM) KILLED. None is left RUNNING.
            interrupted = isinstance(exc, KeyboardInterrupt)
            message = ("interrupted: " if interrupted else "") + f"{type(exc).__name__}: {exc}"[:5000]
            self._close(run.info.run_id, "KILLED" if interrupted else "FAILED", message)
            raise
        else:
            self.mlflow.end_run(status="FINISHED")

    def _close(self, run_id: str, status: str, message: str) -> None:
        """End the active run with ``status``; should the store fail meanwhile (an interrupt inside
        one of its requests), set the status by id, so the original error is the one reported."""
        try:
            self.mlflow.set_tag("error", message)
            self.mlflow.end_run(status=status)
        except Exception:
            with contextlib.suppress(Exception):
                self.mlflow.MlflowClient().set_terminated(run_id, status=status)
            with contextlib.suppress(Exception):
                self.mlflow.end_run(status=status)

    @contextlib.contextmanager
    def pipeline(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[None]:
        parent = self.open()
        with self._run(name, nested=False, run_id=parent.resume) as run:
            self.run_id = run.info.run_id
            link_runs(run.info.run_id, parent)
            self.log_params(params)
            self.set_tags({**tags, **thread_tags()})
            yield

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.mlflow.active_run() is None:
            yield  # a single stage run from the CLI outside a pipeline: log nothing nested
            return
        with self._run(name, nested=True):
            self.mlflow.set_tag("stage", name)
            yield

    def close_interrupted(self, out_dir: str) -> list[str]:
        """Mark FAILED the runs of an earlier attempt in ``out_dir`` that a kill left RUNNING."""
        from mlflow import MlflowClient

        self.open()
        client = MlflowClient()
        experiments = [e.experiment_id for e in client.search_experiments()]
        stale = client.search_runs(
            experiments, f"tags.`robprune.out_dir` = '{out_dir}' and attributes.status = 'RUNNING'"
        )
        closed = []
        for run in stale:
            # Nested stage runs of the killed attempt carry the parent's id; close them too.
            children = client.search_runs(
                experiments, f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'"
            )
            for r in [*children, run]:
                client.set_tag(r.info.run_id, "error", "interrupted (the process was killed); resumed with --resume")
                client.set_terminated(r.info.run_id, status="FAILED")
                closed.append(r.info.run_id)
        return closed

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: param_text(v)[:500] for k, v in flatten(params).items()}
        if flat:
            self.mlflow.log_params(flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {
            _METRIC_NAME.sub("_", k): float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_torch_model(self, model: nn.Module, example: np.ndarray) -> str | None:
        """The stripped torch model, with a signature and an input example."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from robprune_deploy.checkpoints import save_checkpoint

        model = model.eval().cpu()
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        with tempfile.TemporaryDirectory(prefix="robprune-weights-") as folder:
            # The state dict travels inside the logged model, so a later run can take this model
            # as `model.checkpoint` (models:/..., runs:/...) and load it with weights_only=True.
            weights = save_checkpoint({"model": model.state_dict()}, Path(folder) / WEIGHTS_FILE)
            info = mlflow.pytorch.log_model(
                model,
                name="torch_model",
                signature=infer_signature(example, output),
                input_example=example,
                extra_files=[str(weights)],
                pip_requirements=torch_requirements(),
            )
        return str(info.model_uri)

    def log_checkpoint(self, path: Path) -> str | None:
        """Log a weights file under ``checkpoints/`` of the active run; returns its ``runs:/`` URI,
        which a later run accepts as ``model.checkpoint``."""
        return self.log_file(path, "checkpoints")

    def log_file(self, path: Path, artifact_path: str) -> str | None:
        run = self.mlflow.active_run()
        if run is None:
            return None
        self.mlflow.log_artifact(str(path), artifact_path)
        return f"runs:/{run.info.run_id}/{artifact_path}/{Path(path).name}"

    def log_onnx_model(
        self, path: Path, example: np.ndarray, name: str = "onnx_model", *, exact: bool = False
    ) -> str | None:
        """The deployable ONNX file, with a signature and an input example; returns its model URI.

        :param name: the logged model's name (``onnx_int8_model`` for the quantized one).
        :param exact: log the file's bytes as they are, as the ONNX flavor's one data file (the gate
            registers the very bytes it measured); by default ``mlflow.onnx`` re-serializes the model
            with its large tensors in an external data file.
        """
        import mlflow.onnx
        import onnx
        import onnxruntime as ort
        import torch
        from mlflow.models import Model, infer_signature

        options = configure_session_options(ort.SessionOptions())
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        output = session.run(None, {session.get_inputs()[0].name: example})[0]
        # The logged model keeps MLflow's [CUDA, CPU] providers for whoever serves it; on a machine
        # without a GPU, the validation load would otherwise print onnxruntime's CUDA load failure.
        quiet = not torch.cuda.is_available()
        if quiet:
            ort.set_default_logger_severity(4)
        try:
            if exact:
                info = Model.log(
                    artifact_path=None,  # deprecated in favour of name, but still a required argument
                    name=name,
                    flavor=_ExactOnnxFlavor(path.read_bytes()),
                    signature=infer_signature(example, output),
                    input_example=example,
                    pip_requirements=onnx_requirements(),
                )
            else:
                info = mlflow.onnx.log_model(
                    onnx.load(str(path)),
                    name=name,
                    signature=infer_signature(example, output),
                    input_example=example,
                    pip_requirements=onnx_requirements(),
                )
        finally:
            if quiet:
                ort.set_default_logger_severity(2)  # onnxruntime's default: warnings and above
        if name == "onnx_model":  # the shipped FP32 model's URI
            self.model_uri = str(info.model_uri)
        return str(info.model_uri)

    def register_model(self, model_uri: str, name: str, tags: Mapping[str, str]) -> str | None:
        """Register ``model_uri`` under ``name``; returns the new version."""
        version = self.mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
        return str(version.version)
