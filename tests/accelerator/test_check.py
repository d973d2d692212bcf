"""``mixprec check`` on the fake device, loaded with ``--import``."""

from __future__ import annotations

from types import ModuleType

import pytest

from mixprec.cli import EXIT_ERROR, main

pytestmark = pytest.mark.slow


def test_check_passes_on_the_fake_device_with_nothing_skipped(
    fake_device: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # One precision here; the accelerator tox env runs every one.
    code = main(["check", "accelerator", "--device", "fakedev", "--precision", "16-mixed",
                 "--import", "tests.accelerator.fake_device"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 failed, 0 skipped" in out


def test_an_import_that_fails_is_an_error_naming_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--import", "no_such_module_for_mixprec"]) == EXIT_ERROR
    assert "--import no_such_module_for_mixprec failed: ModuleNotFoundError" in capsys.readouterr().err
