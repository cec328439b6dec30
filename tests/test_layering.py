"""Data flows one way: recipe -> model -> masks -> stripped model -> ONNX -> verdict.

Every import of the package (function-level ones included) is read from the source, and a
package may import only its own layer or the layers below it; the core never imports a plugin.
No module imports itself back through others (a function-level import does not hide a cycle),
and no two modules of the core share a file name.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from robprune_deploy import _MODULE_OF

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
    {"export"},
    {"quantization"},
    {"evaluation"},
    {"reporting"},
    {"tracking"},
    # The recipe is read by the gate and above; the layers below take plain values (thresholds,
    # names, URIs), so they can be used without a recipe.
    {"recipe"},
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


# --- cycles ---------------------------------------------------------------------------------------
def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _run_time_imports(path: Path) -> list[str]:
    """Every absolute import in ``path`` that runs (not those under ``if TYPE_CHECKING:``), as
    ``module.name`` for ``from module import name``."""
    tree = ast.parse(path.read_text(), str(path))
    never_run = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in never_run:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports when it runs}``, function-level imports included.

    ``from package import name`` points at the submodule ``package.name`` when there is one, else
    at ``package`` (its ``__init__``); a name ``robprune_deploy`` exports lazily points at the
    module it comes from.
    """
    modules = {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _run_time_imports(path):
            head, _, attribute = imported.rpartition(".")
            if imported not in modules and head == package.name and attribute in _MODULE_OF:
                imported = _MODULE_OF[attribute]
            while imported not in modules and "." in imported:  # ``from a.b import function``: a.b
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                graph[name].add(imported)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_not_even_through_function_level_imports() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_sees_a_function_level_import(tmp_path: Path) -> None:
    # tracking.models -> mlflow_tracker -> uris -> models once hid behind function-level imports.
    package = tmp_path / "robprune_deploy"
    (package / "tracking").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tracking" / "__init__.py").write_text("")
    (package / "tracking" / "models.py").write_text("def f():\n    from robprune_deploy.tracking.tracker import g\n")
    (package / "tracking" / "tracker.py").write_text("from robprune_deploy.tracking.uris import h\n")
    (package / "tracking" / "uris.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from robprune_deploy.gate import x\n"
        "def h():\n    from robprune_deploy.tracking import models\n"
    )
    names = ["robprune_deploy.tracking.models", "robprune_deploy.tracking.tracker", "robprune_deploy.tracking.uris"]
    assert _cycles(_graph(package)) == [names]


# --- file names -----------------------------------------------------------------------------------
# Each plugin under plugins/ is a distribution of its own with the same layout (algorithm.py,
# report.py, ...): a template a new plugin copies, so file names repeat across plugins on purpose and
# only the core's are checked here.
def test_no_two_modules_of_the_core_share_a_file_name() -> None:
    names = Counter(p.name for p in SOURCES if p.name != "__init__.py")
    repeated = {
        name: sorted(str(p.relative_to(PACKAGE)) for p in SOURCES if p.name == name)
        for name, n in names.items()
        if n > 1
    }
    assert repeated == {}


# --- values the recipe passes down ----------------------------------------------------------------
def test_the_layers_below_the_recipe_agree_with_its_names_and_defaults() -> None:
    """Evaluation keeps its own copies of what the recipe validates (it may not import the recipe)."""
    from typing import get_args

    from robprune_deploy.evaluation.indicators import INDICATORS
    from robprune_deploy.evaluation.memory_bound import DEFAULT_MAX_SESSION_MEMORY_MB
    from robprune_deploy.recipe.schema import EvaluateSection, IndicatorName

    assert get_args(IndicatorName) == INDICATORS
    assert EvaluateSection().max_session_memory_mb == DEFAULT_MAX_SESSION_MEMORY_MB
