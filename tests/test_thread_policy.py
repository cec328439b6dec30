"""The thread policy (``runtime.threads``): what torch and every onnxruntime session are given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import cli, one_error, sets  # type: ignore[import-not-found]
from conftest import SUITE_THREADS, subprocess_env  # type: ignore[import-not-found]

import robprune_deploy as rp
from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.pipeline import RunContext
from robprune_deploy.pipeline.ownership import recipe_fingerprint
from robprune_deploy.recipe import validate_recipe
from robprune_deploy.runtime import choose_threads
from robprune_deploy.runtime.threads import Machine, busy_cores, cgroup_cpu_quota, measure_machine

SPIN = "session.intra_op.allow_spinning"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from robprune_deploy.models import build_model

    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    rp.export_onnx(build_model("digits_cnn", 10, 1, [0.5], [0.5]), path, torch.zeros(1, 1, 16, 16))
    return path


def _context(tmp_path: Path, threads: int | str) -> RunContext:
    recipe = validate_recipe({"runtime": {"threads": threads}, "tracking": {"enabled": False}})
    return RunContext(recipe, tmp_path / "out", show_progress=False)


def _options(onnx_file: Path) -> object:
    return OnnxClassifier(onnx_file, ["cpu"]).session.get_session_options()


@pytest.mark.parametrize("threads", [1, 2])
def test_runtime_threads_set_torch_and_the_onnxruntime_sessions(tmp_path, onnx_file, threads) -> None:
    ctx = _context(tmp_path, threads)
    assert torch.get_num_threads() == threads
    assert ctx.threads.threads == threads and ctx.threads.reason == f"runtime.threads: {threads}"
    assert _options(onnx_file).intra_op_num_threads == threads  # type: ignore[attr-defined]


def test_doctor_applies_and_shows_the_choice(capsys) -> None:
    from robprune_deploy.cli.main import main

    many = (os.cpu_count() or 1) + 1  # not the suite's count, and more than the free cores
    code = main(["doctor", "--json", "--set", f"runtime.threads={many}", "--set", "tracking.enabled=false"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert torch.get_num_threads() == many
    assert report["threads"]["threads"] == many and report["threads"]["reason"] == f"runtime.threads: {many}"
    check = next(c for c in report["checks"] if c["name"] == "runtime.threads")
    assert check["status"] == "warn" and check["detail"].endswith("more threads than free cores")


def test_spinning_is_off_when_threads_exceed_the_free_cores(tmp_path, onnx_file) -> None:
    many = (os.cpu_count() or 1) + 1  # more than the machine has, so more than are free
    ctx = _context(tmp_path, many)
    assert not ctx.threads.spinning and ctx.threads.free_cores < many
    options = _options(onnx_file)
    assert options.intra_op_num_threads == many  # type: ignore[attr-defined]
    assert options.get_session_config_entry(SPIN) == "0"  # type: ignore[attr-defined]

    _context(tmp_path, 1)  # one thread never exceeds the free cores: onnxruntime's default stays
    with pytest.raises(RuntimeError, match="does not have configuration with key"):
        _options(onnx_file).get_session_config_entry(SPIN)  # type: ignore[attr-defined]


_ONE_CORE = """
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import torch
from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.runtime import apply_thread_policy
choice = apply_thread_policy("auto", work_macs=10**12)  # a model big enough for every core
session = OnnxClassifier(sys.argv[1], ["cpu"]).session
print(json.dumps({**choice.to_dict(), "torch": torch.get_num_threads(),
                  "onnxruntime": session.get_session_options().intra_op_num_threads}))
