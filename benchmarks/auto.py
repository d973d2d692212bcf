"""Is "auto" the fastest precision? Step time of every precision mixprec offers on the CPU, measured.

Usage: ``python benchmarks/auto.py [--quick] [--json OUT] [--threads N]``

For each model, a training step through ``get_precision(p, "cpu")`` for every precision ``p`` that
``mixprec.available("cpu")`` reports usable, in interleaved rounds (each with its own copy of the
model, converted by the precision's ``convert_module``). Reported: the precision "auto" picks, its
step time over the fastest precision measured, and what it gains over a user who picks
"bf16-mixed" or "16-mixed". Target: auto / fastest <= 1.1.

"auto" only chooses among the precisions that keep fp32 weights ("bf16-mixed", "16-mixed",
"32-true"); "bf16-true"/"16-true" train with half-precision weights, which changes results, so
both the fastest of all and the fastest of auto's candidates are reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import harness
import torch
from models import Config, build, plugin_step

import mixprec

CONFIGS = (
    Config("small", "mlp", width=256, depth=3, batch=64),
    Config("medium", "block", width=256, depth=4, batch=8, seq=64),
)
TARGET = 1.1


def usable_precisions(device: str) -> list[str]:
    """Every precision some backend can run on ``device`` here (slow ones included)."""
    found = {r.precision for r in mixprec.available(device) if r.status in ("available", "slow")}
    return sorted(found)


def precision_step(precision: str, config: Config, device: str) -> Callable[[], None]:
    """A training step through ``get_precision(precision, device)`` on a fresh copy of the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # "slow here" is what is measured
        obj = mixprec.get_precision(precision, device)
    model, x, y = build(config, device)
    model = obj.convert_module(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return plugin_step(obj, model, optimizer, x, y)


def measure(
    report: harness.Report, config: Config, device: str, rounds: int, min_time: float, timer: Callable[[], float]
) -> None:
    """Time every usable precision on ``config`` and check "auto" against the fastest."""
    auto = mixprec.get_precision("auto", device).precision
    precisions = usable_precisions(device)
    steps = {p: precision_step(p, config, device) for p in precisions}
    result = harness.compare(steps, rounds=rounds, min_time=min_time, warmup=2, timer=timer)
    times = {p: result.median(p) for p in precisions}
    fastest = min(times, key=times.__getitem__)
    candidates = [p for p in mixprec.AUTO_ORDER if p in times]
    fastest_candidate = min(candidates, key=times.__getitem__)
    row: dict[str, Any] = {"model": config.name, "describe": config.describe(), "auto": auto}
    row.update({f"{p}_ms": t * 1e3 for p, t in times.items()})
    row.update(
        fastest=fastest,
        fastest_of_auto_candidates=fastest_candidate,
        auto_over_fastest=result.ratio(auto, fastest)[1],
        auto_over_fastest_candidate=result.ratio(auto, fastest_candidate)[1],
    )
    for picked in ("bf16-mixed", "16-mixed"):
        if picked in times:
            row[f"gain_over_{picked}"] = result.ratio(picked, auto)[1]
    report.result(**row)
    report.target(
        f"auto {config.name}: auto / fastest of its candidates", row["auto_over_fastest_candidate"], at_most=TARGET
    )
    report.target(f"auto {config.name}: auto / fastest of all precisions", row["auto_over_fastest"], at_most=TARGET)


def main() -> None:
    args = harness.arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    rounds, min_time = (3, 0.0) if args.quick else (11, 0.1)
    settings = {"rounds": rounds, "min_time_s": min_time, "threads": args.threads, "clock": args.clock}
    report = harness.Report("auto", settings)
    print(mixprec.explain("auto", "cpu"), flush=True)
    for config in CONFIGS:
        print(f"{config.name}: {config.describe()}", flush=True)
        measure(report, config, "cpu", rounds, min_time, harness.clock(args.clock))
    report.write(args.json, args.threads)


if __name__ == "__main__":
    main()
