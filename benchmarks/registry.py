"""What finding a backend costs: import, first resolution, warm resolution, discovery among many distributions.

Usage: ``python benchmarks/registry.py [--quick] [--json OUT]``

1. ``import mixprec`` and ``import pluggy``, each in fresh interpreters, alternately; the child
   asserts that neither torch nor lightning was imported. Target: mixprec / pluggy <= 1.5.
2. The first ``get_precision("bf16-mixed", "cpu")`` in a fresh interpreter that has already imported
   torch and lightning (``import mixprec`` included, and its parts: discovery, the rest). Target < 15 ms.
3. Warm ``get_precision`` minus the construction of the same object directly, interleaved in one
   process. Target < 20 us.
4. Discovery with 1,000 unrelated distributions (real ``*.dist-info`` folders with entry points in
   other groups) on ``sys.path``, against discovery without them; an audit hook counts the
   ``entry_points.txt`` files read, to show the scan runs once per process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness

#: Fresh interpreters per measure (pairs for "import" and "discovery"); "warm" is in-process rounds.
ROUNDS = {"import": 21, "first": 11, "warm": 101, "discovery": 5}
QUICK_ROUNDS = {"import": 5, "first": 3, "warm": 11, "discovery": 2}

IMPORT_CHILD = """
import sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
heavy = sorted(m for m in ("torch", "lightning", "lightning_fabric") if m in sys.modules)
assert not heavy, f"import {module} imported {{heavy}}"
print(elapsed)
"""

FIRST_CHILD = """
import json, time
import torch, lightning
start = time.perf_counter()
import mixprec
imported = time.perf_counter()
from mixprec._registry import registry
registry.snapshot()
discovered = time.perf_counter()
mixprec.get_precision("bf16-mixed", "cpu")
done = time.perf_counter()
print(json.dumps({"import": imported - start, "discovery": discovered - imported,
                  "rest": done - discovered, "total": done - start}))
"""

DISCOVERY_CHILD = """
import json, sys, time
import torch, lightning  # each scans entry points itself when imported; counted from here on only
reads = []
sys.addaudithook(lambda event, args: reads.append(args[0]) if event == "open"
                 and str(args[0]).endswith("entry_points.txt") else None)
import mixprec
from mixprec._registry import registry
start = time.perf_counter()
registry.snapshot()
elapsed = time.perf_counter() - start
at_discovery = len(reads)
for precision in ("bf16-mixed", "16-mixed", "32-true", "auto", "64-true", "bf16"):
    mixprec.explain(precision, "cpu")
mixprec.available()
print(json.dumps({"discovery": elapsed, "reads_at_discovery": at_discovery, "reads_after": len(reads) - at_discovery}))
"""


def child_environment(bytecode: Path, path: str | None = None) -> dict[str, str]:
    """The environment for child interpreters: bytecode cached in ``bytecode``, as an installed package has it.

    Without it (PYTHONDONTWRITEBYTECODE set, or a read-only tree) every import of mixprec would
    compile its sources while pluggy's installed bytecode is used, and the comparison would be unfair.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    return env


def run_child(code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter (this one's) and return its last line of output."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def import_times(rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"mixprec": [], "pluggy": []}
    for module in times:
        run_child(IMPORT_CHILD.format(module=module), env)  # writes the bytecode
    for index in range(rounds):
        order = ["mixprec", "pluggy"] if index % 2 == 0 else ["pluggy", "mixprec"]
        for module in order:
            times[module].append(float(run_child(IMPORT_CHILD.format(module=module), env)))
    return times


def first_resolution(rounds: int, env: dict[str, str]) -> dict[str, float]:
    run_child(FIRST_CHILD, env)
    runs = [json.loads(run_child(FIRST_CHILD, env)) for _ in range(rounds)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def warm_variants() -> dict[str, dict[str, Callable[[], object]]]:
    """Per precision: get_precision vs constructing the very object it returns."""
    import torch
    from lightning.fabric.plugins.precision import Precision

    import mixprec
    from mixprec.precision import AutocastPrecision

    warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # fp16 is "slow" on most CPUs; still timed

    def scaled() -> object:
        return AutocastPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))

    return {
        "bf16-mixed": {
            "get_precision": lambda: mixprec.get_precision("bf16-mixed", "cpu"),
            "construct": lambda: AutocastPrecision("bf16-mixed", "cpu"),
        },
        "16-mixed": {"get_precision": lambda: mixprec.get_precision("16-mixed", "cpu"), "construct": scaled},
        "32-true": {"get_precision": lambda: mixprec.get_precision("32-true", "cpu"), "construct": Precision},
    }


def install_unrelated(root: Path, count: int) -> None:
    """``count`` real distributions with entry points in groups mixprec never reads."""
    for index in range(count):
        info = root / f"unrelated_pkg_{index}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: unrelated-pkg-{index}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(
            f"[console_scripts]\nunrelated-{index} = unrelated_pkg_{index}:main\n\n"
            f"[unrelated.plugins]\nplugin = unrelated_pkg_{index}.plugin\n"
        )


