"""The ``mixprec`` command: list, explain, check, demo, bench.

``list`` and ``explain`` import neither lightning nor (beyond what a backend's hardware probe needs)
anything heavy; the other commands import what they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import mixprec
from mixprec._errors import PrecisionError

__all__ = ["main"]


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
    header = ("BACKEND", "DEVICE", "PRECISION", "STATUS", "PRIORITY", "DISTRIBUTION", "REASON")
    table = [header] + [
        (
            r.backend,
            r.device_type,
            r.precision,
            r.status,
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
    return 0 if explanation.error is None else 1


def _check(args: argparse.Namespace) -> int:
    from mixprec.testing import Suite

    report = Suite(args.backend, args.device, args.precision).run()
    print(report.to_json() if args.json else report)
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from mixprec import demo

    return demo.run(args.device, args.steps, as_json=args.json)


def _bench(args: argparse.Namespace) -> int:
    from mixprec import bench

    settings = bench.BenchSettings(args.device, args.rounds, args.dim, args.seq, args.batch, args.json, args.plot)
    return bench.run(settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixprec", description="Pick and check mixed-precision plugins for PyTorch and Lightning."
    )
    parser.add_argument("--version", action="version", version=f"mixprec {mixprec.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="every backend, device type and precision, with its status here")
    listing.add_argument("--device", default=None, help="ask only about this device, e.g. 'cuda:1'")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)

    explaining = commands.add_parser("explain", help="which backend serves a precision on a device, and why")
    explaining.add_argument("precision", nargs="?", default="auto", help="e.g. bf16-mixed, 16-mixed, auto")
    explaining.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    explaining.add_argument("--backend", default=None, help="force a backend by name")
    explaining.add_argument("--json", action="store_true", help="print JSON")
    explaining.set_defaults(run=_explain)

    checking = commands.add_parser(
        "check", help="run the conformance suite against a backend; exit 1 if a check fails (skips are not failures)"
    )
    checking.add_argument("backend", help="the backend's name, as `mixprec list` shows it")
    checking.add_argument("--device", default=None, help="e.g. cuda:1 (default: the backend's device type)")
    checking.add_argument("--precision", default=None, help="check only this precision (default: every one offered)")
    checking.add_argument("--json", action="store_true", help="print JSON")
    checking.set_defaults(run=_check)

    demoing = commands.add_parser("demo", help="train a small model in every precision usable here, side by side")
    demoing.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    demoing.add_argument("--steps", type=int, default=100, help="training steps per precision (default: %(default)s)")
    demoing.add_argument("--json", action="store_true", help="print JSON instead of text")
    demoing.set_defaults(run=_demo)

    benching = commands.add_parser("bench", help="time a transformer block's training step in each precision here")
    benching.add_argument("--device", default=None, help="e.g. cpu, cuda:1 (default: the best device present)")
    benching.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    benching.add_argument("--dim", type=int, default=256, help="the block's width (default: %(default)s)")
    benching.add_argument("--seq", type=int, default=128, help="sequence length (default: %(default)s)")
    benching.add_argument("--batch", type=int, default=8, help="batch size (default: %(default)s)")
    benching.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the results as JSON")
    benching.add_argument(
        "--plot", type=Path, default=None, metavar="FILE", help="draw a PNG bar chart (needs mixprec[plot])"
    )
    benching.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PrecisionError as exc:
        print(f"mixprec: error: {exc}", file=sys.stderr)
        return 2
