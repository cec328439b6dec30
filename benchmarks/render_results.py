"""Put the tables of ``benchmarks/results/*.json`` into the pages that show them.

A page marks where a table goes; everything between the two markers is rendered, never edited::

    <!-- results: benchmarks/results/onnx_speedup.json#cnn -->
    (the table and its source line)
    <!-- /results -->

    python benchmarks/render_results.py           # rewrite the marked regions of docs/ and README.md
    python benchmarks/render_results.py --check   # exit 1 when a page differs from what its JSON renders to
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from result_tables import REPO, render

REGION = re.compile(r"(<!-- results: (\S+?)(?:#(\S+))? -->\n)(.*?)(<!-- /results -->)", re.DOTALL)


def pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def rendered(text: str, repo: Path = REPO) -> str:
    """``text`` with every marked region replaced by its table."""

    def fill(match: re.Match[str]) -> str:
        opening, path, name, _, closing = match.groups()
        return f"{opening}{render(repo / path, name)}\n{closing}"

    return REGION.sub(fill, text)


def regions(text: str) -> list[tuple[str, str | None]]:
    """``(results file, table)`` of each marked region of ``text``."""
    return [(path, name) for _, path, name, _, _ in REGION.findall(text)]


def stale(repo: Path = REPO) -> list[Path]:
    """The pages whose marked regions differ from what their JSON renders to."""
    return [
        page
        for page in pages(repo)
        if page.is_file() and rendered(page.read_text(encoding="utf-8"), repo) != page.read_text(encoding="utf-8")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a page is not what its JSON renders to")
    args = parser.parse_args(argv)
    if args.check:
        for page in stale():
            print(f"{page.relative_to(REPO)}: not current; run python benchmarks/render_results.py", file=sys.stderr)
        return 1 if stale() else 0
    for page in pages():
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        new = rendered(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"wrote {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