def discovery(rounds: int, count: int, bytecode: Path) -> dict[str, Any]:
    """Discovery with and without ``count`` unrelated distributions, alternately, fresh processes."""
    with tempfile.TemporaryDirectory() as tmp:
        install_unrelated(Path(tmp), count)
        envs = {"plain": child_environment(bytecode), "crowded": child_environment(bytecode, tmp)}
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "crowded": []}
        for index in range(rounds):
            order = ["plain", "crowded"] if index % 2 == 0 else ["crowded", "plain"]
            for name in order:
                runs[name].append(json.loads(run_child(DISCOVERY_CHILD, envs[name])))
    return {
        name: {
            "discovery_ms": statistics.median(r["discovery"] for r in found) * 1e3,
            "entry_point_files_read_at_discovery": found[0]["reads_at_discovery"],
            "entry_point_files_read_after": max(r["reads_after"] for r in found),
        }
        for name, found in runs.items()
    }


def main() -> None:
    args = harness.arguments(__doc__ or "")
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    count = 1000
    settings = {"rounds": rounds, "unrelated_distributions": count, "clock_in_process": args.clock}
    report = harness.Report("registry", settings)
    with tempfile.TemporaryDirectory() as bytecode:
        measure(report, args, rounds, count, Path(bytecode))
    report.write(args.json, args.threads)


def measure(report: harness.Report, args: Any, rounds: dict[str, int], count: int, bytecode: Path) -> None:
    env = child_environment(bytecode)
    print("import mixprec vs import pluggy, fresh interpreters", flush=True)
    times = import_times(rounds["import"], env)
    ratios = [a / b for a, b in zip(times["mixprec"], times["pluggy"], strict=True)]
    ratio = statistics.median(ratios)
    report.result(
        measure="import",
        mixprec_ms=statistics.median(times["mixprec"]) * 1e3,
        pluggy_ms=statistics.median(times["pluggy"]) * 1e3,
        ratio=ratio,
    )
    report.target("import mixprec / import pluggy", ratio, at_most=1.5)

    print("first get_precision after import torch, lightning", flush=True)
    first = first_resolution(rounds["first"], env)
    report.result(measure="first get_precision", **{f"{k}_ms": v * 1e3 for k, v in first.items()})
    report.target("first get_precision beyond torch and lightning", first["total"] * 1e3, at_most=15, unit=" ms")

    print("warm get_precision minus constructing the same object", flush=True)
    import torch

    torch.set_num_threads(args.threads)
    for precision, variants in warm_variants().items():
        timer = harness.clock(args.clock)
        result = harness.compare(variants, rounds=rounds["warm"], min_time=0.002, timer=timer)
        overhead = result.difference("get_precision", "construct") * 1e6
        report.result(
            measure="warm get_precision",
            precision=precision,
            get_precision_us=result.median("get_precision") * 1e6,
            construct_us=result.median("construct") * 1e6,
            overhead_us=overhead,
        )
        report.target(f"warm get_precision {precision} beyond construction", overhead, at_most=20, unit=" us")

    print(f"discovery with {count} unrelated distributions", flush=True)
    found = discovery(rounds["discovery"], count, bytecode)
    for name, row in found.items():
        report.result(measure="discovery", site=name, **row)
    extra = found["crowded"]["discovery_ms"] - found["plain"]["discovery_ms"]
    report.result(measure="discovery", site="cost of 1000 unrelated", extra_ms=extra)
    scans = found["crowded"]["entry_point_files_read_after"]
    report.target("entry_points.txt files read after discovery (scanned once)", scans, at_most=0)


if __name__ == "__main__":
    main()
