"""The out-of-tree example backend (examples/third_party_backend) and the walk-through that builds it.

The example is installed the way pip leaves a distribution (its own pyproject's name, version and
entry points, its package's files) into a throwaway site directory, and used through mixprec's
real entry-point discovery.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import mixprec
from tests.cli_runs import run_cli
from tests.distributions import Site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third_party_backend"
WALKTHROUGH = ROOT / "docs" / "writing-a-backend.md"
PACKAGE = "mixprec_sr"
#: What the walk-through creates without quoting: the README it links to, and the empty marker it touches.
NOT_QUOTED = {"README.md", f"{PACKAGE}/py.typed"}
#: The only modules of mixprec a third party imports.
PUBLIC_API = {"mixprec", "mixprec.precision", "mixprec.testing"}

_QUOTED = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def _example_files() -> dict[str, str]:
    skipped = {"__pycache__", "build", ".pytest_cache"}
    return {
        path.relative_to(EXAMPLE).as_posix(): path.read_text()
        for path in sorted(EXAMPLE.rglob("*"))
        if path.is_file()
        and not skipped.intersection(path.relative_to(EXAMPLE).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    }


def _quoted() -> dict[str, str]:
    return {title: body for title, body in _QUOTED.findall(WALKTHROUGH.read_text())}


def _metadata() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return project


@pytest.fixture
def installed(site: Site) -> Site:
    """The example backend, installed from its own files and entry points."""
    project = _metadata()
    entry_points = project["entry-points"]
    assert isinstance(entry_points, dict)
    modules = {
        ".".join(Path(name).with_suffix("").parts).removesuffix(".__init__"): source
        for name, source in _example_files().items()
        if name.startswith(f"{PACKAGE}/") and name.endswith(".py")
    }
    site.install(
        str(project["name"]),
        version=str(project["version"]),
        entry_points=entry_points["mixprec.backends"],
        modules=modules,
    )
    return site


# --- the walk-through builds exactly the example -------------------------------------------------


def test_the_walkthrough_quotes_each_file_verbatim() -> None:
    files = _example_files()
    for title, body in _quoted().items():
        assert body == files[title], f"docs/writing-a-backend.md quotes {title} differently from the example"


def test_the_walkthrough_quotes_every_file_of_the_example() -> None:
    assert set(_quoted()) == set(_example_files()) - NOT_QUOTED
    assert f"touch {PACKAGE}/py.typed" in WALKTHROUGH.read_text()


def _imported_modules(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_example_imports_only_mixprecs_public_api() -> None:
    for name, source in _example_files().items():
        if name.endswith(".py"):
            used = {m for m in _imported_modules(source) if m.split(".")[0] == "mixprec"}
            assert used <= PUBLIC_API, f"{name} imports {sorted(used - PUBLIC_API)}"


def test_loading_the_plugin_imports_neither_torch_nor_lightning(installed: Site) -> None:
    code = "import sys, mixprec_sr; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed.root), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


# --- installed beside the core ------------------------------------------------------------------


def test_installed_it_outranks_every_other_bf16_true_on_cpu(installed: Site) -> None:
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend == "sr"
    notes = {c.backend: c.note for c in mixprec.explain("bf16-true", "cpu").candidates}
    assert notes["cpu"] == "outranked by 'sr'"
    assert notes["core"] == "fallback: a backend for the device type offers it"


def test_it_passes_mixprec_check(installed: Site) -> None:
    ran = run_cli(["check", "sr", "--json"])
    report = json.loads(ran.out)
    assert ran.code == 0
    assert report["passed"] > 0
    skipped = [r for r in report["results"] if r["outcome"] == "skipped"]
    assert [r["id"] for r in skipped if r["target"] == "fabric"] == ["bf16-true:lbfgs_closure"]
    trainers = [r for r in skipped if r["target"] == "trainer"]
    assert trainers
    assert all("builds objects only for target='fabric'" in r["detail"] for r in trainers)


@pytest.mark.slow
def test_its_own_tests_pass(installed: Site) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed.root), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests" / "test_sr.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=installed.root,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_its_seed_option_reaches_the_object(installed: Site) -> None:
    assert mixprec.get_precision("bf16-true", "cpu", seed=7).seed == 7


def test_an_option_it_does_not_take_is_an_option_error(installed: Site) -> None:
    with pytest.raises(mixprec.OptionError, match="takes only 'seed'"):
        mixprec.get_precision("bf16-true", "cpu", init_scale=2.0)


def test_for_the_trainer_another_backend_serves_bf16_true_since_it_builds_fabrics_objects_only(installed: Site) -> None:
    assert mixprec.get_precision("bf16-true", "cpu", target="trainer").mixprec_backend != "sr"


def test_asking_it_for_the_trainer_by_name_is_refused_with_what_to_do(installed: Site) -> None:
    with pytest.raises(mixprec.PrecisionError, match=r"only for target='fabric', not for target='trainer'"):
        mixprec.get_precision("bf16-true", "cpu", backend="sr", target="trainer")


# --- how users select it or keep it out (as the walk-through says) --------------------------------


def test_backend_core_selects_the_cores_bf16_true(installed: Site) -> None:
    assert mixprec.get_precision("bf16-true", "cpu", backend="core").mixprec_backend == "core"


def test_mixprec_backend_core_selects_the_cores_bf16_true(installed: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPREC_BACKEND", "core")
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend == "core"


@pytest.mark.parametrize(("variable", "value"), [("MIXPREC_BLOCK", "sr"), ("MIXPREC_PLUGINS", "cpu")])
def test_blocking_it_keeps_it_from_being_imported(
    installed: Site, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert mixprec.get_precision("bf16-true", "cpu").mixprec_backend == "cpu"  # mixprec-cpu, next by priority
    assert not installed.imported(PACKAGE)
