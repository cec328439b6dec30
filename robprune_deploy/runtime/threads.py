"""The thread policy: how many intra-op threads torch and onnxruntime use in this process.

On a shared machine under load, a pool with a thread per core spends its time spinning at barriers
while a partner thread is descheduled: an adversarial-training epoch on a busy 2-core machine burnt
2.6-3.6x the CPU time of a single-threaded one, for no gain in wall time. ``torchrun`` sets
``OMP_NUM_THREADS=1`` per worker for the same reason.

``runtime.threads: auto`` takes the smallest of

- the cores this process may use: its affinity mask (``os.sched_getaffinity``) and its cgroup's
  CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``);
- the cores the load at start leaves free: the machine's CPUs less the cores busy now (the CPU
  time the whole machine spent over a short window, from ``/proc/stat``), at least one. The
  1-minute load average is the fallback only: it trails a job that just ended by a minute or more,
  and a quick start launched right after a two-thread job then ran on one thread of an idle 2-core
  machine (454 s against 394 s);
- the threads the model can keep busy: one per :data:`WORK_PER_THREAD` multiply-accumulates of a
  training batch's forward pass (a small model gains nothing from many threads).

An ``OMP_NUM_THREADS`` in the environment wins over all three: it is how torchrun, job schedulers
and users say how many threads a process gets. A number (``runtime.threads: 4``) is taken as given.

onnxruntime's pool spins between operators by default; spinning is turned off whenever the chosen
threads exceed the free cores, where a spinning thread takes a core from a thread with work. OpenVINO
has no spinning setting; it pins its threads to cores by default, which is turned off under the same
condition (a thread pinned to a busy core cannot move to an idle one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from robprune_deploy.progress import progress_enabled

log = logging.getLogger(__name__)

MAX_THREADS = 1024
"""The largest ``runtime.threads`` a recipe may ask for."""
WORK_PER_THREAD = 50_000_000
"""Forward multiply-accumulates of one training batch that keep one more thread busy. The digits
CNN (6M MACs per image, batch 32) measured 1.7x faster with 2 threads than 1 on an idle 2-core
machine: 192M MACs per batch still pay for several threads."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
BUSY_WINDOW_S = 0.25
"""How long the busy cores are measured at the choice: long enough to see a busy process (the kernel
counts time in 10 ms ticks), short enough not to be noticed at start-up."""
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class Machine:
    """What the machine offers this process when the policy is chosen.

    :param cores_allowed: cores this process may run on (affinity mask and cgroup quota).
    :param limited_by: what set ``cores_allowed``: ``affinity mask`` or ``cgroup CPU quota N``.
    :param cpus: the machine's CPUs (the load average counts runnable threads on all of them).
    :param load: the cores busy when the policy was chosen (see :func:`busy_cores`), else the
        1-minute load average, ``None`` where the platform has neither.
    :param load_source: which of the two ``load`` is.
    """

    cores_allowed: int
    limited_by: str
    cpus: int
    load: float | None
    load_source: str = "cores busy now"

    @property
    def free_cores(self) -> int:
        """Allowed cores the load leaves idle, at least one."""
        if self.load is None:
            return self.cores_allowed
        return max(1, min(self.cores_allowed, int(self.cpus - self.load + 0.5)))


