"""The step and "auto" benchmarks on a CUDA GPU, with a GPT-style model; about three minutes on an H200.

Usage::

    pip install --no-deps --no-build-isolation -e . -e backends/cpu -e backends/cuda
    python benchmarks/gpu.py --json OUT [--quick]
    python benchmarks/gpu.py --dry-run          # the same code on the CPU with tiny sizes

1. A training step through ``get_precision(p, "cuda")`` vs the same step by hand
   (``torch.autocast`` + ``GradScaler`` for fp16) vs Lightning's ``MixedPrecision``, for
   "bf16-mixed", "16-mixed", and "16-mixed" with a fused AdamW (whose ``step()`` unscales
   itself). Target: plugin / hand <= 1.02. Peak memory (``torch.cuda.max_memory_allocated``) of
   each, plugin / hand <= 1.01.
2. "auto": the step time of every precision the device can run, and "auto"'s over the fastest
   (target <= 1.1), with the gain over a user who picks "bf16-mixed" or "16-mixed".
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
from lightning.fabric.plugins.precision import MixedPrecision
from models import Config, build, hand_step, plugin_step
from torch import nn

import mixprec


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results to this file")
    parser.add_argument(
        "--dry-run", action="store_true", help="run every code path on the CPU with tiny sizes (no GPU needed)"
    )
    return parser.parse_args()


def optimizer_for(model: nn.Module, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)


def step_variants(precision: str, config: Config, device: str, fused: bool) -> dict[str, Callable[[], None]]:
    """plugin / lightning / hand steps for ``precision``, each on its own model copy."""
    steps: dict[str, Callable[[], None]] = {}
    for name in ("plugin", "lightning", "hand"):
        model, x, y = build(config, device)
        optimizer = optimizer_for(model, fused)
        if name == "hand":
            steps[name] = hand_step(precision, device, model, optimizer, x, y)
            continue
        if name == "plugin":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mixprec.PrecisionWarning)
                obj = mixprec.get_precision(precision, device)
        else:
            obj = MixedPrecision(precision, device)  # type: ignore[arg-type]
        steps[name] = plugin_step(obj, model, optimizer, x, y)
    return steps


def peak_memory(step: Callable[[], None], device: str) -> float | None:
    """Peak allocated memory (MiB) of one step on a CUDA device; None elsewhere."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def bench_steps(report: harness.Report, config: Config, device: str, rounds: int, min_time: float) -> None:
    sync = torch.cuda.synchronize if device == "cuda" else None
    cases = (("bf16-mixed", False), ("16-mixed", False), ("16-mixed", True))
    for precision, fused in cases:
        label = f"{precision}{' fused AdamW' if fused else ''}"
        print(label, flush=True)
        steps = step_variants(precision, config, device, fused)
        result = harness.compare(steps, rounds=rounds, min_time=min_time, sync=sync)
        memory = {name: peak_memory(step, device) for name, step in steps.items()}
        ratio = result.ratio("plugin", "hand")
        row: dict[str, Any] = {
            "case": label,
            "hand_ms": result.median("hand") * 1e3,
            "plugin_ms": result.median("plugin") * 1e3,
            "lightning_ms": result.median("lightning") * 1e3,
            "plugin_over_hand": ratio[1],
            "plugin_over_hand_q1": ratio[0],
            "plugin_over_hand_q3": ratio[2],
            "lightning_over_hand": result.ratio("lightning", "hand")[1],
        }
        row.update({f"{name}_peak_mib": value for name, value in memory.items()})
        report.result(**row)
        report.target(f"gpu step {label}: plugin / hand", ratio[1], at_most=1.02)
        if memory["plugin"] is not None and memory["hand"] is not None:
            report.target(f"gpu memory {label}: plugin / hand", memory["plugin"] / memory["hand"], at_most=1.01)


def bench_auto(report: harness.Report, config: Config, device: str, rounds: int, min_time: float) -> None:
    sync = torch.cuda.synchronize if device == "cuda" else None
    auto = mixprec.get_precision("auto", device).precision
    usable = sorted({r.precision for r in mixprec.available(device) if r.status in ("available", "slow")})
    print(f"auto picks {auto}; measuring {usable}", flush=True)
    steps: dict[str, Callable[[], None]] = {}
    for precision in usable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixprec.PrecisionWarning)
            obj = mixprec.get_precision(precision, device)
        model, x, y = build(config, device)
        model = obj.convert_module(model)
        steps[precision] = plugin_step(obj, model, optimizer_for(model, False), x, y)
    result = harness.compare(steps, rounds=rounds, min_time=min_time, warmup=2, sync=sync)
    times = {p: result.median(p) for p in usable}
    fastest = min(times, key=times.__getitem__)
    candidates = [p for p in mixprec.AUTO_ORDER if p in times]
    fastest_candidate = min(candidates, key=times.__getitem__)
    row: dict[str, Any] = {"auto": auto, "fastest": fastest, "fastest_of_auto_candidates": fastest_candidate}
    row.update({f"{p}_ms": t * 1e3 for p, t in times.items()})
    row["auto_over_fastest"] = result.ratio(auto, fastest)[1]
    row["auto_over_fastest_candidate"] = result.ratio(auto, fastest_candidate)[1]
    for picked in ("bf16-mixed", "16-mixed"):
        if picked in times:
            row[f"gain_over_{picked}"] = result.ratio(picked, auto)[1]
    report.result(**row)
    report.target("gpu auto / fastest of its candidates", row["auto_over_fastest_candidate"], at_most=1.1)
    report.target("gpu auto / fastest of all precisions", row["auto_over_fastest"], at_most=1.1)


def main() -> None:
    args = arguments()
    if args.dry_run:
        print("DRY RUN on the CPU with tiny sizes: it checks the code paths; its figures mean nothing.")
        device, rounds, min_time = "cpu", 2, 0.0
        config = Config("gpt-tiny", "block", width=64, depth=2, batch=2, seq=16, layers=2)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("No CUDA device: run with --dry-run to check the script on a CPU.")
        device = "cuda"
        rounds, min_time = (5, 0.05) if args.quick else (15, 0.1)
        config = Config("gpt", "block", width=1024, depth=16, batch=8, seq=1024, layers=4)
    started = time.perf_counter()
    report = harness.Report(
        "gpu",
        {
            "device": device,
            "dry_run": args.dry_run,
            "model": config.describe(),
            "rounds": rounds,
            "min_time_s": min_time,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        },
    )
    print(mixprec.explain("auto", device), flush=True)
    bench_steps(report, config, device, rounds, min_time)
    bench_auto(report, config, device, rounds, min_time)
    report.settings["wall_s"] = time.perf_counter() - started
    report.write(args.json)


if __name__ == "__main__":
    main()
