"""What telemetry and overflow location cost per training step, on the CPU models of ``step.py``.

Usage: ``python benchmarks/telemetry.py [--quick] [--json OUT] [--threads N]``

For each precision and model of ``step.py``, three variants train their own copy of the same model in
interleaved rounds through the object ``get_precision(precision, "cpu")`` builds:

- ``off``: the object with its recording bypassed (its ``optimizer_step`` is Lightning's own), the step
  as it was before telemetry;
- ``on``: the object as built, recording every step (the default);
- ``locate``: built with ``locate_overflow=True``, its hooks on the model (opt-in debugging).

Target: on / off <= 1.01. The cost of ``locate`` is measured, not held to a target.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import harness
import torch
from lightning.fabric.plugins.precision import MixedPrecision
from models import Config, build, plugin_step
from step import CONFIGS

import mixprec

TARGET = 1.01


def variants(precision: str, config: Config) -> dict[str, Callable[[], None]]:
    """Each variant's step function, each with its own model, optimizer and batch (same seed)."""
    steps: dict[str, Callable[[], None]] = {}
    for name in ("off", "on", "locate"):
        model, x, y = build(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # "slow here": measured anyway
            obj = mixprec.get_precision(precision, "cpu", locate_overflow=name == "locate")
        model = obj.convert_module(model)
        if name == "off":
            obj.optimizer_step = functools.partial(MixedPrecision.optimizer_step, obj)  # type: ignore[method-assign]
        steps[name] = plugin_step(obj, model, optimizer, x, y)
    return steps


def main() -> None:
    args = harness.arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    rounds, min_time = (21, 0.01) if args.quick else (101, 0.02)
    settings = {"rounds": rounds, "min_time_s": min_time, "threads": args.threads, "clock": args.clock}
    report = harness.Report("telemetry", settings)
    for precision, configs in CONFIGS.items():
        for config in configs:
            print(f"{precision} {config.name}: {config.describe()}", flush=True)
            result = harness.compare(
                variants(precision, config), rounds=rounds, min_time=min_time, timer=harness.clock(args.clock)
            )
            on = result.ratio("on", "off")
            report.result(
                precision=precision,
                model=config.name,
                describe=config.describe(),
                off_ms=result.median("off") * 1e3,
                on_ms=result.median("on") * 1e3,
                locate_ms=result.median("locate") * 1e3,
                on_over_off=on[1],
                on_over_off_q1=on[0],
                on_over_off_q3=on[2],
                on_minus_off_us=result.difference("on", "off") * 1e6,
                locate_over_off=result.ratio("locate", "off")[1],
            )
            report.target(f"telemetry {precision} {config.name}: on / off", on[1], at_most=TARGET)
    report.write(args.json, args.threads)


if __name__ == "__main__":
    main()
