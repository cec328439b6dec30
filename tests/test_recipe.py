"""Recipe validation errors name the file and the field path; ``--set`` overrides are validated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robprune_deploy.cli.main import main
from robprune_deploy.errors import RecipeError, RobPruneError
from robprune_deploy.recipe import load_recipe, parse_override

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def write(tmp_path: Path, document: object, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def test_every_shipped_recipe_validates() -> None:
    # recipes/sweeps/ holds sweep files (tests/test_sweep.py validates them), not recipes.
    files = sorted(f for f in RECIPES.rglob("*.yaml") if "sweeps" not in f.relative_to(RECIPES).parts)
    assert any(f.name.startswith("digits_") for f in files) and any(f.parent.name == "paper" for f in files)
    for file in files:
        recipe = load_recipe(file)
        assert 0 < recipe.compression.ratio < 1, file


def test_defaults_are_the_digits_pipeline(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, {}))
    assert recipe.data.name == "digits" and recipe.model.name == "digits_cnn"
    assert recipe.attack.eps == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("document", "field", "needle"),
    [
        ({"compression": {"ratio": 1.5}}, "compression.ratio", "less than 1"),
        ({"attack": {"eps": -0.1}}, "attack.eps", "greater than or equal to 0"),
        ({"pretrain": {"epochs": "many"}}, "pretrain.epochs", "valid integer"),
        ({"data": {"batch_sise": 8}}, "data.batch_sise", "unknown field"),
        ({"finetune": {"loss": "awq"}}, "finetune.loss", "'awp'"),
        ({"pretrain": {"loss": "awp"}}, "pretrain.loss", "pgd_at"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda"),
        ({"compression": {"algorithm": "s2pa"}}, "compression.algorithm", "unknown algorithm 's2pa'"),
        (
            {"compression": {"algorithm": "hydra", "config": {"epochz": 3}}},
            "compression.config.epochz",
            "unknown field",
        ),
    ],
)
def test_invalid_field_is_named_with_the_file(tmp_path: Path, document: dict, field: str, needle: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and f"{field}:" in message and needle in message
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\ndata: {name: digits\n")
    with pytest.raises(RecipeError, match=r"bad.yaml.*line \d+: malformed YAML"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "absent.yaml")


def test_set_overrides_are_applied_and_typed(tmp_path: Path) -> None:
    path = write(tmp_path, {"pretrain": {"epochs": 15}})
    recipe = load_recipe(
        path,
        ["pretrain.epochs=2", "compression.ratio=0.5", "data.train_subset=100", "evaluate.providers=[cpu]", "seed=7"],
    )
    assert recipe.pretrain.epochs == 2 and recipe.compression.ratio == 0.5
    assert recipe.data.train_subset == 100 and recipe.evaluate.providers == ["cpu"] and recipe.seed == 7


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("compression.ratio=2", "compression.ratio: Input should be less than 1"),
        ("pretrain.epocs=2", "pretrain.epocs: unknown field"),
        ("ratio", "expected key.path=value"),
        ("seed.value=3", "seed is a value, not a section"),
        ("data..root=/x", "not a dotted field path"),
    ],
)
def test_invalid_overrides_are_errors(tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle.replace(".", r"\.")):
        load_recipe(write(tmp_path, {"seed": 1}), [override])


def test_parse_override_parses_yaml_scalars() -> None:
    assert parse_override("a.b=0.25") == (["a", "b"], 0.25)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    # YAML 1.2 floats: PyYAML's YAML 1.1 rules would give the strings "1e-12" and "2E3".
    assert parse_override("a=1e-12") == (["a"], 1e-12) and parse_override("a=2E3") == (["a"], 2000.0)
    assert parse_override("a=1e") == (["a"], "1e")


def test_exponent_floats_in_a_recipe_file_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("pretrain:\n  lr: 5e-2\ncompression:\n  algorithm: s2ap\n  config:\n    gamma: 1e-2\n")
    recipe = load_recipe(path)
    assert recipe.pretrain.lr == 0.05 and recipe.compression.config["gamma"] == 0.01


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"compression": {"ratio": 0}})
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: ") and "compression.ratio" in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_switching_algorithm_with_set_drops_the_other_algorithms_options(caplog) -> None:
    """`--set compression.algorithm=X` on a recipe written for S2AP keeps the options X shares and
    drops the others with one notice; options given with --set are still validated against X."""
    recipe = load_recipe(RECIPES / "digits_s2ap.yaml", ["compression.algorithm=hydra"])
    assert recipe.compression.config == {"granularity": "unstructured", "epochs": 8, "lr": 0.1}
    notices = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert notices == [
        "notice: compression.algorithm is hydra (--set): dropped the recipe's compression.config "
        "swap_fraction, warmup_epochs (not options of hydra)"
    ]
    assert load_recipe(RECIPES / "digits_s2ap.yaml", ["compression.algorithm=mrpf"]).compression.config == {}
    with pytest.raises(RecipeError, match=r"compression\.config\.gamma: unknown field"):
        load_recipe(RECIPES / "digits_s2ap.yaml", ["compression.algorithm=mrpf", "compression.config.gamma=0.2"])
    # Without a switch, a stray option is still an error (nothing is dropped silently).
    with pytest.raises(RecipeError, match=r"compression\.config\.gamma: unknown field"):
        load_recipe(RECIPES / "digits_hydra.yaml", ["compression.config.gamma=0.2"])


def test_data_channels_3_puts_a_torchvision_model_on_gray_digits(tmp_path: Path) -> None:
    """`--set model.name=torchvision:resnet18 --set data.channels=3`: the RGB stem gets the gray channel
    three times from the model's input module; the model itself takes the data's 1 channel."""
    import torch

    from robprune_deploy.pipeline import RunContext

    sets = ["model.name=torchvision:resnet18", "data.channels=3", "tracking.enabled=false"]
    ctx = RunContext(load_recipe(RECIPES / "digits_hydra.yaml", sets), tmp_path, show_progress=False)
    model = ctx.new_model().eval()
    assert model.body.conv1.in_channels == 3 and model.normalize.repeat == 3
    gray = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert model(gray).shape == (2, 10)
        # Repeating is exact: the stem sees three identical normalized channels.
        stem = model.body.conv1(model.normalize(gray))
        manual = model.body.conv1(((gray - model.normalize.mean) / model.normalize.std).expand(-1, 3, -1, -1))
    assert torch.equal(stem, manual)
    without = RunContext(load_recipe(RECIPES / "digits_hydra.yaml", sets[::2]), tmp_path, show_progress=False)
    with pytest.raises(RobPruneError, match=r"set data\.channels: 3"):
        without.new_model()
