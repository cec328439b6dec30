"""``python -m robprune_deploy.reference [--check] [DOCS]``: write (or check) the generated reference pages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robprune_deploy.reference.pages import render_pages, stale_pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robprune_deploy.reference", description=__doc__)
    parser.add_argument("docs", nargs="?", type=Path, default=Path("docs"), help="the docs folder (default: docs)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed page is not current")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs)
        for name in stale:
            print(f"{args.docs / name}: not current; run python -m robprune_deploy.reference", file=sys.stderr)
        return 1 if stale else 0
    for path in render_pages(args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
