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


def test_explain_on_the_fake_device_names_the_backend(
    fake_device: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "auto", "--device", "fakedev", "--import", "tests.accelerator.fake_device"]) == 0
    out = capsys.readouterr().out
    assert "bf16-mixed" in out
    assert "accelerator" in out


def test_bench_trains_every_precision_on_the_fake_device(
    fake_device: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # The smallest block, one round: this measures nothing, it runs the measuring code on the device.
    argv = ["bench", "--device", "fakedev", "--rounds", "1", "--dim", "16", "--seq", "4", "--batch", "2"]
    assert main(argv) == 0
    lines = [line.removeprefix("->").split() for line in capsys.readouterr().out.splitlines()]
    rows = {cells[0]: cells[1] for cells in lines if len(cells) > 2 and cells[2] == "available"}
    assert rows == {
        "32-true": "core",
        "64-true": "core",
        "16-true": "accelerator",
        "bf16-true": "accelerator",
        "bf16-mixed": "accelerator",
        "16-mixed": "accelerator",
    }
