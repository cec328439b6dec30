"""The sweep file: which recipe, which settings to try, where the study lives, what to optimize.

A sweep file is YAML, validated with pydantic like a recipe: a misspelled key, a wrong type or an
impossible range is one :class:`~robprune_deploy.errors.SweepError` line naming the file and the
field (``sweep s.yaml: grid.seed: ...``), exit 2. Paths (``recipe``, ``out``, a ``journal:`` file)
are relative to the sweep file, so the same command works from any folder and on any machine that
sees the same files. Recipe overrides are dotted paths, exactly those of ``robprune run --set``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from robprune_deploy.errors import SweepError, control_character
from robprune_deploy.recipe.loading import MAX_RECIPE_BYTES, _load_yaml


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"must be a number, a string, true/false or null, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be finite")
    return value


Scalar = Annotated[Any, AfterValidator(_scalar)]
"""A grid or categorical value: what Optuna can store and compare (no lists or mappings)."""
MAX_TRIALS = 100_000
MAX_GRID_POINTS = 10_000
_DOTTED = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
JOURNAL_PREFIX = "journal:"


def override_text(key: str, value: Any) -> str:
    """``key=value`` as ``robprune run --set`` takes it: JSON is YAML, so the value reads back as it
    was given (``"1e-3"`` stays a string, ``1e-3`` a number, ``[cpu]`` a list)."""
    return f"{key}={json.dumps(value)}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FloatParam(_Strict):
    """A real setting drawn from ``[low, high]``; ``log`` samples its logarithm uniformly."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0, description="draw only low + k * step (not with log)")

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Strict):
    """A whole-number setting drawn from ``[low, high]`` (both included)."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class CategoricalParam(_Strict):
    """A setting drawn from a list of values."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalParam:
        _check_distinct(self.choices)
        return self


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("give step or log, not both")


def _check_distinct(values: list[Any]) -> None:
    seen = [json.dumps(v) for v in values]
    if len(set(seen)) != len(seen):
        raise ValueError("values must be distinct")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SamplerSection(_Strict):
    """The sampler of a ``params`` search (a grid is always Optuna's GridSampler)."""

    name: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(0, ge=0, le=2**32 - 1, description="None: a different draw on every run")


class ObjectiveSection(_Strict):
    metric: str = Field(description="a numeric key of the run's summary.json, e.g. val.pgd_acc")
    direction: Literal["maximize", "minimize"] = "maximize"


class SweepSpec(_Strict):
    """A validated sweep file (paths already resolved against the file's folder)."""

    recipe: Path = Field(description="the base recipe, relative to the sweep file")
    out: Path = Field(description="output folder: run folders, sweep.json, the default study database")
    study: str = Field(description="the study name: workers giving the same name and storage share it")
    storage: str | None = Field(
        None,
        description="None: sqlite in the output folder; a database URL; or journal:PATH, a journal file "
        "on a shared file system for workers on several machines",
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="overrides every trial gets (dotted path: value)")
    grid: dict[str, list[Scalar]] | None = Field(None, description="dotted path: values; every combination runs once")
    params: dict[str, Param] | None = Field(None, description="dotted path: distribution, for the sampler")
    sampler: SamplerSection | None = None
    n_trials: int | None = Field(None, gt=0, le=MAX_TRIALS, description="trials of a params search")
    objective: ObjectiveSection
    heartbeat_s: int = Field(10, ge=1, le=3600, description="seconds between a running trial's heartbeats")
    grace_s: int = Field(60, ge=2, le=86_400, description="seconds without a heartbeat before a trial is dead")
    retries: int = Field(2, ge=0, le=100, description="reruns of a trial whose worker died")

    @model_validator(mode="after")
    def _one_search(self) -> SweepSpec:
        if (self.grid is None) == (self.params is None):
            raise ValueError("give either grid (every combination once) or params (a sampler), not both or neither")
        if self.grid is not None:
            if not self.grid:
                raise ValueError("grid: needs at least one setting")
            if self.n_trials is not None:
                raise ValueError("n_trials: a grid runs each of its points once; leave n_trials out")
            if self.sampler is not None:
                raise ValueError("sampler: a grid uses Optuna's GridSampler; leave sampler out")
        elif self.n_trials is None:
            raise ValueError("n_trials: a params search needs the number of trials")
        elif not self.params:
            raise ValueError("params: needs at least one setting")
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s})")
        return self

    @property
    def searched(self) -> list[str]:
        return sorted(self.grid if self.grid is not None else self.params or {})

    def grid_size(self) -> int:
        size = 1
        for values in (self.grid or {}).values():
            size *= len(values)
        return size

    def fixed_overrides(self) -> list[str]:
        return [override_text(k, v) for k, v in sorted(self.fixed.items())]

    def definition(self) -> dict[str, Any]:
        """What makes two runs of the command the same sweep (the recipe is added by its fingerprint)."""
        space: dict[str, Any] = (
            {"grid": self.grid}
            if self.grid is not None
            else {"params": {k: v.model_dump() for k, v in sorted((self.params or {}).items())}}
        )
        return {**space, "fixed": self.fixed, "objective": self.objective.model_dump()}


