"""The examples under examples/ run as a user runs them, and resume with the precision state they saved."""

from __future__ import annotations

import ast
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning"),
    pytest.mark.filterwarnings("ignore:The '\\w+_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def precision_states(output: str) -> list[dict[str, Any]]:
    """Every precision state the example printed, in order (each ends its line; the "mixprec" entry nests)."""
    return [ast.literal_eval(state) for state in re.findall(r"precision state (\{.*\})$", output, re.M)]


@pytest.mark.parametrize("precision", ["auto", "16-mixed"])
def test_the_fabric_example_resumes_with_the_saved_precision_state(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--precision", precision, "--steps", "8", "--checkpoint", str(tmp_path / "run.ckpt")]

    saved, resumed = precision_states(run_example("fabric_loop.py", args, monkeypatch, capsys))

    assert resumed == saved
    assert ("scale" in saved) == (precision == "16-mixed")


@pytest.mark.parametrize("precision", ["auto", "16-mixed"])
def test_the_trainer_example_resumes_with_the_saved_precision_state(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--precision", precision, "--steps", "8", "--checkpoint", str(tmp_path / "run.ckpt")]

    output = run_example("trainer_module.py", args, monkeypatch, capsys)

    _, saved, resumed, _ = precision_states(output)
    assert "starting at step 8" in output
    assert resumed == saved
    assert ("scale" in saved) == (precision == "16-mixed")
