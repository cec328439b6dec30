"""``python -m robprune_deploy.cli.sweep_child ARGS``: ``robprune ARGS`` that stops when its worker dies.

A sweep worker runs each trial as this child process. On Linux the child asks the kernel for a
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a worker killed with SIGKILL does not
leave an orphan writing into the run folder while another worker retries the trial: the child
handles the SIGTERM like ``robprune run`` always does (its MLflow runs end KILLED, the folder's
lock is released), and the retry resumes the folder. Elsewhere an orphan finishes its run; the
folder lock keeps a retry on the same machine out until then.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

from robprune_deploy.sweep.runner import WORKER_PID_ENV

_PR_SET_PDEATHSIG = 1


def die_with_worker() -> None:
    """Ask for SIGTERM when the worker dies; when it died already, stop at once."""
    expected = os.environ.pop(WORKER_PID_ENV, "")
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if expected.isdigit() and os.getppid() != int(expected):  # it died before the request
        raise SystemExit(128 + signal.SIGTERM)


def main() -> int:
    die_with_worker()
    from robprune_deploy.cli.main import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