"""


def test_auto_takes_no_more_threads_than_the_affinity_mask_allows(onnx_file) -> None:
    env = {k: v for k, v in subprocess_env().items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_CORE, str(onnx_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["cores_allowed"] == 1
    assert found["threads"] == found["torch"] == found["onnxruntime"] == 1
    assert "1 core(s) allowed (affinity mask)" in found["reason"]


def test_auto_respects_omp_num_threads_and_the_free_cores_and_the_model_size() -> None:
    idle = Machine(cores_allowed=8, limited_by="affinity mask", cpus=8, load=0.0)
    busy = Machine(cores_allowed=8, limited_by="affinity mask", cpus=8, load=6.6)
    assert choose_threads("auto", machine=idle, environ={}).threads == 8
    assert busy.free_cores == 1 and choose_threads("auto", machine=busy, environ={}).threads == 1
    small = choose_threads("auto", work_macs=120_000_000, machine=idle, environ={})
    assert small.threads == 2 and "120M MACs per batch keep 2 busy" in small.reason
    told = choose_threads("auto", machine=busy, environ={"OMP_NUM_THREADS": "3"})
    assert (told.threads, told.spinning) == (3, False)
    assert told.reason == "auto: OMP_NUM_THREADS=3 in the environment is respected"
    assert choose_threads("auto", machine=idle, environ={"OMP_NUM_THREADS": "junk"}).threads == 8
    assert choose_threads(4, machine=idle, environ={"OMP_NUM_THREADS": "1"}).threads == 4  # a number wins


def test_cgroup_quotas_v2_and_v1_limit_the_allowed_cores(tmp_path) -> None:
    v2, proc = tmp_path / "v2", tmp_path / "cgroup"
    (v2 / "job").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    proc.write_text("0::/job\n")
    assert cgroup_cpu_quota(v2, proc) == 1.5
    machine = measure_machine(v2, proc)
    assert machine.cores_allowed == 1 and machine.limited_by == "cgroup CPU quota 1.5"

    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "job").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    proc.write_text("4:cpu,cpuacct:/job\n1:name=systemd:/\n")
    assert cgroup_cpu_quota(v1, proc) == 3.0
    proc.write_text("0::/\n")
    assert cgroup_cpu_quota(tmp_path / "nothing", proc) is None


@pytest.mark.parametrize("value", ["0", "-1", "1025", "many", "2.5", "true"])
def test_a_bad_thread_count_is_one_error_line(capsys, value) -> None:
    code, lines = cli(capsys, "doctor", *sets(f"runtime.threads={value}"))
    assert code == 2
    one_error(lines, "runtime.threads", "must be auto or a whole number of threads from 1 to 1024")


def test_the_threads_do_not_change_the_recipe_fingerprint() -> None:
    # A run killed on a loaded machine may be resumed with another count.
    assert recipe_fingerprint(validate_recipe({"runtime": {"threads": 3}})) == recipe_fingerprint(validate_recipe({}))


def test_a_run_records_its_choice_in_mlflow(digits_run) -> None:
    from mlflow import MlflowClient

    run = MlflowClient(digits_run["uri"]).get_run(digits_run["summary"]["mlflow.run_id"])
    assert run.data.params["runtime.threads"] == "auto"  # the recipe's setting
    assert run.data.tags["runtime.threads"] == str(SUITE_THREADS)  # what it chose, and why
    assert run.data.tags["runtime.threads_reason"] == (
        f"auto: OMP_NUM_THREADS={SUITE_THREADS} in the environment is respected"
    )


def test_the_free_cores_are_measured_now_not_a_minute_ago(tmp_path) -> None:
    """A process that keeps one core busy is seen within the window (the 1-minute load average
    would take a minute to notice it, and as long to forget a job that just ended)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past the interpreter's start-up
        busy = busy_cores(0.5)
    finally:
        hog.kill()
        hog.wait()
    assert busy is not None and busy >= 0.7  # the hog's core, whatever else the machine runs
    machine = measure_machine(tmp_path / "no-cgroup", tmp_path / "no-proc-cgroup")
    assert machine.load_source == "cores busy now" and machine.load is not None
    assert "cores busy now" in choose_threads("auto", machine=machine, environ={}).reason


def test_without_proc_stat_the_load_average_is_the_fallback(tmp_path) -> None:
    assert busy_cores(0.01, tmp_path / "missing") is None
    (tmp_path / "stat").write_text("intr 1 2 3\n")  # no cpu lines: unreadable as CPU times
    assert busy_cores(0.01, tmp_path / "stat") is None
    machine = measure_machine(tmp_path / "no-cgroup", tmp_path / "no-proc-cgroup", tmp_path / "missing")
    assert machine.load_source == "1-minute load average" and machine.load == pytest.approx(os.getloadavg()[0], abs=2)
    assert "1-minute load average" in choose_threads("auto", machine=machine, environ={}).reason
