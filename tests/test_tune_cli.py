"""``mixprec tune MODULE:FACTORY``: the table, JSON, the budget shown, progress, and errors a user can make."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixprec import TuneResult
from tests.cli_runs import Ran, run_cli

FACTORIES = """
    import torch


    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)), torch.randn(4, 8)


    def with_loss():
        model, example = make()
        return model, example, lambda output: output.abs().mean()


    def one_thing():
        return torch.nn.Linear(2, 2)


    def broken():
        raise RuntimeError("no data here")


    NOT_CALLABLE = 3
"""

QUICK = ["--device", "cpu", "--steps", "4"]


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file of factories, and a cache of the test's own."""
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


def tune(factories: Path, name: str, *argv: str) -> Ran:
    return run_cli(["tune", f"{factories}:{name}", *QUICK, *argv])


def test_tune_prints_the_table_with_the_choice_marked_and_why(factories: Path) -> None:
    ran = tune(factories, "make")

    assert ran.code == 0, ran.err
    marked = next(line for line in ran.out.splitlines() if line.startswith("->"))
    picked = next(line for line in ran.out.splitlines() if line.startswith("tune picks "))
    assert f" {picked.split(chr(39))[1]} " in marked
    assert "Step times: " in ran.out


def test_tune_shows_the_budget_and_a_progress_bar_on_stderr(factories: Path) -> None:
    ran = tune(factories, "make")

    assert "budget 30 s (--budget-s), at most 4 steps per precision (--steps)" in ran.err
    assert "measuring [" + "#" * 40 + "]" in ran.err
    assert "\r" not in ran.err


def test_tune_json_is_the_result(factories: Path) -> None:
    ran = tune(factories, "make", "--json")

    payload = json.loads(ran.out)
    assert payload.pop("factory") == f"{factories}:make"
    assert TuneResult.from_dict(payload).precision == payload["precision"]


def test_tune_writes_its_output_to_a_file(factories: Path, tmp_path: Path) -> None:
    ran = tune(factories, "make", "--json", "-o", str(tmp_path / "out.json"))

    assert (ran.code, ran.out) == (0, "")
    assert "precision" in json.loads((tmp_path / "out.json").read_text())


def test_a_second_run_reads_the_cache_and_refresh_measures_again(factories: Path) -> None:
    tune(factories, "make")

    assert "From the cache of an earlier run" in tune(factories, "make").out
    assert "From the cache" not in tune(factories, "make", "--refresh").out


def test_the_factory_may_return_a_loss_function(factories: Path) -> None:
    ran = tune(factories, "with_loss", "--json")

    assert ran.code == 0, ran.err


def test_candidates_are_measured_as_listed(factories: Path) -> None:
    ran = tune(factories, "make", "--json", "--candidates", "bf16-true")

    assert {m["precision"] for m in json.loads(ran.out)["measurements"]} == {"32-true", "bf16-true"}


def test_a_module_on_the_current_directory_is_found(factories: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(factories.parent)
    done = subprocess.run(
        [sys.executable, "-m", "mixprec", "tune", "models:make", *QUICK, "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["factory"] == "models:make"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "is not MODULE:FACTORY"),
        ("no_such_module_here:make", "Importing 'no_such_module_here' failed"),
        ("{path}:missing", "'missing' in '{path}' does not exist"),
        ("{path}:NOT_CALLABLE", "'NOT_CALLABLE' in '{path}' is not callable"),
        ("{path}:one_thing", "returned Linear, not (model, example)"),
        ("{path}:broken", "raised RuntimeError: no data here"),
        ("/no/such/file.py:make", "is not a Python file"),
    ],
)
def test_a_factory_that_cannot_be_used_is_an_error_that_says_why(factories: Path, spec: str, message: str) -> None:
    ran = run_cli(["tune", spec.format(path=factories), *QUICK])

    assert ran.code == 2
    assert ran.err.startswith("mixprec: error: ")
    assert message.format(path=factories) in ran.err
    assert "Traceback" not in ran.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "2"], "steps=2 is out of range"),
        (["--budget-s", "0"], "budget_s=0.0 is out of range"),
        (["--candidates", "bf17-mixed"], "Unknown precision 'bf17-mixed'"),
        (["--device", "cpu:4"], "cpu:4 does not exist"),
    ],
)
def test_bad_settings_are_errors(factories: Path, argv: list[str], message: str) -> None:
    ran = run_cli(["tune", f"{factories}:make", "--device", "cpu", *argv])

    assert ran.code == 2
    assert message in ran.err


@pytest.fixture
def sibling_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A script that imports a module beside it and defines a dataclass, as training scripts do; run from elsewhere."""
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    project = tmp_path / "project"
    project.mkdir()
    (project / "tune_sibling_layers.py").write_text("import torch\n\nlayer = lambda: torch.nn.Linear(4, 4)\n")
    (project / "tune_sibling_train.py").write_text(TRAINING_SCRIPT)
    monkeypatch.chdir(tmp_path)
    yield project / "tune_sibling_train.py"
    for name in ("tune_sibling_layers", "tune_sibling_train"):
        sys.modules.pop(name, None)


TRAINING_SCRIPT = """\
from __future__ import annotations

from dataclasses import dataclass

import torch
import tune_sibling_layers


@dataclass
class Config:
    width: int = 4


def build():
    return tune_sibling_layers.layer(), torch.randn(2, Config().width)
"""


def test_a_script_that_imports_a_module_beside_it_is_tuned_from_another_directory(sibling_project: Path) -> None:
    ran = run_cli(["tune", f"{sibling_project}:build", *QUICK])

    assert ran.code == 0, ran.err
    assert "tune picks " in ran.out


def test_a_script_named_as_an_imported_module_leaves_that_module_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "json.py"
    script.write_text(textwrap.dedent(FACTORIES))

    ran = run_cli(["tune", f"{script}:make", *QUICK])

    assert ran.code == 0, ran.err
    assert sys.modules["json"] is json
