"""``recipes/paper/``: small cells on shared bases (``extends``), each resolving to the very recipe the
grid held when every cell was a whole file (``tests/data/paper_recipes.json``, parsed from those files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from robprune_deploy.recipe import load_recipe, recipe_to_dict, resolve_recipe_file, validate_recipe
from robprune_deploy.recipe.compose import EXTENDS

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "recipes" / "paper"
BEFORE: dict[str, dict] = json.loads((ROOT / "tests" / "data" / "paper_recipes.json").read_text())
CELLS = sorted(PAPER.glob("*.yaml"))


def test_the_grid_has_the_same_96_cells() -> None:
    assert len(BEFORE) == 96
    assert [c.name for c in CELLS] == sorted(BEFORE)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.stem)
def test_a_cell_resolves_to_the_recipe_it_was(cell: Path) -> None:
    assert resolve_recipe_file(cell) == BEFORE[cell.name]  # the document, value by value
    # and the validated recipe, every default filled in, as a run would save it in recipe.yaml
    assert recipe_to_dict(load_recipe(cell)) == recipe_to_dict(validate_recipe(BEFORE[cell.name]))


def test_cells_are_small_and_every_base_is_used() -> None:
    used: set[str] = set()
    for cell in CELLS:
        assert len(cell.read_text().splitlines()) <= 6, cell
        used.update(base.name for base in _bases(cell))
    assert used == {p.name for p in (PAPER / "bases").glob("*.yaml")}
    total = sum(len(p.read_text().splitlines()) for p in PAPER.rglob("*.yaml"))
    assert total < 700  # 5,340 lines when every cell was a whole file


def _bases(file: Path) -> list[Path]:
    """Every base ``file`` reaches through ``extends``."""
    value = (yaml.safe_load(file.read_text()) or {}).get(EXTENDS) or []
    found = []
    for entry in value if isinstance(value, list) else [value]:
        base = (file.parent / entry).resolve()
        found += [base, *_bases(base)]
    return found
