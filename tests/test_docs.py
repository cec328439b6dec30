"""The documentation is generated from the code and the data, and builds.

- The recipe, CLI and exit-code references (docs/reference/) are rendered from the pydantic schema,
  the argparse parsers and ``EXIT_CODES``: a field or argument added to a schema or parser appears
  on its page, and the committed pages are what the code renders now.
- Every results table in the docs and the README is rendered from a JSON file under
  benchmarks/results/ that records its provenance, and the committed pages match the files.
- ``mkdocs build --strict`` passes: no broken link, anchor or missing page.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from robprune_deploy.errors import EXIT_CODES
from robprune_deploy.recipe.schema import Recipe
from robprune_deploy.reference import builtin_algorithm_configs, cli_reference, recipe_reference, stale_pages
from robprune_deploy.reference.recipe import sections

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import render_results  # type: ignore[import-not-found]  # noqa: E402
import result_tables  # type: ignore[import-not-found]  # noqa: E402


class _Inner(BaseModel):
    """A nested section of the temporary schema."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(7, ge=0, le=1000, description="PGD steps")


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(0.1, gt=0, lt=1, description="a rate")
    inner: _Inner = Field(default_factory=_Inner)


class _Grown(_Schema):
    """The same schema with one field more: what a developer adds."""

    mode: Literal["fast", "exact"] | None = Field(None, description="how it runs, e.g. <fast> | exact")


