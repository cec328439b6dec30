"""``robprune doctor``: real onnxruntime sessions, real package metadata, real tracking stores."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

from robprune_deploy.cli.main import main
from robprune_deploy.environment import onnxruntime_builds, probe_onnxruntime, probe_tracking_uri

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU verdicts need a machine without a GPU")


def _recipe(tmp_path: Path, providers: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"device: cpu\nevaluate: {{providers: {providers}}}\n"
        f"tracking: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n"
    )
    return path


def _doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _fake_distribution(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@no_gpu
def test_doctor_passes_a_cpu_recipe_and_fails_cuda_only_with_the_loaders_reason(tmp_path, capsys) -> None:
    recipe = _recipe(tmp_path, "[cpu]")
    assert main(["doctor", "--recipe", str(recipe)]) == 0
    assert "usable for recipe" in capsys.readouterr().out

    code, report = _doctor_json(capsys, "--recipe", str(recipe), "--set", "evaluate.providers=[cuda]")
    assert code == 1 and report["usable"] is False
    check = next(c for c in report["checks"] if c["name"] == "evaluate.providers")
    assert check["status"] == "fail"
    ort = probe_onnxruntime()
    if "CUDAExecutionProvider" in ort.available:  # onnxruntime-gpu: the loader's own words are the reason
        reason = ort.probes["CUDAExecutionProvider"].reason
        assert reason and reason in check["detail"]
        assert report["onnxruntime"]["probes"]["CUDAExecutionProvider"]["works"] is False
    else:
        assert "has no CUDAExecutionProvider" in check["detail"]

    # [cuda, cpu] still runs (on CPU): usable, with a fallback warning.
    code, report = _doctor_json(capsys, "--recipe", str(recipe), "--set", "evaluate.providers=[cuda, cpu]")
    check = next(c for c in report["checks"] if c["name"] == "evaluate.providers")
    assert code == 0 and check["status"] == "warn" and "runs on cpu" in check["detail"]

    assert main(["doctor", "--recipe", str(recipe), "--set", "device=cuda"]) == 1
    assert "device: cuda:" in capsys.readouterr().out


def test_doctor_flags_two_onnxruntime_builds(tmp_path, monkeypatch, capsys) -> None:
    real = onnxruntime_builds()
    assert len(real.builds) == 1 and not real.conflict
    other = "onnxruntime" if real.builds[0].name == "onnxruntime-gpu" else "onnxruntime-gpu"
    _fake_distribution(tmp_path / "site", other, "1.19.0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    builds = onnxruntime_builds()
    assert {b.name for b in builds.builds} == {other, real.builds[0].name}
    assert builds.conflict and not builds.overwritten
    assert builds.imported_build == real.builds[0].name  # the fake has no files: the real one is imported
    code, report = _doctor_json(capsys, "--set", "evaluate.providers=[cpu]", "--set", "tracking.enabled=false")
    check = next(c for c in report["checks"] if c["name"] == "onnxruntime builds")
    assert code == 0 and check["status"] == "warn"
    assert f"{other} 1.19.0" in check["detail"] and f"loads {real.builds[0].name}" in check["detail"]

    # Two builds in one folder: their shared onnxruntime/ package was overwritten.
    _fake_distribution(tmp_path / "both", "onnxruntime", "1.19.0")
    _fake_distribution(tmp_path / "both", "onnxruntime-gpu", "1.19.0")
    monkeypatch.syspath_prepend(str(tmp_path / "both"))
    assert onnxruntime_builds().overwritten
    assert "overwrote" in (onnxruntime_builds().warning() or "")


def test_tracking_probe_tells_an_answering_server_from_a_closed_port(tmp_path, capsys) -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe_tracking_uri(f"http://127.0.0.1:{server.server_port}", timeout=2).answers is True
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    probe = probe_tracking_uri(f"http://127.0.0.1:{closed}", timeout=2)
    assert probe.answers is False and "no answer" in probe.detail

    recipe = _recipe(tmp_path, "[cpu]")
    code, report = _doctor_json(capsys, "--recipe", str(recipe), "--tracking-uri", f"http://127.0.0.1:{closed}")
    assert code == 1 and next(c for c in report["checks"] if c["name"] == "tracking")["status"] == "fail"
    (tmp_path / "file").write_text("")  # a store "inside" a file can never be created
    probe = probe_tracking_uri(f"sqlite:///{tmp_path}/file/mlflow.db")
    assert probe.answers is False and "is not a folder" in probe.detail
