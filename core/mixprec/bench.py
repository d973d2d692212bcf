"""``mixprec bench``: the time of one training step in every usable precision on a device, side by side.

It times a training step of a standard small transformer block, through Lightning Fabric and the
precision object :func:`mixprec.get_precision` returns, for each precision some backend can run on
the device. The precisions take turns (interleaved rounds), so a machine that gets busier or
quieter during the run affects them all alike, and each precision's step time is the median over
the rounds. This is what a user runs to see what "auto" is worth on their machine.

The measuring here is shared with ``mixprec demo``: :func:`resolve_device`, :func:`options`,
:class:`Run`, :func:`interleave`, :class:`Result`, :class:`Progress` and :func:`table`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

import mixprec
from mixprec import Device, PrecisionError, PrecisionWarning
from mixprec._tune_measure import clock_for

if TYPE_CHECKING:
    from lightning.fabric import Fabric
    from lightning.fabric.plugins.precision import Precision

__all__ = [
    "BASELINE",
    "MAX_ELEMENTS",
    "NOISY_SPREAD",
    "SEED",
    "BenchSettings",
    "Option",
    "Progress",
    "Result",
    "Run",
    "ROUND_SECONDS",
    "Workload",
    "describe_rounds",
    "heads_for",
    "interleave",
    "largest_tensor",
    "milliseconds",
    "noise_note",
    "options",
    "plot",
    "resolve_device",
    "results",
    "run",
    "speed",
    "split",
    "table",
    "transformer_block",
]

#: The precision every speed is compared with.
BASELINE = "32-true"
#: Seed of every model's initial weights and of the synthetic data, so every precision starts alike.
SEED = 0
#: Seconds each precision trains per round in ``mixprec bench``; a step that takes longer runs once per round.
ROUND_SECONDS = 0.25
#: Above this ratio of a precision's slowest round to its fastest, the results say the machine was busy.
NOISY_SPREAD = 1.5


# --- what to run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A precision that can run on the device: the backend mixprec selects for it, and that backend's status."""

    precision: str
    backend: str
    status: str
    reason: str


def resolve_device(device: str | None) -> Device:
    """The device a command runs on: ``device`` as given, or for None the best device present (as "auto").

    Raises:
        PrecisionError: the device is malformed, of a type no backend serves, or not present here
            (mixprec's resolver decides, exactly as for ``get_precision``), so that a command fails
            before it trains anything.
    """
    explanation = mixprec.explain("auto", device)
    if explanation.error is not None:
        where = f"--device {device}" if device is not None else f"the best device present ({explanation.device})"
        raise PrecisionError(
            f"{where}: {explanation.error} Pass --device with a device this machine has (mixprec list shows them)."
        )
    return Device.parse(explanation.device)


def options(device: Device) -> tuple[list[Option], list[tuple[str, str]]]:
    """Every precision a backend offers on ``device``: those that can run here, and those that cannot with why.

    Each precision is resolved exactly as ``get_precision`` would resolve it (priorities,
    ``MIXPREC_BACKEND``), so what runs is what a user of that precision gets.
    """
    precisions = dict.fromkeys(r.precision for r in mixprec.available(str(device)) if r.precision)
    usable: list[Option] = []
    unusable: list[tuple[str, str]] = []
    for precision in precisions:
        explanation = mixprec.explain(precision, str(device))
        chosen = next((c for c in explanation.candidates if c.chosen), None)
        if chosen is None:
            unusable.append((precision, explanation.error or "no backend can run it here"))
        else:
            usable.append(Option(precision, chosen.backend, chosen.status, chosen.reason))
    return usable, unusable


@dataclass(frozen=True)
class Workload:
    """A model and the synthetic data it trains on, built alike for every precision.

    ``model`` is called after the seed is set, so every precision starts from the same weights;
    ``batch`` makes the inputs and the regression targets on the device.
    """

    description: str
    model: Callable[[], torch.nn.Module]
    batch: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    learning_rate: float
    settings: dict[str, int] = field(default_factory=dict)