@dataclass(frozen=True)
class ThreadChoice:
    """The threads of this process, and why.

    :param threads: intra-op threads of torch and of every onnxruntime session.
    :param reason: how they were chosen, in words.
    :param setting: ``runtime.threads`` as asked (``auto`` or a number).
    :param cores_allowed: cores this process may use.
    :param load: the cores busy at the choice, or the 1-minute load average (``None``: unknown).
    :param free_cores: allowed cores the load left idle.
    :param spinning: whether onnxruntime's threads may spin between operators (off when
        ``threads`` exceeds ``free_cores``).
    """

    threads: int
    reason: str
    setting: str
    cores_allowed: int
    load: float | None
    free_cores: int
    spinning: bool

    def describe(self) -> str:
        """One line for the progress output and ``robprune doctor``."""
        spin = "on" if self.spinning else f"off ({self.threads} threads > {self.free_cores} free cores)"
        return f"{self.threads} intra-op thread(s): {self.reason}; onnxruntime spinning {spin}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """``{controller: path}`` from ``/proc/self/cgroup``; cgroup v2's unified line has key ``""``."""
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _folders(mount: Path, path: str) -> list[Path]:
    """The cgroup folder of ``path`` under ``mount`` and every folder above it: a parent's quota
    limits its children. Inside a container the path may name a host folder that is not mounted;
    the mount's root (the container's own cgroup) is then the one that exists."""
    folders, current = [mount], mount
    for part in Path(path).parts:
        if part != "/":
            current = current / part
            folders.append(current)
    return folders


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its parents, ``None`` if none."""
    paths = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    if "" in paths:  # cgroup v2: "max 100000" or "<quota> <period>"
        for folder in _folders(root, paths[""]):
            fields = (_read(folder / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0] != "max" and fields[0].isdigit() and fields[1].isdigit():
                quotas.append(int(fields[0]) / max(1, int(fields[1])))
    if "cpu" in paths:  # cgroup v1: cfs_quota_us is -1 without a quota
        for mount in (root / name for name in _V1_CPU_MOUNTS):
            for folder in _folders(mount, paths["cpu"]) if mount.is_dir() else []:
                quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                if quota and period and quota.isdigit() and period.isdigit() and int(quota) > 0:
                    quotas.append(int(quota) / max(1, int(period)))
    return min(quotas) if quotas else None


def _cpu_times(proc_stat: Path) -> tuple[int, int, int] | None:
    """``(busy, total, cpus)`` jiffies from ``/proc/stat``: the aggregate ``cpu`` line and the per-CPU count."""
    try:
        lines = proc_stat.read_text().splitlines()
    except OSError:
        return None
    fields = next((line.split()[1:] for line in lines if line.startswith("cpu ")), None)
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    if not fields or len(fields) < 4 or not all(f.isdigit() for f in fields) or cpus == 0:
        return None
    values = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal; guests are in user
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values), cpus


def busy_cores(window_s: float = BUSY_WINDOW_S, proc_stat: Path = PROC_STAT) -> float | None:
    """The cores the machine kept busy over the next ``window_s`` seconds (``None`` without ``/proc/stat``).

    This process sleeps meanwhile, so what is counted is other processes' work (a hypervisor's
    steal included: those cycles are not ours to use either).
    """
    before = _cpu_times(proc_stat)
    if before is None:
        return None
    time.sleep(window_s)
    after = _cpu_times(proc_stat)
    if after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * after[2]


def measure_machine(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP, proc_stat: Path = PROC_STAT) -> Machine:
    """The cores this process may use and the load, measured now."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    allowed, limited_by = affinity, "affinity mask"
    quota = cgroup_cpu_quota(root, proc_cgroup)
    # A thread beyond the quota only gets the whole cgroup throttled sooner: round down.
    if quota is not None and max(1, int(quota)) < affinity:
        allowed, limited_by = max(1, int(quota)), f"cgroup CPU quota {quota:g}"
    load, source = busy_cores(proc_stat=proc_stat), "cores busy now"
    if load is None:
        source = "1-minute load average"
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
    return Machine(allowed, limited_by, max(os.cpu_count() or 1, allowed), load, source)


def omp_num_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """A usable ``OMP_NUM_THREADS`` of the environment (its first level for a nested list)."""
    text = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(text) if text.isdigit() and 0 < int(text) <= MAX_THREADS else None


