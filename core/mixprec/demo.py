"""``mixprec demo``: what mixprec found on this machine, what "auto" picks, and what each precision is worth.

It lists the backends found, explains what "auto" picks on the device, then trains the same small
model on the same synthetic data through Lightning Fabric in every precision some backend can run
there, the precisions taking turns (interleaved rounds), and prints the final loss, the step time
and the speed relative to fp32 of each. Every number is measured in the run.

A precision too slow to finish ``--steps`` steps in its share of :data:`BUDGET_SECONDS` (an
emulated dtype can be 25 times slower than fp32) trains fewer, and the table says how many; fp32
and the precision "auto" picks always train the same number, so that their losses compare, and
no precision trains more than they do. On the CPU the demo trains with one torch thread and times
each step by that thread's CPU time, as the benchmarks do, so that a busy machine does not skew
the comparison. Last, it shows what :func:`mixprec.tune` picks for the demo's model beside what
"auto" answers from the hardware alone.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch

import mixprec
from mixprec import Device, Explanation, PrecisionError, Record
from mixprec.bench import (
    BASELINE,
    SEED,
    Progress,
    Result,
    Run,
    Workload,
    describe_rounds,
    interleave,
    milliseconds,
    noise_note,
    options,
    resolve_device,
    results,
    speed,
    split,
    table,
)

__all__ = ["BUDGET_SECONDS", "ROUNDS", "TUNE_BUDGET_SECONDS", "mlp", "run"]

#: The training of all precisions together should take about this long at most.
BUDGET_SECONDS = 15.0
#: The wall-clock seconds :func:`mixprec.tune` may spend measuring the demo's model.
TUNE_BUDGET_SECONDS = 5.0
#: How many turns the precisions take; each step time is the median over them.
ROUNDS = 5
#: The steps :meth:`Run.calibrate` trains before the rounds; at least one more step is timed in the rounds.
CALIBRATION_STEPS = 2
MIN_STEPS = CALIBRATION_STEPS + 1

_FEATURES = 32
_HIDDEN = 512
_OUTPUTS = 8
_SAMPLES = 256


def mlp() -> Workload:
    """A 3-layer MLP learning a fixed smooth function of its inputs, on one full batch of synthetic samples."""

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(_FEATURES, _HIDDEN),
            torch.nn.GELU(),
            torch.nn.Linear(_HIDDEN, _HIDDEN),
            torch.nn.GELU(),
            torch.nn.Linear(_HIDDEN, _OUTPUTS),
        )

    def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(SEED)
        inputs = torch.randn(_SAMPLES, _FEATURES, generator=generator)
        mixing = torch.randn(_FEATURES, _OUTPUTS, generator=generator) / _FEATURES**0.5
        targets = torch.sin(2 * inputs @ mixing)
        return inputs.to(device), targets.to(device)

    parameters = sum(p.numel() for p in model().parameters())
    return Workload(
        f"a 3-layer MLP ({parameters:,} parameters) fitting {_SAMPLES} synthetic samples",
        model,
        data,
        learning_rate=0.2,
        settings={"features": _FEATURES, "hidden": _HIDDEN, "outputs": _OUTPUTS, "samples": _SAMPLES},
    )


def run(device: str | None, steps: int, as_json: bool = False) -> int:
    """Run the demo on ``device`` (None: the best device present); print text, or JSON with ``as_json``."""
    if steps < MIN_STEPS:
        raise PrecisionError(f"--steps must be at least {MIN_STEPS}, not {steps}.")
    target = resolve_device(device)
    records = mixprec.available()
    auto = mixprec.explain("auto", str(target))
    if not as_json:
        print(_backends(records))
        print(f"\nWhat 'auto' picks on {target}, and why:\n{_indent(str(auto))}\n")
    usable, unusable = options(target)
    workload = mlp()
    with _one_thread(target):
        runs = [Run(option, workload, target) for option in usable]
        if not as_json:
            print(f"Training {workload.description} on {target}, {steps} steps in each precision:")
            sys.stdout.flush()
        rows = _train(runs, steps, auto.precision)
        tuned = _tune(workload, target)
    if as_json:
        payload = _payload(target, records, auto, workload, rows, unusable)
        payload["tune"] = tuned.to_dict()
        print(json.dumps(payload, indent=2))
        return 0
    print(_results_table(rows, steps, unusable))
    for note in (_summary(rows), noise_note(rows), _timing_note(runs), _tune_note(tuned, auto.precision)):
        if note:
            print(note)
    return 0


@contextlib.contextmanager
def _one_thread(device: Device) -> Iterator[None]:
    """On the CPU, train with one torch thread: steps are then timed by its CPU time, as the benchmarks do."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _timing_note(runs: Sequence[Run]) -> str:
    clock = runs[0].clock.name if runs else ""
    return f"Step times: {clock} per step, median over the interleaved rounds." if clock else ""


