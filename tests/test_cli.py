"""The ``mixprec`` command's conventions: output (``--json``, ``-o FILE``), exit statuses, closed pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixprec import cli
from tests.cli_runs import ABSENT_DEVICE_POLICY, run_cli
from tests.conformance.backends import REFERENCE_POLICY, install
from tests.distributions import Site

COMMANDS = ["list", "explain", "check", "demo", "bench", "new"]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_json_and_output(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([command], capsys)
    assert "--json" in text
    assert "-o FILE, --output FILE" in text


def test_help_documents_the_output_convention_and_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    for line in ("--json ", "-o FILE ", "--junit-xml FILE ", "checked writable before any work starts"):
        assert line in text
    statuses = text.split("exit status:")[1].split()
    assert {"0", "1", "2", "130", "141"} <= set(statuses)


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--json"],
        ["explain", "32-true", "--device", "cpu"],
        ["explain", "bf16-mixed", "--device", "cpu", "--json"],
        ["check", "fake-cuda"],
        ["check", "fake-cuda", "--json"],
    ],
)
def test_output_writes_to_the_file_what_stdout_would_show(argv: list[str], site: Site, tmp_path: Path) -> None:
    install(site, "fake-cuda", ABSENT_DEVICE_POLICY, device_type="cuda")
    shown = run_cli(argv)
    path = tmp_path / "out"
    written = run_cli([*argv, "-o", str(path)])
    assert (written.code, written.out) == (shown.code, "")
    assert path.read_text() == shown.out


def test_json_output_is_json(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    assert run_cli(["list", "--json", "--output", str(path)]).code == 0
    assert {"backends", "failed_plugins", "skipped_plugins"} <= json.loads(path.read_text()).keys()


def test_output_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("x" * 100_000)
    assert run_cli(["explain", "32-true", "--device", "cpu", "-o", str(path)]).code == 0
    assert path.read_text().startswith("mixprec: '32-true' on cpu\n")


@pytest.mark.parametrize("where", ["no/such/dir/out.json", "."])
def test_an_output_file_that_cannot_be_written_fails_before_the_command_runs(tmp_path: Path, where: str) -> None:
    # check of an unknown backend would fail too: the output is checked first, so its error is the one shown.
    ran = run_cli(["check", "nope", "-o", str(tmp_path / where)])
    assert ran.code == 2
    assert ran.err.startswith(f"mixprec: error: -o {tmp_path / where}: cannot write there (")
    assert "No installed backend" not in ran.err
    assert list(tmp_path.iterdir()) == []


def test_a_command_that_fails_leaves_a_new_output_file_unwritten(tmp_path: Path) -> None:
    ran = run_cli(["explain", "--device", "no-such-device!", "-o", str(tmp_path / "out")])
    assert ran.code == 2
    assert not (tmp_path / "out").exists()


def test_a_command_that_fails_leaves_an_existing_output_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("kept")
    assert run_cli(["explain", "--device", "no-such-device!", "-o", str(path)]).code == 2
    assert path.read_text() == "kept"


def test_explain_exits_1_when_no_precision_can_be_chosen() -> None:
    ran = run_cli(["explain", "32-true", "--device", "cpu:3"])
    assert ran.code == 1
    assert "\nno choice: " in ran.out


def test_an_error_mixprec_reports_exits_2_with_one_line_and_no_traceback() -> None:
    ran = run_cli(["list", "--device", "cuda:x"])
    assert ran.code == 2
    assert ran.err.startswith("mixprec: error: Malformed device string 'cuda:x'")
    assert ran.err.count("\n") == 1


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["list", "--no-such-option"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_an_interrupt_exits_130_with_one_line(site: Site) -> None:
    site.install(
        "mixprec-interrupted",
        entry_points={"interrupted": "interrupted"},
        modules={
            "interrupted": """
                import mixprec

                @mixprec.hookimpl
                def mixprec_backends():
                    return [mixprec.Backend("interrupted", "cpu", ("32-true",), policy="interrupted.policy")]
            """,
            "interrupted.policy": """
                def availability(precision, device):
                    raise KeyboardInterrupt

                def device_count():
                    return 1

                def create(request):
                    raise AssertionError("never built")
            """,
        },
    )
    ran = run_cli(["list"])
    assert (ran.code, ran.err) == (130, "mixprec: interrupted\n")


def _closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``mixprec ARGV`` with its stdout a pipe that is closed before it writes, as ``| head`` closes it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPREC_")}
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mixprec", *argv], stdout=write, stderr=subprocess.PIPE, text=True, env=env
        )
    finally:
        os.close(write)


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["list"], ["check", "core", "--precision", "32-true"]])
def test_a_closed_pipe_ends_the_command_quietly_with_141(argv: list[str]) -> None:
    done = _closed_pipe(argv)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr  # what Python prints when the flush at exit fails


def test_list_shows_where_each_precisions_contract_comes_from(site: Site) -> None:
    install(
        site,
        "declaring",
        REFERENCE_POLICY,
        precisions=("bf16-mixed", "own-bf16", "own-undeclared"),
        contracts={"own-bf16": "Contract('bfloat16', autocast=True)"},
    )
    rows = {tuple(line.split()[:5]) for line in run_cli(["list", "--device", "cpu"]).out.splitlines()}
    assert ("BACKEND", "DEVICE", "PRECISION", "STATUS", "CONTRACT") in rows
    assert ("declaring", "cpu", "bf16-mixed", "available", "standard") in rows
    assert ("declaring", "cpu", "own-bf16", "available", "declared") in rows
    assert ("declaring", "cpu", "own-undeclared", "available", "undeclared") in rows