def choose_threads(
    setting: int | str = "auto",
    *,
    work_macs: int | None = None,
    machine: Machine | None = None,
    environ: Mapping[str, str] | None = None,
) -> ThreadChoice:
    """The threads for ``runtime.threads: setting`` on ``machine`` (default: measured now).

    :param work_macs: forward multiply-accumulates of one training batch (``None``: unknown,
        the model's size does not limit ``auto``).
    :param environ: the environment whose ``OMP_NUM_THREADS`` ``auto`` respects (default: this
        process's).
    """
    machine = machine or measure_machine()
    load = "unknown" if machine.load is None else f"{machine.load:.1f}"
    if setting != "auto":
        threads, reason = int(setting), f"runtime.threads: {setting}"
    elif (omp := omp_num_threads(environ)) is not None:
        threads, reason = omp, f"auto: OMP_NUM_THREADS={omp} in the environment is respected"
    else:
        threads = machine.free_cores
        reason = (
            f"auto: {machine.cores_allowed} core(s) allowed ({machine.limited_by}), "
            f"{machine.load_source} {load} leaves {machine.free_cores} free"
        )
        if work_macs is not None:
            usable = max(1, work_macs // WORK_PER_THREAD)
            reason += f", the model's {work_macs / 1e6:.0f}M MACs per batch keep {usable} busy"
            threads = min(threads, usable)
    return ThreadChoice(
        threads=threads,
        reason=reason,
        setting=str(setting),
        cores_allowed=machine.cores_allowed,
        load=machine.load,
        free_cores=machine.free_cores,
        spinning=threads <= machine.free_cores,
    )


_current: ThreadChoice | None = None
_current_key: tuple[str, int | None] | None = None
_interop_set = False


def apply_thread_policy(
    setting: int | str = "auto", *, work_macs: int | None = None, announce: bool = True
) -> ThreadChoice:
    """Choose the threads (:func:`choose_threads`) and set them for torch and for every
    onnxruntime session this process opens afterwards.

    Once per process: asking again for the same setting and model returns the first choice (the
    load this process itself adds must not shrink it). The choice is printed on stderr with the
    progress bars (a terminal, no ``--quiet``) when ``announce``.
    """
    global _current, _current_key, _interop_set
    key = (str(setting), work_macs)
    if _current is not None and key == _current_key:
        return _current
    choice = choose_threads(setting, work_macs=work_macs)
    torch.set_num_threads(choice.threads)
    if not _interop_set:
        _interop_set = True
        # torch takes it once, and only before any inter-op work has started
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(choice.threads)
    _current, _current_key = choice, key
    log.info("threads: %s", choice.describe())
    if progress_enabled(announce):
        print(f"threads: {choice.describe()}", file=sys.stderr)
    return choice


def current_thread_choice() -> ThreadChoice | None:
    """The choice applied in this process, ``None`` before any."""
    return _current


def ensure_thread_policy(work_macs: int | None = None) -> ThreadChoice:
    """The applied choice, or ``auto`` applied now (the Python API's entry points and sessions
    opened outside a command)."""
    return _current if _current is not None else apply_thread_policy("auto", work_macs=work_macs)


def configure_session_options(options: Any, choice: ThreadChoice | None = None, threads: int = 0) -> Any:
    """Set an ``onnxruntime.SessionOptions`` to the thread policy (default: this process's).

    :param threads: intra-op threads instead of the policy's (0: the policy's); spinning is off
        whenever they exceed the free cores.
    """
    choice = choice or ensure_thread_policy()
    count = threads or choice.threads
    options.intra_op_num_threads = count
    if count > choice.free_cores:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def openvino_config(choice: ThreadChoice | None = None, threads: int = 0) -> dict[str, Any]:
    """OpenVINO ``compile_model`` properties for the thread policy (default: this process's).

    One stream and the latency hint: one request at a time, as the evaluation and the latency
    benchmark run it. ``INFERENCE_PRECISION_HINT`` is ``f32`` because OpenVINO would otherwise run an
    FP32 model in bf16 on CPUs that have it, and the gate measures the model as exported.

    :param threads: intra-op threads instead of the policy's (0: the policy's); pinning is off
        whenever they exceed the free cores.
    """
    choice = choice or ensure_thread_policy()
    count = threads or choice.threads
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": count,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    if count > choice.free_cores:
        config["ENABLE_CPU_PINNING"] = False
    return config
