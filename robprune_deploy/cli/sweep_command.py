"""``robprune sweep SWEEP.yaml``: trials of a recipe on an Optuna study (see robprune_deploy.sweep).

Optuna, MLflow and the sweep's modules are imported when the command runs, not when the parser is
built, so ``robprune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _sweep(args: argparse.Namespace) -> int:
    from robprune_deploy.sweep.spec import load_sweep
    from robprune_deploy.sweep.worker import run_sweep

    spec = load_sweep(args.sweep)
    args.out = spec.out  # the CLI keeps an internal error's log there
    try:
        sweep = run_sweep(spec, args.sweep, args.tracking_uri)
    except KeyboardInterrupt:
        print(f"sweep stopped; rerun `robprune sweep {args.sweep}` to continue the study", file=sys.stderr)
        raise
    if sweep["failed"]:
        trials = ", ".join(map(str, sweep["failed"]))
        print(f"trial {trials} failed (see sweep.json); rerunning the command retries them", file=sys.stderr)
    return 0


def register_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a recipe's trials (grid or sampler) on an Optuna study; rerun to resume, start more to share it",
    )
    p.add_argument("sweep", type=Path, help="sweep YAML file (base recipe, search space, objective, storage)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI for every trial (default: as robprune run)"
    )
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.set_defaults(handler=_sweep)
