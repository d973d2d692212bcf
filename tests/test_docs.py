"""The documentation: the guide's smallest backend built from its text as a reader builds it, its code, the reference.

The smallest backend of docs/writing-a-backend.md is the fenced blocks marked ``project="mixprec-xpu"``:
shell commands (``bash``), files (``title="path"``) and what the commands print (``text``). A reader
runs the commands and writes the files in the order the guide gives them; the test does the same,
in a new virtual environment that sees this one's packages (mixprec, torch, lightning), offline.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

import mixprec
from tests.cli_runs import run_cli
from tests.distributions import Site

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = DOCS / "writing-a-backend.md"
SMALLEST = "mixprec-xpu"
#: What the issue asks of the smallest backend: at most this many lines of plugin and policy code.
MAX_SMALLEST_LINES = 30
#: The modules a backend imports from mixprec, and the reference page of each.
PUBLIC_MODULES = {
    "mixprec": "mixprec",
    "mixprec.precision": "precision",
    "mixprec.probes": "probes",
    "mixprec.testing": "testing",
    "mixprec.lightning": "lightning",
}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<language>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown page: its language, the attributes of its info string, its text."""

    language: str
    attributes: dict[str, str]
    text: str
    line: int
    #: The page's text between the previous block and this one: what a reader reads before it.
    before: str


def _blocks(page: Path) -> list[Block]:
    source = page.read_text()
    found = []
    end = 0
    for match in _FENCE.finditer(source):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        line = source.count("\n", 0, match.start()) + 1
        before = source[end : match.start()]
        end = match.end()
        found.append(Block(match["language"], dict(_ATTRIBUTE.findall(match["info"])), body, line, before))
    return found


def _smallest() -> list[Block]:
    return [b for b in _blocks(GUIDE) if b.attributes.get("project") == SMALLEST]


def _files() -> dict[str, str]:
    return {b.attributes["title"]: b.text for b in _smallest() if "title" in b.attributes}


def _python_lines() -> int:
    """Lines of plugin and policy code: the non-blank lines of the smallest backend's Python files."""
    return sum(
        1 for path, text in _files().items() if path.endswith(".py") for line in text.splitlines() if line.strip()
    )


# --- the guide's code -----------------------------------------------------------------------------


def test_every_python_block_of_the_guide_compiles() -> None:
    blocks = [b for b in _blocks(GUIDE) if b.language == "python"]
    assert blocks
    for block in blocks:
        compile(block.text, f"{GUIDE.name}, the block at line {block.line}", "exec")