def transformer_block(dim: int, seq: int, batch: int) -> Workload:
    """A pre-norm transformer encoder block (a 4x feed-forward, GELU), trained to a random target.

    It has :func:`heads_for` ``dim`` heads: about ``dim``/64, and always a divisor of ``dim``, so every width works.
    """
    heads = heads_for(dim)

    def model() -> torch.nn.Module:
        return torch.nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )

    def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(SEED)
        inputs = torch.randn(batch, seq, dim, generator=generator)
        targets = torch.randn(batch, seq, dim, generator=generator)
        return inputs.to(device), targets.to(device)

    return Workload(
        f"a transformer block (dim {dim}, {heads} head{'' if heads == 1 else 's'}, sequence {seq}, batch {batch})",
        model,
        data,
        learning_rate=1e-3,
        settings={"dim": dim, "heads": heads, "seq": seq, "batch": batch},
    )


def heads_for(dim: int) -> int:
    """The number of attention heads of a block of width ``dim``: the largest divisor of ``dim`` up to ``dim // 64``."""
    return next(h for h in range(max(1, dim // 64), 0, -1) if dim % h == 0)


def largest_tensor(dim: int, seq: int, batch: int) -> int:
    """At least the element count of the largest tensor one training step of :func:`transformer_block` makes."""
    return max(4 * dim * dim, 4 * batch * seq * dim, batch * max(1, dim // 64) * seq * seq)


# --- running and timing ---------------------------------------------------------------------------


class Run:
    """One precision training a workload through Fabric: its steps, its loss and its timings."""

    def __init__(self, option: Option, workload: Workload, device: Device) -> None:
        self.option = option
        with warnings.catch_warnings():
            # A "slow" precision is shown as such in the results; the warning would only repeat it.
            warnings.simplefilter("ignore", PrecisionWarning)
            precision = mixprec.get_precision(option.precision, str(device), backend=option.backend)
        self.precision = precision
        self.fabric = _fabric(device, precision)
        torch.manual_seed(SEED)
        # The optimizer is built after the model moved: on some devices moving replaces the parameters.
        self.model = self.fabric.setup_module(workload.model())
        optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.learning_rate, momentum=0.9)
        self.optimizer: Any = self.fabric.setup_optimizers(optimizer)
        self.inputs, self.targets = workload.batch(self.fabric.device)
        self.steps = 0
        self.loss = float("nan")
        #: seconds per step from :meth:`calibrate`, to plan the rounds with
        self.estimate = 0.0
        #: seconds per step in each round this run trained in, by round number
        self.rounds: dict[int, float] = {}
        #: what the steps are timed with: thread CPU time on the CPU with one torch thread, else wall time
        self.clock = clock_for(self.fabric.device)

    def timed(self, steps: int) -> float:
        """Train ``steps`` steps; the seconds per step by :attr:`clock`, to the end of the last step's work."""
        start = self.clock.read()
        loss = torch.zeros(())
        for _ in range(steps):
            output = self.model(self.inputs)
            loss = torch.nn.functional.mse_loss(output, self.targets)
            self.fabric.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        # .item() waits for the device to finish, so an asynchronous device is timed honestly.
        self.loss = loss.item()
        elapsed = (self.clock.read() - start) / steps
        self.steps += steps
        return elapsed

    def calibrate(self) -> float:
        """Train two steps; the second's time is the estimate of a step (the first pays one-time costs)."""
        self.timed(1)
        self.estimate = self.timed(1)
        return self.estimate


def _fabric(device: Device, precision: Precision) -> Fabric:
    from lightning.fabric import Fabric

    from mixprec._fabric import one_device_strategy

    # For the CPU, Lightning's ``devices`` counts processes, and the one CPU device has no index to pick.
    devices: list[int] | int = 1 if device.index is None or device.type == "cpu" else [device.index]
    strategy = one_device_strategy(device.type, device.index) or "auto"
    try:
        return Fabric(accelerator=device.type, devices=devices, strategy=strategy, plugins=[precision])
    except (RuntimeError, TypeError, ValueError, ImportError) as exc:
        raise PrecisionError(
            f"Lightning Fabric cannot train on {device} here ({exc}). Pass --device with a device this machine has,"
            " such as --device cpu."
        ) from None


def interleave(runs: Sequence[Run], schedule: Sequence[Sequence[int]], progress: Progress | None = None) -> None:
    """Train ``runs`` in turns: in round ``r`` run ``i`` trains ``schedule[i][r]`` steps and records their time.

    The progress bar advances by each run's estimated seconds per step, so it moves evenly in time.
    """
    for round_index in range(max((len(counts) for counts in schedule), default=0)):
        for run, counts in zip(runs, schedule, strict=True):
            steps = counts[round_index] if round_index < len(counts) else 0
            if steps:
                run.rounds[round_index] = run.timed(steps)
                if progress is not None:
                    progress.advance(steps * run.estimate)


def describe_rounds(count: int) -> str:
    """``"5 interleaved rounds"``, for progress labels."""
    return f"{count} interleaved round{'' if count == 1 else 's'}"


def split(steps: int, rounds: int) -> list[int]:
    """``steps`` spread as evenly as possible over ``rounds`` rounds."""
    return [steps * (i + 1) // rounds - steps * i // rounds for i in range(rounds)]


@dataclass(frozen=True)
class Result:
    """One precision's measured outcome.

    ``step_ms`` is the median over the rounds of the time per step, ``round_ms`` each round's; ``speedup``
    is the median over the rounds of fp32's step time divided by this precision's in the same round.
    """

    precision: str
    backend: str
    status: str
    reason: str
    steps: int
    step_ms: float
    round_ms: tuple[float, ...]
    loss: float
    speedup: float | None
    auto: bool
    #: Steps the GradScaler skipped for inf/NaN gradients (``precision.telemetry``); 0 without a scaler.
    skipped_steps: int = 0


def results(runs: Sequence[Run], auto: str | None) -> list[Result]:
    """The runs' results, fastest relative to fp32 first; only the rounds count, not calibration."""
    baseline = next((run for run in runs if run.option.precision == BASELINE), None)
    rows = [
        Result(
            run.option.precision,
            run.option.backend,
            run.option.status,
            run.option.reason,
            run.steps,
            statistics.median(run.rounds.values()) * 1e3,
            tuple(run.rounds[r] * 1e3 for r in sorted(run.rounds)),
            run.loss,
            None if baseline is None else _speedup(baseline, run),
            run.option.precision == auto,
            _skipped(run),
        )
        for run in runs
    ]
    return sorted(rows, key=lambda r: (-(r.speedup or 0.0), r.step_ms))


def _skipped(run: Run) -> int:
    """The steps the run's GradScaler skipped, as its precision object's telemetry counts them."""
    telemetry = getattr(run.precision, "telemetry", None)
    return 0 if telemetry is None else int(telemetry.skipped_steps)


def _speedup(baseline: Run, run: Run) -> float:
    """The median over the rounds both trained in of the baseline's step time over ``run``'s in that round."""
    shared = sorted(baseline.rounds.keys() & run.rounds.keys())
    return statistics.median(baseline.rounds[r] / run.rounds[r] for r in shared)


# --- showing --------------------------------------------------------------------------------------


class Progress:
    """A text progress bar that only ever appends, so it reads the same on a terminal and in a log file."""

    def __init__(self, label: str, total: float, stream: TextIO, width: int = 40) -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self.done = 0.0
        self.drawn = 0
        self.start = time.perf_counter()
        stream.write(f"{label} [")
        stream.flush()

    def advance(self, amount: float) -> None:
        self.done += amount
        filled = self.width if self.total <= 0 else min(self.width, int(self.width * self.done / self.total))
        self._draw(filled)

    def close(self) -> None:
        self._draw(self.width)
        self.stream.write(f"] {time.perf_counter() - self.start:.1f} s\n")
        self.stream.flush()

    def _draw(self, filled: int) -> None:
        if filled > self.drawn:
            self.stream.write("#" * (filled - self.drawn))
            self.stream.flush()
            self.drawn = filled


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Rows as aligned columns; the columns whose index is in ``right`` are right-aligned (numbers)."""
    cells = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def speed(result: Result) -> str:
    """The speed relative to fp32 as ``2.41x``, or ``-`` when fp32 did not run."""
    return "-" if result.speedup is None else f"{result.speedup:.2f}x"


def noise_note(rows: Sequence[Result]) -> str:
    """A warning when a precision's slowest round took over :data:`NOISY_SPREAD` times its fastest, else ``""``."""
    spread = max((max(r.round_ms) / min(r.round_ms) for r in rows if r.round_ms), default=1.0)
    if spread <= NOISY_SPREAD:
        return ""
    return (
        f"Step times varied up to {spread:.1f}x between rounds: the machine was busy, so these medians are"
        " less certain than they look; run again on a quiet machine to compare closely."
    )


def milliseconds(value: float) -> str:
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


# --- the bench command ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """What ``mixprec bench`` measures, from its command line; ``as_json`` prints JSON instead of the table."""

    device: str | None
    rounds: int
    dim: int
    seq: int
    batch: int
    as_json: bool = False
    plot_file: Path | None = None


#: The most elements the block's largest tensor may hold: far beyond any device's memory, within torch's sizes.
MAX_ELEMENTS = 2**37


def run(settings: BenchSettings) -> int:
    """Run the benchmark and print the table, or JSON with ``settings.as_json``; draw the plot it asks for.

    Everything that can be checked is checked before the first step: the sizes, matplotlib for the
    plot, and the device, through mixprec's resolver.
    """
    _check_settings(settings)
    if settings.plot_file is not None:
        _require_matplotlib()
    device = resolve_device(settings.device)
    usable, unusable = options(device)
    workload = transformer_block(settings.dim, settings.seq, settings.batch)
    auto = mixprec.explain("auto", str(device))
    if not settings.as_json:
        print(f"mixprec bench: one training step of {workload.description} on {device}")
    with _memory_is_an_error(device, settings):
        runs = [Run(option, workload, device) for option in usable]
        per_round = [max(1, min(50, round(ROUND_SECONDS / r.calibrate()))) for r in runs]
        progress = Progress(
            f"timing {len(runs)} precisions in {describe_rounds(settings.rounds)}",
            sum(r.estimate * n * settings.rounds for r, n in zip(runs, per_round, strict=True)),
            sys.stderr,
        )
        interleave(runs, [[n] * settings.rounds for n in per_round], progress)
        progress.close()
    rows = results(runs, auto.precision)
    if settings.as_json:
        print(json.dumps(_payload(settings, device, workload, rows, unusable, auto.precision), indent=2))
    else:
        print(_bench_table(rows, unusable))
        print(_verdict(rows))
        if noise_note(rows):
            print(noise_note(rows))
    if settings.plot_file is not None:
        plot(rows, f"{workload.description}, {device}", settings.plot_file)
        print(f"wrote {settings.plot_file}", file=sys.stderr)
    return 0


def _check_settings(settings: BenchSettings) -> None:
    for name in ("rounds", "dim", "seq", "batch"):
        if getattr(settings, name) < 1:
            raise PrecisionError(f"--{name} must be at least 1, not {getattr(settings, name)}.")
    if largest_tensor(settings.dim, settings.seq, settings.batch) > MAX_ELEMENTS:
        raise PrecisionError(
            f"--dim {settings.dim} --seq {settings.seq} --batch {settings.batch}: the block's largest tensor would"
            f" hold over {MAX_ELEMENTS:,} elements, beyond any device's memory; use smaller sizes."
        )


@contextlib.contextmanager
def _memory_is_an_error(device: Device, settings: BenchSettings) -> Iterator[None]:
    """Turn the device running out of memory into a :class:`PrecisionError` that names the sizes to reduce."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        # A CUDA-like device raises OutOfMemoryError; torch's CPU allocator a plain RuntimeError saying so.
        if not isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) and "can't allocate memory" not in str(exc):
            raise
        raise PrecisionError(
            f"The block (--dim {settings.dim} --seq {settings.seq} --batch {settings.batch}) does not fit in the"
            f" memory of {device}: use smaller sizes."
        ) from None


def _bench_table(rows: Sequence[Result], unusable: Sequence[tuple[str, str]]) -> str:
    header = ("", "PRECISION", "BACKEND", "STATUS", "STEP TIME", "FASTEST ROUND", "VS FP32")
    lines = table(
        header,
        [
            (
                "->" if r.auto else "",
                r.precision,
                r.backend,
                r.status,
                milliseconds(r.step_ms),
                milliseconds(min(r.round_ms)),
                speed(r),
            )
            for r in rows
        ],
        right=(4, 5, 6),
    )
    if unusable:
        lines += "\nnot run here:" + "".join(f"\n  {p}: {why}" for p, why in unusable)
    return lines


def _verdict(rows: Sequence[Result]) -> str:
    """What "auto" is worth here, in measured numbers."""
    fastest = rows[0]
    chosen = next((r for r in rows if r.auto), None)
    if chosen is None:
        return "auto picks no precision on this device."
    line = f"auto picks {chosen.precision!r}: {speed(chosen)} the speed of fp32 here"
    if chosen is fastest:
        return line + ", the fastest precision measured."
    return line + f"; the fastest measured is {fastest.precision!r} at {speed(fastest)} ({fastest.status})."


def _payload(
    settings: BenchSettings,
    device: Device,
    workload: Workload,
    rows: Sequence[Result],
    unusable: Sequence[tuple[str, str]],
    auto: str | None,
) -> dict[str, Any]:
    import lightning

    return {
        "device": str(device),
        "auto": auto,
        "workload": {"description": workload.description, **workload.settings},
        "rounds": settings.rounds,
        "results": [asdict(r) for r in rows],
        "not_run": [{"precision": p, "reason": why} for p, why in unusable],
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mixprec": mixprec.__version__,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
    }


# --- the plot -------------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PrecisionError(
            "--plot needs matplotlib, which is not installed: pip install 'mixprec[plot]'"
            " (or run without --plot; --json -o FILE writes the numbers)."
        ) from None


def plot(rows: Sequence[Result], subtitle: str, path: Path) -> None:
    """A PNG bar chart of each precision's speed relative to fp32; auto's choice highlighted, slow ones grey."""
    from matplotlib.figure import Figure

    shown = [r for r in reversed(rows) if r.speedup is not None]
    figure = Figure(figsize=(7, 0.5 * len(shown) + 1.6), layout="constrained")
    axes = figure.subplots()
    colours = ["tab:orange" if r.auto else "tab:grey" if r.status == "slow" else "tab:blue" for r in shown]
    speeds = [r.speedup or 0.0 for r in shown]
    bars = axes.barh([f"{r.precision}\n({r.backend})" for r in shown], speeds, color=colours)
    axes.bar_label(
        bars, padding=4, labels=[f"{s:.2f}x  ({milliseconds(r.step_ms)})" for s, r in zip(speeds, shown, strict=True)]
    )
    axes.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.set_xlim(0, max(speeds, default=1.0) * 1.35)
    axes.set_xlabel("training steps per second, relative to fp32 (32-true); higher is faster")
    axes.set_title(f"mixprec bench: orange is auto's choice, grey is slow here\n{subtitle}", fontsize=10)
    try:
        figure.savefig(path, dpi=120)
    except OSError as exc:
        raise PrecisionError(f"Cannot write the plot to {path}: {exc.strerror or exc}.") from None