def _check_keys(spec: SweepSpec) -> None:
    """Every override key is a dotted path, and no setting is both fixed and searched."""
    for section, keys in (("fixed", spec.fixed), ("grid", spec.grid or {}), ("params", spec.params or {})):
        for key in keys:
            if not _DOTTED.match(key):
                raise ValueError(f"{section}.{key}: not a dotted recipe field path (e.g. compression.ratio)")
    for key, values in (spec.grid or {}).items():
        if not values:
            raise ValueError(f"grid.{key}: needs at least one value")
        try:
            _check_distinct(values)
        except ValueError as exc:
            raise ValueError(f"grid.{key}: {exc}") from None
    both = sorted(set(spec.fixed) & set(spec.searched))
    if both:
        raise ValueError(f"fixed.{both[0]}: also searched; a setting is either fixed or searched")
    if spec.grid_size() > MAX_GRID_POINTS:
        raise ValueError(f"grid: {spec.grid_size()} points, more than {MAX_GRID_POINTS}")
    if not _STUDY_NAME.match(spec.study):
        raise ValueError(f"study: {spec.study[:40]!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    for text in (spec.study, spec.storage or "", str(spec.recipe), str(spec.out)):
        bad = control_character(text)
        if bad is not None:
            raise ValueError(f"{text[:40]!r}: contains a control character ({bad!r})")


def _format(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"] if p not in ("float", "int", "categorical")) or "(sweep)"
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    return f"{loc}: {message}"


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; relative paths are taken from the file's folder.

    :raises SweepError: ``"sweep FILE: FIELD: problem"`` for a missing, malformed or invalid file.
    """
    file = Path(path)
    where = f"sweep {file}"
    if not file.is_file():
        raise SweepError(f"{where}: no such file" if not file.exists() else f"{where}: not a regular file")
    try:
        with open(file, "rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise SweepError(f"{where}: larger than {MAX_RECIPE_BYTES} bytes")
        document = _load_yaml(raw.decode("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise SweepError(
            f"{where}:{line} malformed YAML ({getattr(exc, 'problem', None) or type(exc).__name__})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{where}: cannot be read ({str(exc)[:80]})") from None
    except SweepError:
        raise
    except Exception as exc:  # the recipe loader's size and alias limits
        raise SweepError(f"{where}: {exc}") from None
    if not isinstance(document, dict):
        raise SweepError(f"{where}: a sweep file is a mapping of fields, found {type(document).__name__}")
    try:
        spec = SweepSpec.model_validate(document)
        _check_keys(spec)
    except ValidationError as exc:
        errors = exc.errors()
        extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SweepError(f"{where}: {_format(errors[0])}{extra}") from None
    except ValueError as exc:
        raise SweepError(f"{where}: {exc}") from None
    folder = Path(os.path.abspath(file)).parent
    spec.recipe = _beside(folder, spec.recipe)
    spec.out = _beside(folder, spec.out)
    if spec.storage is not None and spec.storage.startswith(JOURNAL_PREFIX):
        journal = spec.storage[len(JOURNAL_PREFIX) :]
        if not journal.strip():
            raise SweepError(f"{where}: storage: journal: needs a file path (journal:PATH)")
        spec.storage = JOURNAL_PREFIX + str(_beside(folder, Path(journal)))
    return spec


def _beside(folder: Path, path: Path) -> Path:
    """``path`` taken from the sweep file's folder, ``..`` folded (links are kept, not resolved)."""
    return Path(os.path.normpath(folder / path.expanduser()))
