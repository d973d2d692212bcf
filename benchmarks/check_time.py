"""How long ``mixprec check cpu`` takes, as CI runs it, against the suite of an earlier revision.

Usage: ``python benchmarks/check_time.py [--quick] [--json OUT] [--baseline REV] [--rounds N]``

1. The command: ``python -m mixprec check cpu`` in fresh interpreters, and ``import mixprec.testing``
   alone (the floor no check can go below: torch and lightning), in interleaved rounds whose order
   rotates; with ``--baseline REV``, also the same work done by that git revision's suite (its
   ``mixprec/testing`` extracted into a package of another name, run against today's core and
   backends). Wall time, median and quartiles.
2. In process: ``Suite("cpu").run()`` of today's suite and the baseline's (also on one torch thread, as
   today's runs, to tell the gain of the thread from that of the checks), interleaved, wall time.
3. Per check: each check's time summed over the precisions of one run of today's suite, slowest first.

Wall time throughout, since that is what CI waits for; the machine's load is recorded with it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parents[1]
TESTING = "core/mixprec/testing"
BASELINE_PACKAGE = "mixprec_testing_baseline"


def _extract(revision: str, into: Path) -> Path:
    """Write ``revision``'s mixprec.testing into ``into`` as the package :data:`BASELINE_PACKAGE`."""
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{revision}:{TESTING}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    package = into / BASELINE_PACKAGE
    package.mkdir(parents=True)
    for name in names:
        if not name.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:{TESTING}/{name}"], check=True, capture_output=True, text=True
        ).stdout
        (package / name).write_text(source.replace("mixprec.testing", BASELINE_PACKAGE))
    return into


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _commands(baseline: Path | None) -> dict[str, list[str]]:
    commands = {
        "mixprec check cpu": [sys.executable, "-m", "mixprec", "check", "cpu"],
        "import mixprec.testing": _child("import mixprec.testing"),
    }
    if baseline is not None:
        commands["baseline suite, as mixprec check cpu"] = _child(
            f"import sys; sys.path.insert(0, {str(baseline)!r}); from {BASELINE_PACKAGE} import Suite;"
            " sys.exit(0 if Suite('cpu').run().ok else 1)"
        )
    return commands


def _summary(times: list[float]) -> dict[str, Any]:
    low, median, high = harness.quartiles(times)
    return {"median_s": round(median, 3), "quartiles_s": [round(low, 3), round(high, 3)], "runs_s": times}


def _interleaved(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Each variant timed once per round, the order rotating every round."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(round(time.perf_counter() - start, 3))
    return times


def _run(command: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)

    return run


def _suite_run(package: str, *, one_thread: bool = False) -> Callable[[], None]:
    from mixprec.testing._suite import one_thread as single

    suite = importlib.import_module(package).Suite

    def run() -> None:
        if one_thread:
            with single():
                assert suite("cpu").run().ok
        else:
            assert suite("cpu").run().ok

    return run


def _per_check() -> list[tuple[str, float]]:
    from mixprec.testing import Suite
    from mixprec.testing._suite import one_thread

    totals: dict[str, float] = defaultdict(float)
    with one_thread():
        for case in Suite("cpu").cases:
            start = time.perf_counter()
            case.run()
            totals[case.check.name] += time.perf_counter() - start
    return sorted(((name, round(t, 4)) for name, t in totals.items()), key=lambda item: -item[1])


def _arguments() -> argparse.Namespace:
    # No --threads: each suite runs as it would in CI (today's sets one torch thread itself).
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results to this file")
    parser.add_argument("--baseline", default=None, metavar="REV", help="also time the suite of this git revision")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each measure (default 7; --quick 3)")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    rounds = args.rounds or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _extract(args.baseline, Path(tmp)) if args.baseline else None
        commands = {name: _run(command) for name, command in _commands(baseline).items()}
        command = {name: _summary(times) for name, times in _interleaved(commands, rounds).items()}
        variants = {"today's suite": _suite_run("mixprec.testing")}
        if baseline is not None:
            sys.path.insert(0, str(baseline))
            variants["baseline suite"] = _suite_run(BASELINE_PACKAGE)
            # What the baseline would take on one thread, as today's runs: the part of the gain that is not the threads.
            variants["baseline suite, one torch thread"] = _suite_run(BASELINE_PACKAGE, one_thread=True)
        for run in variants.values():
            run()  # warm-up: the model, the data and the float32 reference are built once per process
        in_process = {name: _summary(t) for name, t in _interleaved(variants, rounds).items()}
    from mixprec.testing import Suite

    cases = {"today's suite": len(Suite("cpu").cases)}
    if baseline is not None:
        cases["baseline suite"] = cases["baseline suite, one torch thread"] = len(
            importlib.import_module(BASELINE_PACKAGE).Suite("cpu").cases
        )
    results = {
        "machine": harness.machine(),
        "baseline": args.baseline,
        "rounds": rounds,
        "cases": cases,
        "command_wall": command,
        "suite_run_in_process_wall": in_process,
        "per_check_s": dict(_per_check()),
    }
    for name, summary in command.items():
        print(f"{name:<40} median {summary['median_s']:6.2f} s  quartiles {summary['quartiles_s']}")
    for name, summary in in_process.items():
        print(f"{name + ' (in process)':<40} median {summary['median_s']:6.2f} s  ({cases[name]} cases)")
    slowest = ", ".join(f"{n} {t:.3f} s" for n, t in list(results["per_check_s"].items())[:5])
    print(f"slowest checks of today's suite: {slowest}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
