"""Property tests: any document either loads or raises RecipeError, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robprune_deploy.errors import RecipeError
from robprune_deploy.recipe import Recipe, apply_overrides, load_recipe, parse_override, validate_recipe

SECTIONS = list(Recipe.model_fields)
FIELDS = {name: list(getattr(field.annotation, "model_fields", {})) for name, field in Recipe.model_fields.items()}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.floats(-2, 2),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.text(max_size=12),
    st.lists(st.integers(0, 3), max_size=3),
)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Recipe-shaped documents: real section and field names with random values, plus noise keys."""
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=5, unique=True)):
        fields = FIELDS[section]
        if not fields or (draw(st.booleans()) and section in ("seed", "device")):
            document[section] = draw(scalars)
            continue
        keys = draw(st.lists(st.sampled_from([*fields, "bogus"]), max_size=4, unique=True))
        document[section] = {k: draw(scalars) for k in keys}
    if draw(st.booleans()):
        return draw(st.one_of(scalars, st.just(document)))
    return document


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_random_documents_load_or_raise_recipe_error(document: Any) -> None:
    try:
        recipe = validate_recipe(document, "<generated>")
    except RecipeError as exc:
        assert str(exc).startswith("<generated>: ") and "\n" not in str(exc)
    else:
        assert isinstance(recipe, Recipe)


valid_overrides = st.one_of(
    st.integers(0, 10).map(lambda v: f"pretrain.epochs={v}"),
    st.floats(0.01, 0.99).map(lambda v: f"compression.ratio={v}"),
    st.floats(0, 1).map(lambda v: f"attack.eps={v}"),
    st.integers(1, 512).map(lambda v: f"data.batch_size={v}"),
    st.sampled_from(["pgd_at", "trades"]).map(lambda v: f"finetune.loss={v}"),
    st.integers(0, 2**31).map(lambda v: f"seed={v}"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_overrides, max_size=6))
def test_valid_overrides_always_load_and_take_effect(overrides: list[str]) -> None:
    document = apply_overrides({}, overrides)
    recipe = validate_recipe(document)
    final = {tuple(parse_override(text)[0]): parse_override(text)[1] for text in overrides}  # the last one wins
    for path, value in final.items():
        node: Any = recipe
        for part in path:
            node = getattr(node, part)
        assert node == value or getattr(node, "value", None) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_override_text_loads_or_raises_recipe_error(text: str) -> None:
    try:
        validate_recipe(apply_overrides({}, [text]))
    except RecipeError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_file_text_loads_or_raises_recipe_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(path) in str(exc)


def test_round_trip_of_the_resolved_recipe() -> None:
    recipe = validate_recipe({"compression": {"ratio": 0.5}, "seed": 3})
    again = validate_recipe(yaml.safe_load(yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True))))
    assert again == recipe
