"""The tests of mixprec-fp8 where it is not installed (the tox env of another backend): skipped, saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: pytest in a fresh interpreter in which ``import mixprec_fp8`` fails, as where it is not installed.
WITHOUT_FP8 = """
import sys
import pytest

sys.modules["mixprec_fp8"] = None
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "tests/backends/test_fp8.py"]))
"""


def test_without_mixprec_fp8_its_tests_are_skipped_saying_it_is_not_installed() -> None:
    run = subprocess.run([sys.executable, "-c", WITHOUT_FP8], cwd=ROOT, capture_output=True, text=True, check=False)
    # pytest's exit code 5: no test ran, and none failed or errored.
    assert run.returncode == 5, run.stdout + run.stderr
    assert "mixprec-fp8 is not installed" in run.stdout
