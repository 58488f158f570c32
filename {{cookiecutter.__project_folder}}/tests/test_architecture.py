"""The dependency direction: ``main``, ``api`` and ``worker`` on top, domains in the middle,
``models`` below them, ``core`` and ``settings`` at the bottom; no cycles."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
# Packages (and modules) of the layers below the domains; anything else under app/ is a domain
# or a top layer.
BOTTOM = {"core", "settings"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports(path: Path) -> set[str]:
    """The ``app.*`` modules ``path`` imports (absolute imports only: ruff bans the others)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("app"))
    return found


def layer(module: str) -> str:
    """The first part below ``app``: ``core``, ``models``, ``worker``, a domain, ..."""
    return module.split(".")[1] if "." in module else module


GRAPH = {module_name(path): app_imports(path) for path in APP.rglob("*.py")}


@pytest.mark.parametrize("bottom", sorted(BOTTOM))
def test_core_and_settings_import_nothing_above_them(bottom: str) -> None:
    above = {
        (module, imported)
        for module, imports in GRAPH.items()
        if layer(module) == bottom
        for imported in imports
        if layer(imported) not in BOTTOM
    }
    assert above == set()


def test_models_import_no_domain_and_no_top_layer() -> None:
    above = {
        (module, imported)
        for module, imports in GRAPH.items()
        if layer(module) == "models"
        for imported in imports
        if layer(imported) not in BOTTOM | {"models"}
    }
    assert above == set()


def test_the_queue_and_the_health_checks_import_no_domain() -> None:
    # Domains declare their tasks on the broker (app.worker); the worker process finds them by
    # file name (--fs-discover), so the worker package never needs to import a domain.
    allowed = BOTTOM | {"models", "worker", "health"}
    found = {
        (module, imported)
        for module, imports in GRAPH.items()
        if layer(module) in {"worker", "health"}
        for imported in imports
        if layer(imported) not in allowed
    }
    assert found == set()


def test_nothing_imports_the_application_factory_or_the_api_routes() -> None:
    found = {
        (module, imported)
        for module, imports in GRAPH.items()
        if layer(module) not in {"main", "api"}
        for imported in imports
        if layer(imported) in {"main", "api"}
    }
    assert found == set()


def test_the_module_graph_has_no_cycle() -> None:
    # Package __init__ modules re-export their children; an edge to one's own package is no cycle.
    edges = {
        module: {imported for imported in imports if not module.startswith(f"{imported}.")}
        for module, imports in GRAPH.items()
    }
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as cycle:  # pragma: no cover - the message names the cycle
        pytest.fail(f"import cycle: {cycle.args[1]}")
