"""Running the ``mixprec`` command in-process, as the CLI tests do."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from mixprec import cli


@dataclass(frozen=True)
class Ran:
    """What one run of the command returned and printed."""

    code: int
    out: str
    err: str


def run_cli(argv: list[str]) -> Ran:
    """Run ``mixprec ARGV`` in this process, with what it prints to stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return Ran(code, out.getvalue(), err.getvalue())


#: The policy of a backend whose device is not in this machine: it counts none, so every check is skipped.
ABSENT_DEVICE_POLICY = """
from mixprec import Availability
from mixprec.precision import standard_precision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 0


def create(request):
    return standard_precision(request)
"""
