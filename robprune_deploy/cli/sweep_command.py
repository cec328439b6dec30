"""The handler of ``robprune sweep SWEEP.yaml`` (see :mod:`robprune_deploy.sweep`).

The parser (:mod:`robprune_deploy.cli.parser`) names it; Optuna, MLflow and the sweep's modules are
imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys


def handle_sweep(args: argparse.Namespace) -> int:
    from robprune_deploy.sweep.spec import load_sweep
    from robprune_deploy.sweep.worker import run_sweep

    spec = load_sweep(args.sweep)
    args.out = spec.out  # the CLI keeps an internal error's log there
    try:
        sweep = run_sweep(spec, args.sweep, args.tracking_uri)
    except KeyboardInterrupt:
        print(f"sweep stopped; to continue the study: robprune sweep {args.sweep}", file=sys.stderr)
        raise
    if sweep["failed"]:
        trials = ", ".join(map(str, sweep["failed"]))
        print(f"trial {trials} failed (see sweep.json); rerunning the command retries them", file=sys.stderr)
    return 0
