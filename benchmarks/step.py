"""A training step through mixprec's precision vs by hand vs Lightning's ``MixedPrecision``, on CPU.

Usage: ``python benchmarks/step.py [--quick] [--json OUT] [--threads N]``

For each precision and model, three variants train their own copy of the same model in
interleaved rounds: ``plugin`` (``mixprec.get_precision(precision, "cpu")``), ``lightning``
(``lightning.fabric.plugins.precision.MixedPrecision(precision, "cpu")``) and ``hand``
(``torch.autocast`` + ``torch.amp.GradScaler`` for fp16). Target: plugin / hand <= 1.02.

fp16 on a CPU without AMX-FP16 is emulated and many times slower than fp32, so the 16-mixed
models are tiny: the step is then short, which makes any per-step overhead more visible, not less.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import harness
import torch
from lightning.fabric.plugins.precision import MixedPrecision
from models import Config, build, hand_step, plugin_step

import mixprec

#: (precision, model) pairs: bf16 models sized for a short run on one core, fp16 ones tiny.
CONFIGS = {
    "bf16-mixed": (
        Config("small", "mlp", width=256, depth=3, batch=64),
        Config("medium", "block", width=256, depth=4, batch=8, seq=64),
    ),
    "16-mixed": (
        Config("small", "mlp", width=64, depth=2, batch=16),
        Config("medium", "block", width=64, depth=2, batch=4, seq=16),
    ),
}
TARGET = 1.02


def variants(precision: str, config: Config) -> dict[str, Callable[[], None]]:
    """Each variant's step function, each with its own model, optimizer and batch (same seed)."""
    steps: dict[str, Callable[[], None]] = {}
    for name in ("plugin", "lightning", "hand"):
        model, x, y = build(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if name == "hand":
            steps[name] = hand_step(precision, "cpu", model, optimizer, x, y)
            continue
        if name == "plugin":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # "slow here": measured anyway
                obj = mixprec.get_precision(precision, "cpu")
        else:
            obj = MixedPrecision(precision, "cpu")  # type: ignore[arg-type]
        steps[name] = plugin_step(obj, model, optimizer, x, y)
    return steps


def main() -> None:
    args = harness.arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    rounds, min_time = (21, 0.01) if args.quick else (101, 0.02)
    settings = {"rounds": rounds, "min_time_s": min_time, "threads": args.threads, "clock": args.clock}
    report = harness.Report("step", settings)
    for precision, configs in CONFIGS.items():
        for config in configs:
            print(f"{precision} {config.name}: {config.describe()}", flush=True)
            steps = variants(precision, config)
            result = harness.compare(steps, rounds=rounds, min_time=min_time, timer=harness.clock(args.clock))
            plugin = result.ratio("plugin", "hand")
            report.result(
                precision=precision,
                model=config.name,
                describe=config.describe(),
                hand_ms=result.median("hand") * 1e3,
                plugin_ms=result.median("plugin") * 1e3,
                lightning_ms=result.median("lightning") * 1e3,
                plugin_over_hand=plugin[1],
                plugin_over_hand_q1=plugin[0],
                plugin_over_hand_q3=plugin[2],
                lightning_over_hand=result.ratio("lightning", "hand")[1],
                plugin_over_lightning=result.ratio("plugin", "lightning")[1],
                plugin_over_hand_of_mins=result.min_ratio("plugin", "hand"),
            )
            report.target(f"step {precision} {config.name}: plugin / hand", plugin[1], at_most=TARGET)
    report.write(args.json, args.threads)


if __name__ == "__main__":
    main()
