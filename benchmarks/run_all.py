"""Run every CPU benchmark and summarise the targets: the figures in benchmarks/RESULTS.md come from here.

Usage: ``python benchmarks/run_all.py [--quick] [--out DIR] [--only NAME ...]``

Each benchmark runs in its own process and writes ``DIR/NAME.json`` (default
``benchmarks/results``); the summary of every target found in DIR (those run now and any
earlier results there) is printed as Markdown and written to ``DIR/summary.md``. The GPU
benchmark (``gpu.py``) runs only where CUDA is available.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CPU_BENCHMARKS = ("plugin_calls", "step", "auto", "memory", "registry", "telemetry")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the JSON files go")
    parser.add_argument("--only", nargs="+", choices=[*CPU_BENCHMARKS, "gpu"], help="run only these")
    return parser.parse_args()


def cuda_available() -> bool:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def run(name: str, out: Path, quick: bool) -> None:
    """Run benchmark ``name``, which writes ``out/NAME.json``."""
    path = out / f"{name}.json"
    command = [sys.executable, str(HERE / f"{name}.py"), "--json", str(path)]
    if quick:
        command.append("--quick")
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"== {name} took {time.perf_counter() - started:.0f} s", flush=True)


def summary(paths: list[Path]) -> str:
    """Markdown: the machine, then every target with its value and whether it is met."""
    reports: list[dict[str, Any]] = [json.loads(p.read_text()) for p in paths if p.exists()]
    if not reports:
        return "No results.\n"
    machine = reports[0]["machine"]
    versions = machine["versions"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in machine["cpu_flags"].items())
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs ({flags}); Python {machine['python']},"
        f" torch {versions['torch']}, lightning {versions['lightning']}, pluggy {versions['pluggy']}.",
        "",
        "| benchmark | date (UTC) | load average at the end (1, 5, 15 min) |",
        "|---|---|---|",
        *(f"| {r['benchmark']} | {r['machine']['date']} | {r['machine']['load_average']} |" for r in reports),
        "",
        "| benchmark | target | measured | bound | met |",
        "|---|---|---|---|---|",
    ]
    for report in reports:
        for target in report["targets"]:
            unit = target["unit"]
            lines.append(
                f"| {report['benchmark']} | {target['name']} | {target['value']:.4g}{unit}"
                f" | <= {target['at_most']:g}{unit} | {'yes' if target['met'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = arguments()
    names = list(args.only or CPU_BENCHMARKS)
    if args.only is None and cuda_available():
        names.append("gpu")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        run(name, args.out, args.quick)
    text = summary([args.out / f"{name}.json" for name in (*CPU_BENCHMARKS, "gpu")])
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
