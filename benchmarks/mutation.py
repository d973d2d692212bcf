"""How many generated mutants of the precision classes the conformance suite kills: the suite's score.

Usage: ``python benchmarks/mutation.py [--sample N] [--json OUT] [--timeout S] [--module M ...] [--target T]``

Every mutant of the installed Lightning precision classes (Fabric's and the Trainer's ``precision``,
``amp``, ``half``, ``double`` and ``fsdp`` modules) and of mixprec's own (``mixprec._fabric``,
``mixprec._trainer``, ``mixprec._scaler``), made by the operators of ``tests/mutation/operators.py``
from the installed source at run time, is registered as a backend and checked by the suite
(``tests/mutation/runner.py``). Reported per module and per target (Fabric, Trainer, and the
GradScaler checks both share): killed, surviving, equivalent (``tests/mutation/equivalents.json``,
each with why), and the score, killed over the mutants that are not equivalent. A mutant whose code
the suite never runs counts as surviving unless it is recorded as equivalent.

``--json`` (default ``benchmarks/results/mutation.json``) gets every mutant's outcome and the machine.
``--sample N`` runs the fixed sample CI runs (every N-th mutant of each module). ``--target fsdp`` runs only
the mutants that count toward that target (for "fsdp": Lightning's ``fsdp`` modules and mixprec's FSDP classes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives in the repository's tests/mutation

import harness  # noqa: E402

from tests.mutation.runner import Result, Score, enumerate_mutants, load_equivalents, run, sample, score, survivors  # noqa: E402
from tests.mutation.world import TARGETS, target_of  # noqa: E402


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, metavar="N", help="only every N-th mutant of each module")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.json", metavar="OUT")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a mutant may take before it is a hang")
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="only these modules")
    parser.add_argument(
        "--target", choices=("fabric", "trainer", "shared", "fsdp"), help="only the mutants counted toward this target"
    )
    parser.add_argument(
        "--rescore", action="store_true", help="run nothing: score the results in --json again with today's equivalents"
    )
    return parser.parse_args()


def _table(title: str, scores: Mapping[str, Score]) -> list[str]:
    lines = [f"| {title} | mutants | killed | survived | equivalent | score |", "|---|---|---|---|---|---|"]
    for key, s in scores.items():
        lines.append(f"| {key} | {s.total} | {s.killed} | {s.survived} | {s.equivalent} | {100 * s.rate:.1f} % |")
    return lines


def _scored(s: Score) -> dict[str, Any]:
    return {**asdict(s), "rate": s.rate}


def _report(results: list[Result], seconds: float, sample: int | None, machine: dict[str, Any]) -> dict[str, Any]:
    equivalents = load_equivalents()
    scores = score(results, equivalents)
    return {
        "machine": machine,
        "seconds": round(seconds, 1),
        "sample": sample,
        "scores": {kind: {key: _scored(s) for key, s in group.items()} for kind, group in scores.items()},
        "results": [asdict(r) for r in results],
        "equivalents": [asdict(e) for e in equivalents],
    }


def main() -> None:
    args = _arguments()
    if args.rescore:
        old = json.loads(args.json.read_text())
        results = [Result(**r) for r in old["results"]]
        seconds, sample_every, machine = old["seconds"], old["sample"], old["machine"]
    else:
        mutants = enumerate_mutants(args.module or TARGETS)
        if args.target:
            mutants = [m for m in mutants if target_of(m.module, m.tree()[1].function) == args.target]
        if args.sample:
            mutants = sample(mutants, args.sample)
        started = time.monotonic()
        results = run(mutants, timeout=args.timeout, progress=True)
        seconds, sample_every, machine = time.monotonic() - started, args.sample, harness.machine(threads=1)
    report = _report(results, seconds, sample_every, machine)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    scores = score(results, load_equivalents())
    print("\n".join([*_table("target", scores["target"]), "", *_table("module", scores["module"])]))
    print(f"\n{len(results)} mutants in {seconds:.0f} s; results in {args.json}")
    for r in survivors(results, load_equivalents()):
        print(f"survived: {r.id} {r.function} line {r.line}: {r.before.splitlines()[0]} -> {r.after.splitlines()[0]}")


if __name__ == "__main__":
    main()
