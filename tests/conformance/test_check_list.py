"""The list of checks: flat, explicit, complete, and built without import-time registration or cycles."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import mixprec.testing
from mixprec.testing import CHECKS, Check
from mixprec.testing import _checks as check_list

PACKAGE = Path(mixprec.testing.__file__).parent
BASE = "mixprec.testing._base"
LIST = "mixprec.testing._checks"


def _modules() -> list[str]:
    return [f"mixprec.testing.{info.name}" for info in pkgutil.iter_modules([str(PACKAGE)])]


def _imported(module: str) -> set[str]:
    """The mixprec.testing modules ``module`` imports, anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{module.rsplit('.', 1)[1]}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "mixprec.testing":
                found.update(f"mixprec.testing.{alias.name}" for alias in node.names)
            elif node.module.startswith("mixprec.testing."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mixprec.testing."))
    return found


def _groups() -> list[str]:
    """The modules that define checks: those holding a Check whose function they define."""
    groups = []
    for name in _modules():
        module = importlib.import_module(name)
        if any(isinstance(v, Check) and v.function.__module__ == name for v in vars(module).values()):
            groups.append(name)
    return groups


def test_every_check_a_group_defines_is_listed_once() -> None:
    defined = {
        (name, attr)
        for name in _groups()
        for attr, value in vars(importlib.import_module(name)).items()
        if isinstance(value, Check) and value.function.__module__ == name
    }
    listed = [(c.function.__module__, c.function.__name__) for c in CHECKS]
    assert sorted(listed) == sorted(defined)


def test_check_names_are_unique() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))


def test_the_list_is_the_checks_module_and_holds_only_checks() -> None:
    assert check_list.CHECKS is CHECKS
    assert all(isinstance(c, Check) for c in CHECKS)


def test_the_base_imports_no_group_and_not_the_list() -> None:
    assert not _imported(BASE) & (set(_groups()) | {LIST})


def test_no_group_imports_the_list() -> None:
    importers = [group for group in _groups() if LIST in _imported(group)]
    assert importers == []


def test_the_list_imports_every_group() -> None:
    assert set(_groups()) <= _imported(LIST)
