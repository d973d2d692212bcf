"""The ``mixprec`` command: list, explain, check, demo, bench, tune, new.

One convention for output, for every command: text on stdout; ``--json`` prints JSON instead;
``-o FILE`` writes that same output to FILE instead of stdout. Every file a command is asked to
write (``-o``, ``check --junit-xml``, ``bench --plot``) is checked writable before any work starts,
so a bad path fails in a second, not after a benchmark. Progress and notes go to stderr.

Exit status: 0 ok; 1 a check failed (``check``) or no precision can be chosen (``explain``); 2 a
usage error or an error mixprec reports (``mixprec: error: ...``, never a traceback); 130
interrupted; 141 stdout was closed early (``mixprec list | head``): the command stops quietly.

``list``, ``explain`` and ``new`` import no lightning; ``--help`` imports neither torch nor lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import mixprec
from mixprec._errors import PrecisionError

if TYPE_CHECKING:
    from mixprec.testing import Report

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "EXIT_FAILED", "EXIT_INTERRUPTED", "junit_xml", "main"]

#: A check failed, or ``explain`` found no precision to choose.
EXIT_FAILED = 1
#: A usage error, or a :class:`~mixprec.PrecisionError` the command reports as ``mixprec: error: ...``.
EXIT_ERROR = 2
#: Interrupted (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130
#: stdout was closed before the output was written (a closed pipe), as shells report SIGPIPE.
EXIT_BROKEN_PIPE = 141

_EPILOG = """\
output, the same for every command:
  (default)         text on stdout
  --json            JSON on stdout instead of text
  -o FILE           that same output written to FILE instead of stdout
  --junit-xml FILE  (check) a JUnit XML report as well, one testcase per precision:check
  Every FILE is checked writable before any work starts; progress goes to stderr.

exit status:
  0    ok; for check: no check failed (skipped checks are not failures)
  1    check: a check failed; explain: no precision can be chosen
  2    a usage error, or an error mixprec reports as "mixprec: error: ..."
  130  interrupted
  141  stdout was closed early (as in "mixprec list | head"); the command stops quietly