def _tune(workload: Workload, device: Device) -> mixprec.TuneResult:
    """What :func:`mixprec.tune` picks for the demo's model, with the demo's optimizer and loss."""
    torch.manual_seed(SEED)
    model = workload.model()
    inputs, targets = workload.batch(torch.device(str(device)))
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.learning_rate, momentum=0.9)

    def loss(output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(output, targets)

    bar = Progress("tuning for the demo's model", 1.0, sys.stderr)
    result = mixprec.tune(
        model,
        inputs,
        device=str(device),
        loss_fn=loss,
        optimizer=optimizer,
        budget_s=TUNE_BUDGET_SECONDS,
        progress=lambda done: bar.advance(done - bar.done),
    )
    bar.close()
    return result


def _tune_note(result: mixprec.TuneResult, auto: str | None) -> str:
    """What tune picks for this model beside what "auto" answers from the hardware alone."""
    origin = " (from tune's cache; MIXPREC_TUNE_REFRESH=1 measures again)" if result.cached else ""
    return (
        f"mixprec.tune, measured on this model, picks {result.precision!r}{origin}; 'auto' without a model answers"
        f" {auto!r} from the hardware alone. {result.reason}"
    )


def _train(runs: Sequence[Run], steps: int, auto: str | None) -> list[Result]:
    """Train every run: two steps each to measure it, then the rest in interleaved rounds.

    Each precision trains as many of ``steps`` as fit in its share of the budget; fp32 and auto's
    choice train the same number, the smaller of their two, so that their losses compare, and no
    other precision trains more.
    """
    share = BUDGET_SECONDS / max(1, len(runs))
    fits = {r.option.precision: max(MIN_STEPS, CALIBRATION_STEPS + int(share / r.calibrate())) for r in runs}
    paired = min(steps, fits.get(BASELINE, steps), fits.get(auto or BASELINE, steps))
    # No precision trains more steps than fp32 and auto's choice; a slow one fewer.
    totals = [paired if r.option.precision in (BASELINE, auto) else min(paired, fits[r.option.precision]) for r in runs]
    left = [total - CALIBRATION_STEPS for total in totals]
    schedule = [split(n, min(ROUNDS, n)) for n in left]
    progress = Progress(
        f"training {len(runs)} precisions in {describe_rounds(max(map(len, schedule), default=0))}",
        sum(r.estimate * n for r, n in zip(runs, left, strict=True)),
        sys.stderr,
    )
    interleave(runs, schedule, progress)
    progress.close()
    return results(runs, auto)


def _backends(records: Sequence[Record]) -> str:
    """The backends found, one line each, and the plugins that failed to load."""
    found: dict[str, list[Record]] = {}
    for r in records:
        if r.precision:
            found.setdefault(r.backend, []).append(r)
    rows = [
        (
            name,
            group[0].device_type if group[0].device_type != mixprec.ANY_DEVICE else "any",
            f"{group[0].distribution} {group[0].version}" if group[0].distribution else "(in-process)",
            ", ".join(r.precision for r in group),
        )
        for name, group in found.items()
    ]
    text = "Backends found:\n" + _indent(table(("BACKEND", "DEVICE", "DISTRIBUTION", "PRECISIONS"), rows))
    failed = [r for r in records if r.status == "failed" and not r.precision]
    if failed:
        text += "\nPlugins that failed to load (mixprec list shows why):" + "".join(f"\n  {r.plugin}" for r in failed)
    return text


def _results_table(rows: Sequence[Result], steps: int, unusable: Sequence[tuple[str, str]]) -> str:
    header = ("", "PRECISION", "BACKEND", "STATUS", "STEPS", "SKIPPED", "FINAL LOSS", "STEP TIME", "VS FP32")
    text = table(
        header,
        [
            (
                "->" if r.auto else "",
                r.precision,
                r.backend,
                r.status,
                str(r.steps),
                str(r.skipped_steps),
                f"{r.loss:.4g}",
                milliseconds(r.step_ms),
                speed(r),
            )
            for r in rows
        ],
        right=(4, 5, 6, 7, 8),
    )
    short = [r.precision for r in rows if r.steps < steps]
    if short:
        text += (
            f"\n{', '.join(short)}: too slow here to train {steps} steps in the demo's time budget;"
            " the loss is after the steps shown."
        )
    if unusable:
        text += "\nnot run here:" + "".join(f"\n  {p}: {why}" for p, why in unusable)
    return text


def _summary(rows: Sequence[Result]) -> str:
    """One sentence on what auto's choice is worth, from the measured rows."""
    chosen = next((r for r in rows if r.auto), None)
    baseline = next((r for r in rows if r.precision == BASELINE), None)
    if chosen is None or baseline is None:
        return ""
    return (
        f"\n-> marks auto's choice: {chosen.precision!r} trains at {speed(chosen)} the speed of fp32 here,"
        f" to a final loss of {chosen.loss:.4g} (fp32: {baseline.loss:.4g})."
    )


def _payload(
    device: Device,
    records: Sequence[Record],
    auto: Explanation,
    workload: Workload,
    rows: Sequence[Result],
    unusable: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    return {
        "device": str(device),
        "backends": [asdict(r) for r in records],
        "auto": asdict(auto),
        "workload": {"description": workload.description, **workload.settings},
        "results": [asdict(r) for r in rows],
        "not_run": [{"precision": p, "reason": why} for p, why in unusable],
    }


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())
