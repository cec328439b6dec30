"""Recipes that compose: ``extends`` merges bases deeply, refuses cycles, missing or non-mapping
bases and over-long chains with one exit-2 line naming the file, applies ``--set`` afterwards, and
feeds the resolved recipe to the fingerprint that guards ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from clitools import cli, one_error, sets  # type: ignore[import-not-found]

from robprune_deploy import __version__
from robprune_deploy.errors import RecipeError
from robprune_deploy.pipeline.ownership import STATE_FILE, owner_record, recipe_fingerprint
from robprune_deploy.recipe import load_recipe, recipe_to_dict, resolve_recipe_file
from robprune_deploy.recipe.compose import MAX_EXTENDS_DEPTH, deep_merge

OFF = sets("tracking.enabled=false")


def put(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_deep_merge_merges_mappings_and_replaces_lists_and_scalars() -> None:
    base = {"a": {"x": 1, "y": [1, 2, 3], "z": {"deep": 5, "keep": 6}}, "b": 2, "c": {"m": 1}}
    child = {"a": {"x": 10, "y": [9], "z": {"deep": None}}, "c": 3, "d": {"new": True}}
    merged = deep_merge(base, child)
    assert merged == {"a": {"x": 10, "y": [9], "z": {"deep": None, "keep": 6}}, "b": 2, "c": 3, "d": {"new": True}}
    assert deep_merge({"s": 1}, {"s": {"k": 2}}) == {"s": {"k": 2}}  # a mapping over a scalar replaces it
    merged["a"]["z"]["keep"] = 0  # the result shares nothing with its inputs
    assert base["a"]["z"]["keep"] == 6 and child["a"]["z"] == {"deep": None}


def test_a_recipe_extends_its_bases_in_order_child_last(tmp_path: Path) -> None:
    put(
        tmp_path / "bases" / "schedule.yaml",
        {
            "pretrain": {"epochs": 7, "lr": 0.05},
            "finetune": {"epochs": 4},
            "evaluate": {"providers": ["cuda", "cpu"], "num_examples": 300},
            "gate": {"min_speedup": 1.2, "max_pgd_drop": 0.1},
        },
    )
    put(tmp_path / "bases" / "stricter.yaml", {"finetune": {"epochs": 6, "lr": 0.002}, "gate": {"max_pgd_drop": 0.04}})
    child = put(
        tmp_path / "cells" / "cell.yaml",
        {
            "extends": ["../bases/schedule.yaml", "../bases/stricter.yaml"],  # relative to this file
            "pretrain": {"epochs": 2},
            "evaluate": {"providers": ["cpu"]},
            "gate": {"min_speedup": None},
        },
    )
    recipe = load_recipe(child)
    assert (recipe.pretrain.epochs, recipe.pretrain.lr) == (2, 0.05)  # the child wins key by key
    assert (recipe.finetune.epochs, recipe.finetune.lr) == (6, 0.002)  # the later base wins over the earlier
    assert recipe.evaluate.providers == ["cpu"]  # a list is replaced whole, never concatenated
    assert recipe.evaluate.num_examples == 300
    assert recipe.gate.min_speedup is None and recipe.gate.max_pgd_drop == 0.04  # null sets null
    resolved = resolve_recipe_file(child)
    assert "extends" not in resolved and "extends" not in recipe_to_dict(recipe)


def test_a_base_extends_relative_to_its_own_folder_and_a_diamond_is_fine(tmp_path: Path) -> None:
    put(tmp_path / "root.yaml", {"seed": 3, "pretrain": {"epochs": 9}})
    put(tmp_path / "bases" / "left.yaml", {"extends": "../root.yaml", "pretrain": {"lr": 0.2}})
    put(tmp_path / "bases" / "right.yaml", {"extends": "../root.yaml", "finetune": {"epochs": 5}})
    child = put(tmp_path / "cell.yaml", {"extends": ["bases/left.yaml", "bases/right.yaml"]})
    recipe = load_recipe(child)
    assert (recipe.seed, recipe.pretrain.epochs, recipe.pretrain.lr, recipe.finetune.epochs) == (3, 9, 0.2, 5)


@pytest.mark.parametrize("length", [2, 3])
def test_a_cycle_exits_2_naming_the_files_of_the_cycle(tmp_path: Path, capsys, length: int) -> None:
    names = [f"r{i}.yaml" for i in range(length)]
    for i, name in enumerate(names):
        put(tmp_path / name, {"extends": names[(i + 1) % length], "seed": i})
    code, err = cli(capsys, "run", tmp_path / "r0.yaml", "--out", tmp_path / "out", *OFF)
    assert code == 2
    # Named by the file whose extends closes the cycle, then the chain as its extends wrote it.
    cycle = " -> ".join([str(tmp_path / "r0.yaml"), *names[1:], "r0.yaml"])
    one_error(err, f"recipe {tmp_path / names[-1]}: extends makes a cycle: {cycle}")
    assert not (tmp_path / "out").exists()


def test_a_recipe_that_extends_itself_is_a_cycle(tmp_path: Path) -> None:
    recipe = put(tmp_path / "self.yaml", {"extends": "./self.yaml"})
    with pytest.raises(RecipeError, match=r"self.yaml: extends makes a cycle: .*self.yaml -> .*self.yaml"):
        load_recipe(recipe)


def test_a_missing_base_exits_2_naming_the_recipe_and_the_base(tmp_path: Path, capsys) -> None:
    child = put(tmp_path / "cell.yaml", {"extends": "bases/absent.yaml"})
    code, err = cli(capsys, "run", child, "--out", tmp_path / "out", *OFF)
    assert code == 2
    one_error(err, f"recipe {child}: extends: base {tmp_path / 'bases' / 'absent.yaml'}: no such file")


@pytest.mark.parametrize(
    ("base_text", "needle"),
    [
        ("- a\n- list\n", "a base (of {child}) must be a mapping of sections, found list"),
        ("just text\n", "a base (of {child}) must be a mapping of sections, found str"),
        ("seed: [1\n", "line 2: malformed YAML"),
    ],
)
def test_an_unusable_base_exits_2_naming_it(tmp_path: Path, capsys, base_text: str, needle: str) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(base_text)
    child = put(tmp_path / "cell.yaml", {"extends": "base.yaml"})
    code, err = cli(capsys, "run", child, "--out", tmp_path / "out", *OFF)
    assert code == 2
    one_error(err, f"recipe {base}", needle.format(child=child), str(child))


@pytest.mark.parametrize("value", [3, [], [""], {"path": "base.yaml"}, ["base.yaml", 4]])
def test_extends_must_be_a_path_or_a_list_of_paths(tmp_path: Path, value: object) -> None:
    put(tmp_path / "base.yaml", {"seed": 1})
    child = put(tmp_path / "cell.yaml", {"extends": value})
    with pytest.raises(RecipeError, match=r"cell.yaml: extends: expected a path or a non-empty list of paths"):
        load_recipe(child)


def _chain(folder: Path, files: int) -> Path:
    """``c0.yaml`` extends ``c1.yaml`` ... extends ``c{files-1}.yaml``: ``files`` files in one chain."""
    for i in range(files):
        put(folder / f"c{i}.yaml", {"seed": i} | ({"extends": f"c{i + 1}.yaml"} if i + 1 < files else {}))
    return folder / "c0.yaml"


def test_a_chain_of_the_limit_resolves_and_one_file_more_exits_2(tmp_path: Path, capsys) -> None:
    assert MAX_EXTENDS_DEPTH == 8
    assert load_recipe(_chain(tmp_path / "ok", MAX_EXTENDS_DEPTH)).seed == 0
    too_long = _chain(tmp_path / "long", MAX_EXTENDS_DEPTH + 1)
    code, err = cli(capsys, "run", too_long, "--out", tmp_path / "out", *OFF)
    assert code == 2
    chain = " -> ".join([str(too_long), *(f"c{i}.yaml" for i in range(1, MAX_EXTENDS_DEPTH + 1))])
    assert one_error(err, f"recipe {too_long}: extends chain deeper than 8 files: {chain}").endswith("c8.yaml")


def test_the_depth_limit_holds_for_a_base_already_resolved_at_a_shallower_depth(tmp_path: Path) -> None:
    # c0 extends [c7, c1]: c7 (a 2-file chain, c7 -> c8) is resolved first near the top; through
    # c1 ... c6 the same c7 is reached again as the 8th file, so that chain has 9 files.
    _chain(tmp_path, MAX_EXTENDS_DEPTH + 1)
    put(tmp_path / "c0.yaml", {"extends": ["c7.yaml", "c1.yaml"]})
    with pytest.raises(RecipeError, match="extends chain deeper than 8 files"):
        load_recipe(tmp_path / "c0.yaml")


def test_set_applies_after_the_bases_are_merged(tmp_path: Path) -> None:
    put(
        tmp_path / "base.yaml",
        {
            "pretrain": {"epochs": 7, "lr": 0.05},
            "compression": {"algorithm": "s2ap", "ratio": 0.8, "config": {"epochs": 4, "gamma": 0.1}},
        },
    )
    child = put(tmp_path / "cell.yaml", {"extends": "base.yaml", "pretrain": {"epochs": 5}})
    recipe = load_recipe(child, ["pretrain.epochs=3", "compression.algorithm=hydra"])
    assert (recipe.pretrain.epochs, recipe.pretrain.lr) == (3, 0.05)
    # The switch of algorithm sees the resolved config: the base's S2AP-only option is dropped, its shared one kept.
    assert recipe.compression.algorithm == "hydra" and recipe.compression.config == {"epochs": 4}
    with pytest.raises(RecipeError, match="--set extends: "):
        load_recipe(child, ["extends=other.yaml"])


def test_the_fingerprint_is_of_the_resolved_recipe(tmp_path: Path) -> None:
    base = put(tmp_path / "base.yaml", {"pretrain": {"epochs": 7}, "gate": {"max_pgd_drop": 0.1}})
    child = put(tmp_path / "cell.yaml", {"extends": "base.yaml", "seed": 1})
    flat = put(tmp_path / "flat.yaml", {"pretrain": {"epochs": 7}, "gate": {"max_pgd_drop": 0.1}, "seed": 1})
    before = recipe_fingerprint(load_recipe(child))
    assert before == recipe_fingerprint(load_recipe(flat))  # the same recipe, written out in one file
    put(base, {"pretrain": {"epochs": 7}, "gate": {"max_pgd_drop": 0.05}})
    assert recipe_fingerprint(load_recipe(child)) == before  # gate thresholds are not in the fingerprint
    put(base, {"pretrain": {"epochs": 8}, "gate": {"max_pgd_drop": 0.05}})
    assert recipe_fingerprint(load_recipe(child)) != before


def test_resume_after_an_edited_base_is_refused(tmp_path: Path, capsys) -> None:
    base = put(tmp_path / "base.yaml", {"pretrain": {"epochs": 1}, "finetune": {"epochs": 1}})
    child = put(tmp_path / "cell.yaml", {"extends": "base.yaml"})
    out = tmp_path / "out"
    out.mkdir()
    owner = owner_record(load_recipe(child, ["tracking.enabled=false"]), str(child.resolve()))
    assert owner["version"] == __version__
    (out / STATE_FILE).write_text(json.dumps({"owner": owner, "stages": {}}))  # a folder of the first version
    put(base, {"pretrain": {"epochs": 2}, "finetune": {"epochs": 1}})
    code, err = cli(capsys, "run", child, "--out", out, "--resume", *OFF)
    assert code == 2
    one_error(err, f"--out {out}: holds the results of recipe {child.resolve()}", "or an edited base it extends")