"""


# --- the commands -------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    records = mixprec.available(args.device)
    from mixprec._registry import registry

    skipped = registry.snapshot().skipped
    if args.json:
        payload = {
            "backends": [asdict(r) for r in records if r.status != "failed" or r.precision],
            "failed_plugins": [
                {"plugin": r.plugin, "distribution": r.distribution, "version": r.version, "error": r.reason}
                for r in records
                if r.status == "failed" and not r.precision
            ],
            "skipped_plugins": [
                {"plugin": p.name, "distribution": p.distribution, "version": p.version, "reason": why}
                for p, why in skipped
            ],
        }
        print(json.dumps(payload, indent=2))
        return 0
    rows = [r for r in records if r.precision]
    header = ("BACKEND", "DEVICE", "PRECISION", "STATUS", "CONTRACT", "PRIORITY", "DISTRIBUTION", "REASON")
    table = [header] + [
        (
            r.backend,
            r.device_type,
            r.precision,
            r.status,
            r.contract,
            str(r.priority),
            f"{r.distribution} {r.version}" if r.distribution else "(in-process)",
            r.reason,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    failed = [r for r in records if r.status == "failed" and not r.precision]
    if failed:
        print("\nplugins that failed to load:")
        for r in failed:
            origin = f"{r.distribution} {r.version}" if r.distribution else "in-process"
            print(f"  {r.plugin} ({origin}): {r.reason}")
    if skipped:
        print("\nplugins not loaded:")
        for plugin, why in skipped:
            origin = f"{plugin.distribution} {plugin.version}" if plugin.distribution else "no distribution"
            print(f"  {plugin.name} ({origin}): {why}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    explanation = mixprec.explain(args.precision, args.device, backend=args.backend)
    if args.json:
        print(json.dumps(asdict(explanation), indent=2))
    else:
        print(explanation)
    return 0 if explanation.error is None else EXIT_FAILED


def _check(args: argparse.Namespace) -> int:
    from mixprec.testing import Suite

    suite = Suite(args.backend, args.device, args.precision, args.target, args.strategy)
    start = time.perf_counter()
    report = suite.run()
    seconds = time.perf_counter() - start
    print(report.to_json() if args.json else report)
    if args.junit_xml is not None:
        _write(args.junit_xml, "--junit-xml", junit_xml(report, seconds))
    return 0 if report.ok else EXIT_FAILED


def _demo(args: argparse.Namespace) -> int:
    from mixprec import demo

    return demo.run(args.device, args.steps, as_json=args.json)


def _bench(args: argparse.Namespace) -> int:
    from mixprec import bench

    settings = bench.BenchSettings(args.device, args.rounds, args.dim, args.seq, args.batch, args.json, args.plot)
    return bench.run(settings)


def _tune(args: argparse.Namespace) -> int:
    from mixprec import _tune_command

    settings = _tune_command.TuneSettings(
        args.factory, args.device, args.candidates, args.budget_s, args.steps, args.refresh, args.json
    )
    return _tune_command.run(settings)


def _new(args: argparse.Namespace) -> int:
    from mixprec._registry import registry
    from mixprec._scaffold import scaffold, scaffold_names

    names = scaffold_names(args.name, args.device, args.dir)
    taken = registry.snapshot().backends.get(names.backend)
    if taken is not None:
        origin = f"by {taken.plugin.distribution}" if taken.plugin.distribution else "in this process"
        raise PrecisionError(
            f"A backend named {names.backend!r} is installed already ({origin}); two backends cannot share a name:"
            " pick another name (or uninstall the other distribution first)."
        )
    written = scaffold(names, mixprec.__version__)
    if args.json:
        payload = {
            "backend": written.backend,
            "device_type": written.device_type,
            "distribution": written.distribution,
            "package": written.package,
            "directory": str(written.directory.resolve()),
            "files": list(written.files),
        }
        print(json.dumps(payload, indent=2))
        return 0
    where = str(written.directory)
    # pip takes a bare name for a package to download: a relative path must look like one.
    if not (written.directory.is_absolute() or where.startswith(".")):
        where = f".{os.sep}{where}"
    print(f"Wrote {written.distribution}, backend {written.backend!r} for {written.device_type} devices, in {where}:")
    for relative in written.files:
        print(f"  {os.path.join(where, relative)}")
    tests = os.path.join(where, "tests")
    print(f"\nNext:\n  pip install -e {where}\n  mixprec check {written.backend}\n  pytest {tests}")
    return 0


# --- JUnit XML ----------------------------------------------------------------------------------


def junit_xml(report: Report, seconds: float) -> bytes:
    """``report`` as a JUnit XML document: one testsuite for the backend on its device, one testcase per case.

    Each testcase is named by the case's id, ``precision:check`` or ``trainer/precision:check`` (as in
    the pytest class); a failure carries the check's message, a skip its reason, an expected failure
    (``xfailed``) is a skip whose message starts "expected failure". The format is the one CI systems
    read (Jenkins, GitLab, GitHub Actions' test reporters, Azure): ``<testsuites>`` around one
    ``<testsuite>``.
    """
    import xml.etree.ElementTree as ET

    counts = {
        "tests": str(len(report.results)),
        "failures": str(report.count("failed")),
        "errors": "0",
        "skipped": str(report.count("skipped") + report.count("xfailed")),
        "time": f"{seconds:.3f}",
    }
    suites = ET.Element("testsuites", {"name": "mixprec check", **counts})
    suite = ET.SubElement(
        suites,
        "testsuite",
        {"name": f"mixprec check {report.backend} --device {report.device}", **counts, "hostname": platform.node()},
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("backend", report.backend),
        ("device", report.device),
        ("distribution", report.distribution or ""),
        ("version", report.version or ""),
        *((f"status {p}", f"{a.status}: {a.reason}" if a.reason else a.status) for p, a in report.availability.items()),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": _xml_text(value)})
    classname = f"mixprec.check.{report.backend}"
    for result in report.results:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": result.id})
        detail = _xml_text(result.detail)
        if result.outcome == "failed":
            failure = ET.SubElement(case, "failure", {"message": detail.split("\n", 1)[0], "type": "CheckFailed"})
            failure.text = detail
        elif result.outcome == "skipped":
            ET.SubElement(case, "skipped", {"message": detail})
        elif result.outcome == "xfailed":  # as pytest's JUnit XML writes an expected failure
            ET.SubElement(case, "skipped", {"message": detail, "type": "pytest.xfail"})
    ET.indent(suites)
    document: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (control characters, lone surrogates) written as ``\\xNN``."""
    return "".join(c if _xml_char(ord(c)) else f"\\x{ord(c):02x}" for c in text)


def _xml_char(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


# --- files --------------------------------------------------------------------------------------


def _check_writable(path: Path, option: str) -> None:
    """Fail now, with what to do, unless ``path`` can be written; leave the file system as it was.

    Opening the file is the only honest test (permissions, a read-only file system, a directory in
    the way, a parent that does not exist): ``os.access`` answers yes to root for all of them.
    """
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, which no file system takes
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PrecisionError(
            f"{option} {path}: cannot write there ({reason}); pass a file in a directory that exists"
            " and that you can write to."
        ) from None
    if not existed:
        path.unlink()


def _write(path: Path, option: str, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise PrecisionError(f"{option} {path}: cannot write there ({exc.strerror or exc}).") from None


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[None]:
    """Send what the command prints to stdout into ``path`` instead, once the command has finished without error."""
    if path is None:
        yield
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    _write(path, "-o", captured.getvalue().encode("utf-8"))


# --- the parser and main ------------------------------------------------------------------------


def _output_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="print JSON instead of text")
    options.add_argument(
        "-o", "--output", type=Path, default=None, metavar="FILE", help="write the output to FILE instead of stdout"
    )
    return options


def _import_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, e.g. one that registers an out-of-tree torch device (repeatable)",
    )
    return options


def _import_first(modules: Sequence[str]) -> None:
    """Import each ``--import`` module, or raise PrecisionError saying which failed and why."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PrecisionError(
                f"--import {name} failed: {type(exc).__name__}: {exc}. The module must be importable here"
                " (installed, or on PYTHONPATH; `python -m mixprec` also finds modules in the current directory)."
            ) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixprec",
        description="Pick and check mixed-precision plugins for PyTorch and Lightning.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mixprec {mixprec.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = [_output_options()]
    # The commands that ask about devices can first import a module that registers one.
    device = [*output, _import_options()]

    listing = commands.add_parser(
        "list", parents=device, help="every backend, device type and precision, with its status here"
    )
    listing.add_argument("--device", default=None, help="ask only about this device, e.g. 'cuda:1'")
    listing.set_defaults(run=_list)

    explaining = commands.add_parser(
        "explain", parents=device, help="which backend serves a precision on a device, and why; exit 1 if none can"
    )
    explaining.add_argument("precision", nargs="?", default="auto", help="e.g. bf16-mixed, 16-mixed, auto")
    explaining.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    explaining.add_argument("--backend", default=None, help="force a backend by name")
    explaining.set_defaults(run=_explain)

    checking = commands.add_parser(
        "check",
        parents=device,
        help="run the conformance suite against a backend; exit 1 if a check fails (skips are not failures)",
    )
    checking.add_argument("backend", help="the backend's name, as `mixprec list` shows it")
    checking.add_argument("--device", default=None, help="e.g. cuda:1 (default: the backend's device type)")
    checking.add_argument("--precision", default=None, help="check only this precision (default: every one offered)")
    checking.add_argument(
        "--target",
        default=None,
        help="check only the objects for 'fabric' or for the 'trainer' (default: both)",
    )
    checking.add_argument(
        "--strategy",
        default=None,
        help="check only the objects for strategy 'fsdp', or 'none' for the ordinary strategies' (default: all)",
    )
    checking.add_argument(
        "--junit-xml",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a JUnit XML report for CI, one testcase per precision:check",
    )
    checking.set_defaults(run=_check)

    demoing = commands.add_parser(
        "demo", parents=device, help="train a small model in every precision usable here, side by side"
    )
    demoing.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    demoing.add_argument("--steps", type=int, default=100, help="training steps per precision (default: %(default)s)")
    demoing.set_defaults(run=_demo)

    benching = commands.add_parser(
        "bench", parents=device, help="time a transformer block's training step in each precision here"
    )
    benching.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    benching.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    benching.add_argument("--dim", type=int, default=256, help="the block's width (default: %(default)s)")
    benching.add_argument("--seq", type=int, default=128, help="sequence length (default: %(default)s)")
    benching.add_argument("--batch", type=int, default=8, help="batch size (default: %(default)s)")
    benching.add_argument(
        "--plot", type=Path, default=None, metavar="FILE", help="also draw a PNG bar chart (needs mixprec[plot])"
    )
    benching.set_defaults(run=_bench)

    from mixprec._tune_defaults import DEFAULT_BUDGET_S, DEFAULT_STEPS

    tuning = commands.add_parser(
        "tune",
        parents=output,
        help="measure your model in each precision usable here and pick the fastest safe one",
    )
    tuning.add_argument(
        "factory",
        metavar="MODULE:FACTORY",
        help="a function (in a module, or a .py file) that returns (model, example) or (model, example, loss_fn)",
    )
    tuning.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    tuning.add_argument(
        "--candidates", nargs="+", default=None, metavar="P", help="the precisions to measure (default: auto's)"
    )
    tuning.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="S",
        help="seconds the measuring may take (default: %(default)s)",
    )
    tuning.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="the most steps per precision (default: %(default)s)"
    )
    tuning.add_argument("--refresh", action="store_true", help="measure again even if the cache holds the answer")
    tuning.set_defaults(run=_tune)

    creating = commands.add_parser(
        "new", parents=output, help="write a new backend distribution for a device type, ready to install and check"
    )
    creating.add_argument("name", help="the backend's name, e.g. 'npu' (the distribution is mixprec-NAME)")
    creating.add_argument(
        "--device", required=True, metavar="TYPE", help="the torch device type it serves, e.g. 'xpu', 'npu'"
    )
    creating.add_argument(
        "--dir", type=Path, default=None, metavar="D", help="where to write it, new or empty (default: ./mixprec-NAME)"
    )
    creating.set_defaults(run=_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mixprec`` with ``argv`` (default: the command line); return the exit status (see the module)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("mixprec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        for option in ("output", "junit_xml", "plot"):
            path = getattr(args, option, None)
            if path is not None:
                _check_writable(path, "-o" if option == "output" else f"--{option.replace('_', '-')}")
        _import_first(getattr(args, "imports", ()))
        with _output(args.output):
            code = int(args.run(args))
    except PrecisionError as exc:
        print(f"mixprec: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # A closed pipe shows when the output is flushed: flush here, where main() can still exit quietly.
    sys.stdout.flush()
    return code


def _discard_stdout() -> None:
    """After a closed pipe, point stdout at devnull, so that Python's flush at exit does not fail again.

    This is the recipe of Python's documentation for SIGPIPE ("Note on SIGPIPE" in the signal module).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured, as in tests): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
