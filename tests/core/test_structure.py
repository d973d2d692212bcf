"""How the core is built, where it is a promise: state with one owner, each concept in its file, imports one way."""

from __future__ import annotations

import ast
from pathlib import Path

import mixprec
from mixprec import _auto, _policies, _presence
from mixprec._caches import Caches
from mixprec._registry import registry

CORE = Path(mixprec.__file__).parent


def test_the_resolvers_caches_are_owned_by_the_registrys_snapshot() -> None:
    snap, caches = _policies.current()
    assert snap is registry.snapshot()
    assert caches is snap.caches


def test_no_module_keeps_caches_of_its_own() -> None:
    modules = [module for module in vars(mixprec).values() if isinstance(module, type(mixprec))]
    assert _policies in modules
    for module in modules:
        assert not [name for name, value in vars(module).items() if isinstance(value, Caches)], module.__name__


def test_registering_a_plugin_starts_with_empty_caches() -> None:
    mixprec.available()
    assert registry.snapshot().caches.probes
    mixprec.register(type("Empty", (), {"mixprec_backends": staticmethod(mixprec.hookimpl(lambda: []))}), "empty")
    assert not registry.snapshot().caches.probes


def test_the_device_auto_means_is_chosen_in_the_auto_module() -> None:
    assert hasattr(_auto, "best_device")
    assert not hasattr(_presence, "best_device")


def _core_imports(path: Path) -> set[str]:
    """The core modules that ``path`` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mixprec"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mixprec")}
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_cores_imports_run_one_way_without_a_cycle() -> None:
    paths = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {name: {m for m in _core_imports(path) if m in paths and m != name} for name, path in paths.items()}
    # A package's __init__ is imported before its modules; its modules importing it is not a cycle.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "an import cycle: " + " -> ".join((*path, name))
        state[name] = "open"
        for dependency in sorted(graph[name]):
            visit(dependency, (*path, name))
        state[name] = "done"

    for name in sorted(graph):
        visit(name, ())
