"""What every benchmark here shares: interleaved timing, the machine record, targets and JSON output.

Timing rules, for numbers that survive a busy machine:

- every variant of a comparison is timed in the same process, in interleaved rounds (the order
  rotates each round, so no variant always runs first or last);
- each timing runs a variant enough times to last ``min_time`` seconds, with the garbage collector
  off (as :mod:`timeit` does), after warm-up calls;
- a comparison is reported as the median over rounds of the per-round ratio, with the quartiles,
  so a slow round (another process woke up) moves both sides of the ratio at once;
- on the CPU with one torch thread, time is the thread's CPU time (``time.thread_time``): all the
  work runs on the calling thread, and time spent descheduled while other processes run is not
  counted. ``--clock wall`` measures wall time instead.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Comparison",
    "Report",
    "arguments",
    "clock",
    "compare",
    "machine",
    "quartiles",
]


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The command line every benchmark takes: ``[--quick] [--json OUT] [--threads N]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few rounds and small sizes, for a smoke run")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results to this file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier on a shared machine)"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default=None,
        help="cpu: this thread's CPU time (the default with one thread); wall: elapsed time",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.clock is None:
        args.clock = "cpu" if args.threads == 1 else "wall"
    return args


def clock(name: str) -> Callable[[], float]:
    """The timer for ``--clock``: "cpu" is the calling thread's CPU time, "wall" the elapsed time."""
    return time.thread_time if name == "cpu" else time.perf_counter


def machine(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model and features, versions, date, load."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    info.update(_cpu())
    versions: dict[str, str | None] = {}
    for dist in ("torch", "lightning", "pluggy", "mixprec", "mixprec-cpu", "mixprec-cuda"):
        versions[dist] = _version(dist)
    info["versions"] = versions
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = threads if threads is not None else torch.get_num_threads()
        info["torch_avx512_bf16"] = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
        info["torch_amx_tile"] = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name()
            info["cuda_capability"] = list(torch.cuda.get_device_capability())
            info["cuda_version"] = torch.version.cuda
    return info


def _cpu() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16", "avx512_fp16")
    return {"cpu_model": model, "cpu_flags": {f: f in flags for f in wanted}}


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values``."""
    if len(values) == 1:
        return (values[0], values[0], values[0])
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q2, q3)


@dataclass
class Comparison:
    """Per-call times (seconds) of several variants, one value per interleaved round."""

    times: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, name: str, reference: str) -> tuple[float, float, float]:
        """Quartiles over rounds of time(name) / time(reference) within the same round."""
        return quartiles([a / b for a, b in zip(self.times[name], self.times[reference], strict=True)])

    def difference(self, name: str, reference: str) -> float:
        """Median over rounds of time(name) - time(reference) within the same round."""
        return statistics.median(a - b for a, b in zip(self.times[name], self.times[reference], strict=True))

    def min_ratio(self, name: str, reference: str) -> float:
        """Fastest round of ``name`` over fastest round of ``reference``: a second, noise-resistant estimate."""
        return min(self.times[name]) / min(self.times[reference])


def _calls_for(fn: Callable[[], object], min_time: float, timer: Callable[[], float]) -> int:
    """How many calls of ``fn`` last at least ``min_time`` seconds."""
    calls = 1
    while True:
        start = timer()
        for _ in range(calls):
            fn()
        elapsed = timer() - start
        if elapsed >= min_time:
            return calls
        calls = max(calls * 2, int(calls * min_time / max(elapsed, 1e-9) * 1.2))


def compare(
    variants: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    min_time: float,
    warmup: int = 3,
    sync: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> Comparison:
    """Time each variant in ``rounds`` interleaved rounds; each timing lasts about ``min_time`` seconds.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock reading; ``timer`` reads the clock.
    """
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    if sync is not None:
        sync()
    calls = {name: _calls_for(variants[name], min_time, timer) for name in names}
    gc.collect()
    gc.freeze()  # what exists now is never collected, so each gc.collect() below scans only new objects
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            fn = variants[name]
            n = calls[name]
            gc.collect()
            gc.disable()
            try:
                if sync is not None:
                    sync()
                start = timer()
                for _ in range(n):
                    fn()
                if sync is not None:
                    sync()
                elapsed = timer() - start
            finally:
                gc.enable()
            times[name].append(elapsed / n)
    return Comparison(times)


@dataclass
class Report:
    """A benchmark's results, with the machine, the settings and each target checked."""

    benchmark: str
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def result(self, **row: Any) -> None:
        """Record one measured figure (a flat dict: names and numbers)."""
        self.results.append(row)
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    def target(self, name: str, value: float, *, at_most: float, unit: str = "") -> bool:
        """Record whether ``value`` meets the target ``value <= at_most``; return whether it does."""
        met = value <= at_most
        self.targets.append({"name": name, "value": value, "at_most": at_most, "unit": unit, "met": met})
        mark = "met" if met else "MISSED"
        print(f"TARGET {name}: {_fmt(value)}{unit} (target <= {_fmt(at_most)}{unit}) {mark}", flush=True)
        return met

    def write(self, path: Path | None, threads: int | None = None) -> None:
        """Write the report as JSON to ``path`` (nothing when ``path`` is None)."""
        if path is None:
            return
        data = {
            "benchmark": self.benchmark,
            "machine": machine(threads),
            "settings": self.settings,
            "results": self.results,
            "targets": self.targets,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}", flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