def test_the_guides_code_imports_only_public_names() -> None:
    for block in (b for b in _blocks(GUIDE) if b.language == "python"):
        for node in ast.walk(ast.parse(block.text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mixprec":
                assert node.module in PUBLIC_MODULES, f"line {block.line}: {node.module} is not a public module"
                public = set(importlib.import_module(node.module).__all__)
                names = {alias.name for alias in node.names}
                assert names <= public, f"line {block.line}: {sorted(names - public)} not in {node.module}.__all__"


def test_the_guide_names_each_file_it_quotes_in_the_text_before_it() -> None:
    # The info string (title=...) is shown neither on GitHub nor on the site.
    quoted = [b for b in _blocks(GUIDE) if "title" in b.attributes]
    assert quoted
    for block in quoted:
        assert f"`{block.attributes['title']}`" in block.before, f"line {block.line}: the file is not named"


def test_the_smallest_backend_is_a_pyproject_a_plugin_and_a_policy() -> None:
    assert set(_files()) == {"pyproject.toml", "mixprec_xpu/__init__.py", "mixprec_xpu/policy.py"}


def test_the_smallest_backend_has_at_most_30_lines_of_code() -> None:
    assert _python_lines() <= MAX_SMALLEST_LINES


def test_the_guide_says_how_many_lines_the_smallest_backend_has() -> None:
    claimed = re.search(r"(\d+) lines of Python", GUIDE.read_text())
    assert claimed is not None
    assert int(claimed.group(1)) == _python_lines()


# --- the smallest backend, built and checked as the guide says --------------------------------------


def _script() -> str:
    """The guide's commands and files in the guide's order, as one shell script: what a reader types."""
    steps = ["set -euo pipefail"]
    for block in _smallest():
        if block.language == "bash":
            steps.append(block.text)
        elif "title" in block.attributes:
            path = block.attributes["title"]
            steps.append(f"mkdir -p \"$(dirname '{path}')\"")
            steps.append(f"cat > '{path}' <<'MIXPREC_GUIDE_EOF'\n{block.text}MIXPREC_GUIDE_EOF")
    return "\n".join(steps) + "\n"


def _environment(root: Path) -> dict[str, str]:
    """A new virtual environment in ``root/venv`` with mixprec installed, seeing this one's other packages.

    Its own site-packages come first, so what the guide installs there is what mixprec finds; a
    ``.pth`` file adds this environment's site-packages (torch, lightning, pip, setuptools) after it.
    pip runs offline: no index, no build isolation (setuptools is already there).
    """
    missing = [name for name in ("pip", "setuptools") if importlib.util.find_spec(name) is None]
    assert not missing, f"the guide's pip install runs offline with this environment's {missing}: install them here"
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}),
    )
    outer = sysconfig.get_path("purelib")
    (site_packages / "_outer_environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPREC_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]),
        VIRTUAL_ENV=str(venv),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this "no-" option inverted: "0" turns isolation off
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # mixprec itself, as a reader has it before the guide starts: the `mixprec` command of this checkout.
    subprocess.run(
        ["python", "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True, env=env, cwd=root
    )
    return env


@pytest.fixture(scope="module")
def guide_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """The guide's commands and files for the smallest backend, run in a new environment from an empty folder."""
    root = tmp_path_factory.mktemp("reader")
    env = _environment(root)
    work = root / "work"
    work.mkdir()
    return subprocess.run(
        ["bash", "-c", _script()], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _xpu_present() -> bool:
    import torch

    return torch.xpu.device_count() > 0


@pytest.mark.slow
def test_the_guides_commands_install_the_smallest_backend_and_it_fails_no_check(
    guide_run: subprocess.CompletedProcess[str],
) -> None:
    assert guide_run.returncode == 0, guide_run.stdout + guide_run.stderr
    assert "mixprec check: backend 'xpu' from mixprec-xpu 0.1.0, on xpu" in guide_run.stdout
    assert re.search(r"^\d+ passed, 0 failed, \d+ skipped", guide_run.stdout, re.M), guide_run.stdout


@pytest.mark.slow
def test_the_smallest_backend_passes_where_an_intel_gpu_is_and_skips_what_needs_one_where_none_is(
    guide_run: subprocess.CompletedProcess[str],
) -> None:
    counts = re.search(r"^(\d+) passed, 0 failed, (\d+) skipped", guide_run.stdout, re.M)
    assert counts is not None, guide_run.stdout
    skipped = [line for line in guide_run.stdout.splitlines() if line.startswith("  skipped ")]
    if _xpu_present():
        assert int(counts[1]) > int(counts[2]), guide_run.stdout
    else:
        assert int(counts[2]) > 0
        assert all("no xpu device here" in line for line in skipped), guide_run.stdout


@pytest.mark.slow
def test_the_guide_shows_what_mixprec_check_prints_without_an_intel_gpu(
    guide_run: subprocess.CompletedProcess[str],
) -> None:
    if _xpu_present():
        pytest.skip("the guide shows the output of a machine without an Intel GPU")
    (shown,) = [b.text for b in _smallest() if b.language == "text"]
    printed = guide_run.stdout.splitlines()
    for line in shown.splitlines():
        if line.strip() != "...":
            assert line in printed, f"the guide shows {line!r}, which mixprec check does not print"


def test_the_guide_shows_what_mixprec_new_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (shown,) = [b.text for b in _blocks(GUIDE) if b.language == "text" and b.text.startswith("$ mixprec new ")]
    command, printed = shown.split("\n", 1)
    monkeypatch.chdir(tmp_path)
    ran = run_cli(command.removeprefix("$ mixprec ").split())
    assert ran.code == 0, ran.err
    assert ran.out == printed


@pytest.fixture
def smallest_on_cpu(site: Site) -> Site:
    """The smallest backend with its device type "xpu" replaced by "cpu", installed from the guide's files."""
    files = _files()
    project = tomllib.loads(files["pyproject.toml"])["project"]
    modules = {}
    for path, text in files.items():
        if path.endswith(".py"):
            on_cpu = text.replace('device_type="xpu"', 'device_type="cpu"').replace("torch.xpu", "torch.cpu")
            modules[path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")] = on_cpu
    assert modules["mixprec_xpu"] != files["mixprec_xpu/__init__.py"], "the plugin names no device type 'xpu'"
    assert modules["mixprec_xpu.policy"] != files["mixprec_xpu/policy.py"], "the policy counts no torch.xpu devices"
    site.install(
        project["name"],
        version=project["version"],
        entry_points=project["entry-points"]["mixprec.backends"],
        modules=modules,
    )
    return site


@pytest.mark.slow
def test_the_smallest_backend_pointed_at_the_cpu_passes_every_check(smallest_on_cpu: Site) -> None:
    ran = run_cli(["check", "xpu", "--json"])
    report = json.loads(ran.out)
    assert ran.code == 0, ran.out + ran.err
    assert report["device"] == "cpu"
    assert report["failed"] == 0
    assert report["passed"] > 0
    assert [r for r in report["results"] if r["outcome"] == "skipped"] == []


# --- the API reference ------------------------------------------------------------------------------

_DIRECTIVE = re.compile(
    # A py:class with a signature is written by hand for a class public under a name other than its own (an
    # alias autodoc would only call an alias); one without is a pointer to a name documented on another page.
    r"^\.\. (?:(?:auto(?:class|function|data|exception|decorator)|py:decorator|decorator):: (\S+)|py:class:: (\w+)\()",
    re.M,
)


def _documented(page: str) -> set[str]:
    return {a or b for a, b in _DIRECTIVE.findall((DOCS / "reference" / f"{page}.rst").read_text())}


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_the_reference_documents_exactly_the_public_names_of(module: str) -> None:
    imported = importlib.import_module(module)
    public = set(imported.__all__) - {"__version__"}
    if module != "mixprec":
        # Names re-exported from mixprec are documented there, once.
        public = {name for name in public if getattr(imported, name) is not getattr(mixprec, name, None)}
    assert _documented(PUBLIC_MODULES[module]) == public


#: What the documentation build needs that is not installed here, if anything.
_SPHINX_MISSING = [name for name in ("sphinx", "myst_parser", "furo") if importlib.util.find_spec(name) is None]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(_SPHINX_MISSING), reason=f"{', '.join(_SPHINX_MISSING)} not installed: the docs tox env builds the docs"
)
def test_the_documentation_builds_without_a_warning(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(tmp_path)]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    assert built.returncode == 0, textwrap.indent(built.stderr, "  ")