def _row(page: str, key: str) -> list[str]:
    line = next(line for line in page.splitlines() if line.startswith(f"| `{key}` |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_a_field_added_to_a_schema_appears_with_its_type_default_bounds_and_description() -> None:
    before, after = recipe_reference(_Schema), recipe_reference(_Grown)
    assert "`mode`" not in before
    assert _row(after, "mode") == [
        "`mode`",
        "`fast` \\| `exact` or null",
        "`null`",
        "",
        "how it runs, e.g. &lt;fast&gt; \\| exact",
    ]
    assert _row(after, "rate") == ["`rate`", "number", "`0.1`", "(0, 1)", "a rate"]
    assert _row(after, "inner.steps") == ["`inner.steps`", "integer", "`7`", "[0, 1000]", "PGD steps"]
    assert _row(after, "inner")[1] == "[section](#inner)"  # a link to the section's own table
    assert "## `inner`\n\nA nested section of the temporary schema." in after


def test_the_recipe_reference_lists_every_field_of_the_recipe_and_of_each_builtin_algorithm() -> None:
    algorithms = builtin_algorithm_configs()
    assert set(algorithms) == {"s2ap", "hydra", "mrpf", "l1_filter", "nncf_magnitude"}
    page = recipe_reference(Recipe, algorithms)
    for path, model in sections(Recipe):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"| `{path + '.' if path else ''}{key}` |" in page, (path, key)
    for config, _ in algorithms.values():
        for name in config.model_fields:
            assert f"| `compression.config.{name}` |" in page
    assert _row(page, "data.image_size")[1:4] == ["integer or null", "`null`", "(0, 1024]"]
    assert _row(page, "compression.ignored_scope.validate")[2] == "`true`"  # the YAML key, not validate_scope
    assert _row(page, "evaluate.providers")[1:4] == ["list of `cuda` \\| `cpu`", "`[cuda, cpu]`", "at least 1 item"]


def test_an_argument_added_to_a_parser_appears_with_its_default_and_help() -> None:
    def parser(grown: bool) -> argparse.ArgumentParser:
        main = argparse.ArgumentParser(prog="tool", description="a tool")
        sub = main.add_subparsers(dest="command", required=True)
        run = sub.add_parser("run", help="run a recipe")
        run.add_argument("recipe", type=Path, help="recipe file")
        run.add_argument("--out", required=True, type=Path, help="output folder")
        group = run.add_mutually_exclusive_group()
        group.add_argument("--resume", action="store_true", help="continue")
        group.add_argument("--force", action="store_true", help="start over")
        if grown:
            run.add_argument("--repeats", type=int, default=30, help="timed rounds (default %(default)s)")
        return main

    before, after = cli_reference(parser(False)), cli_reference(parser(True))
    assert "--repeats" not in before
    assert "| `--repeats REPEATS` | `30` | timed rounds (default 30) |" in after
    assert "tool run RECIPE --out OUT [--resume | --force] [--repeats REPEATS]" in after
    assert "| [`tool run`](#tool-run) | run a recipe |" in after
    assert "| `--out OUT` | required | output folder |" in after


def test_the_committed_reference_pages_are_what_the_code_renders() -> None:
    assert stale_pages(ROOT / "docs") == [], "run: python -m robprune_deploy.reference"


def test_the_exit_code_page_lists_the_codes_the_commands_return() -> None:
    from robprune_deploy.cli import deploy_commands, doctor_command, main

    codes = {c.code: c for c in EXIT_CODES}
    assert sorted(codes) == [0, 1, 2, 3, 130, 143]
    returned = [main.EXIT_BAD_INPUT, main.EXIT_INTERNAL, main.EXIT_INTERRUPTED, main.EXIT_TERMINATED]
    returned += [deploy_commands.EXIT_FAIL, doctor_command.EXIT_UNUSABLE]
    assert set(returned) <= set(codes)
    page = (ROOT / "docs" / "reference" / "exit-codes.md").read_text()
    assert all(f"| `{code}` |" in page for code in codes)


def test_a_results_table_is_rendered_from_its_file_and_a_stale_page_is_found(tmp_path: Path) -> None:
    document = result_tables.results_file(
        {
            "command": "python benchmarks/x.py",
            "commit": "abc1234def",
            "date": "2026-01-02T03:04:05+00:00",
            "hardware": {"cpu": "x86_64", "cores": 2},
            "packages": {"torch": "2.9"},
        },
        {
            "main": result_tables.table(
                [result_tables.text_column("model"), result_tables.column("acc / pgd", "{:.1f} / {:.1f}")],
                [["dense", [94.94, 39.55]], ["pruned", None]],
            )
        },
    )
    assert result_tables.problems(document) == []
    results = tmp_path / "benchmarks" / "results" / "x.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(document))
    page = "intro\n\n<!-- results: benchmarks/results/x.json -->\nstale\n<!-- /results -->\n\nafter\n"
    text = render_results.rendered(page, tmp_path)
    assert "| dense | 94.9 / 39.5 |\n| pruned |  |" in text
    assert "`python benchmarks/x.py`; commit abc1234; 2026-01-02; x86_64, 2 cores; torch 2.9." in text
    assert text.startswith("intro\n") and text.endswith("<!-- /results -->\n\nafter\n") and "stale" not in text
    assert render_results.rendered(text, tmp_path) == text  # rendering a current page changes nothing
    document["tables"]["main"]["rows"][0][1] = [95.0, 40.0]
    results.write_text(json.dumps(document))
    assert "| dense | 95.0 / 40.0 |" in render_results.rendered(text, tmp_path)


def test_a_results_file_without_provenance_is_named() -> None:
    assert result_tables.problems({"tables": {}}) == ["no provenance"]
    transcribed = {"provenance": {"command": "x", "commit": None, "date": None, "hardware": None, "packages": None,
                                  "transcribed": True}, "tables": {}}  # fmt: skip
    assert result_tables.problems(transcribed) == ["transcribed figures without transcribed_from"]


def test_every_results_table_in_the_docs_comes_from_a_file_with_provenance_and_is_current() -> None:
    referenced = {
        (path, name) for page in render_results.pages() for path, name in render_results.regions(page.read_text())
    }
    files = {path for path, _ in referenced}
    assert len(files) >= 10 and "benchmarks/results/digits_attack_table.json" in files
    for path in sorted(files):
        assert result_tables.problems(result_tables.load(ROOT / path)) == [], path
    assert render_results.stale() == [], "run: python benchmarks/render_results.py"


def test_the_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]') builds the site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice about its successor: noise
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "recipe" / "index.html").is_file()
