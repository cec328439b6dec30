"""Data flows one way: recipe -> model -> masks -> stripped model -> ONNX -> verdict.

Every import of the package (function-level ones included) is read from the source, and a
package may import only its own layer or the layers below it; the core never imports a plugin.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "robprune_deploy"

# Lowest first. Within a layer, packages may import each other.
LAYERS: list[set[str]] = [
    {
        "__version__",
        "errors",
        "arguments",
        "atomic",
        "registry",
        "progress",
        "checkpoints",
        "distributed",
        "runtime",
        "termination",
        "statistics",
    },
    {"attacks", "masking", "surgery", "data", "models"},
    {"training"},
    {"algorithms"},
    {"recipe"},
    {"export"},
    {"quantization"},
    {"evaluation"},
    {"reporting"},
    {"tracking"},
    {"gate"},
    {"release"},
    {"pipeline"},
    {"sweep"},
    {"environment", "api", "cli", "__init__"},
    {"reference"},  # the docs' generated pages: reads the recipe schema, the CLI parsers and the registry
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}
PLUGINS = ("robprune_s2ap", "robprune_mrpf")


def _unit(path: Path, package: Path = PACKAGE) -> str:
    """The top-level package (or module) of ``robprune_deploy`` that ``path`` belongs to."""
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "robprune_deploy":
                found += [(node.lineno, f"robprune_deploy.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    assert {_unit(p) for p in SOURCES} <= set(LAYER), sorted({_unit(p) for p in SOURCES} - set(LAYER))


def _violations(path: Path, package: Path = PACKAGE) -> list[str]:
    unit, name = _unit(path, package), path.relative_to(package)
    wrong = []
    for line, module in _imports(path):
        if module.split(".")[0] in PLUGINS:
            wrong.append(f"{name}:{line}: {module} (a plugin)")
        elif module.startswith("robprune_deploy."):
            target = module.split(".")[1]
            if target != unit and LAYER.get(target, -1) > LAYER[unit]:
                wrong.append(f"{name}:{line}: {module} ({target} is above {unit})")
    return wrong


def test_no_module_imports_a_higher_layer_or_a_plugin() -> None:
    assert [v for path in SOURCES for v in _violations(path)] == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    # The check itself must be able to fail: a gate module that reaches into the pipeline.
    fake = tmp_path / "gate.py"
    fake.write_text("def f():\n    from robprune_deploy.pipeline.artifacts import MODEL_ONNX\n")
    ((line, module),) = _imports(fake)
    assert (line, module) == (2, "robprune_deploy.pipeline.artifacts")
    assert LAYER[module.split(".")[1]] > LAYER["gate"]
