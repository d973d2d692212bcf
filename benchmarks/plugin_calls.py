"""The precision object's own calls, one at a time: mixprec's vs Lightning's ``MixedPrecision``.

Usage: ``python benchmarks/plugin_calls.py [--quick] [--json OUT] [--threads N]``

Per precision ("bf16-mixed", "16-mixed"), interleaved rounds of:

- ``convert_input`` of a nested batch of 64 small tensors (dicts, lists, tuples, namedtuples; 40
  floating, 24 integer or bool) and of Fabric's ``((x,), {})`` argument pack; the *floor* is the
  bare ``tensor.to(dtype)`` and ``is_floating_point()`` calls the conversion cannot avoid;
- ``convert_output`` of one tensor;
- ``forward_context()`` entered and exited, next to a bare ``torch.autocast``;
- ``backward`` of a tiny graph and ``optimizer_step`` of a tiny SGD optimizer, next to the same
  calls by hand (``GradScaler`` for fp16).

Targets: never slower than Lightning (ratio <= 1.05, the noise band: the methods mixprec inherits
from Lightning are the very same code, which the report records), and for ``convert_input`` of the
nested batch, at most half of the work Lightning's general ``apply_to_collection`` does beyond the
casts (time minus the floor); the total, floor included, is reported too.
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import harness
import torch
from lightning.fabric.plugins.precision import MixedPrecision
from models import MIXED_DTYPES

import mixprec

Pair = namedtuple("Pair", ["features", "label"])
NOISE = 1.05
SPEEDUP = 0.5


def nested_batch() -> dict[str, Any]:
    """A batch as a data loader might yield it: 64 tensors (40 floating) in nested containers."""
    torch.manual_seed(0)

    def floats() -> torch.Tensor:
        return torch.randn(16)

    def ints() -> torch.Tensor:
        return torch.randint(0, 10, (16,))

    return {
        "inputs": [floats() for _ in range(16)],
        "labels": [ints() for _ in range(8)],
        "pairs": [Pair(floats(), ints()) for _ in range(8)],
        "meta": {
            "mask": tuple(torch.ones(16, dtype=torch.bool) for _ in range(8)),
            "weights": tuple(floats() for _ in range(8)),
        },
        "crops": [[floats(), floats()] for _ in range(4)],
        "name": "batch-0",
        "step": 3,
    }


def tensors(data: Any) -> list[torch.Tensor]:
    """Every tensor in ``data``, depth first."""
    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, dict):
        return [t for value in data.values() for t in tensors(value)]
    if isinstance(data, (list, tuple)):
        return [t for item in data for t in tensors(item)]
    return []


def objects(precision: str) -> dict[str, Any]:
    """mixprec's object and Lightning's, for ``precision`` on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixprec.PrecisionWarning)  # fp16 is "slow" here; measured anyway
        ours = mixprec.get_precision(precision, "cpu")
    return {"plugin": ours, "lightning": MixedPrecision(precision, "cpu")}  # type: ignore[arg-type]


def convert_variants(precision: str, batch: Any) -> dict[str, Callable[[], object]]:
    """convert_input of ``batch`` by each object, and the floor: the unavoidable tensor calls."""
    dtype = MIXED_DTYPES[precision]
    found = tensors(batch)
    floating = [t for t in found if t.is_floating_point()]

    def floor() -> object:
        checks = [t.is_floating_point() for t in found]
        return checks, [t.to(dtype) for t in floating]

    variants: dict[str, Callable[[], object]] = {"floor": floor}
    for name, obj in objects(precision).items():
        variants[name] = bound(obj.convert_input, batch)
    return variants


def bound(method: Callable[[Any], object], argument: Any) -> Callable[[], object]:
    """``method`` with its one argument bound."""
    return lambda: method(argument)


def output_variants(precision: str) -> dict[str, Callable[[], object]]:
    out = torch.randn(64, 64, dtype=MIXED_DTYPES[precision])
    return {name: bound(obj.convert_output, out) for name, obj in objects(precision).items()}


def context_variants(precision: str) -> dict[str, Callable[[], object]]:
    dtype = MIXED_DTYPES[precision]

    def enter_exit(make: Callable[[], Any]) -> Callable[[], object]:
        def run() -> None:
            with make():
                pass

        return run

    variants = {name: enter_exit(obj.forward_context) for name, obj in objects(precision).items()}
    variants["hand"] = enter_exit(lambda: torch.autocast("cpu", dtype=dtype))
    return variants


def backward_variants(precision: str) -> dict[str, Callable[[], object]]:
    """Forward and backward of a tiny graph: the difference between variants is the call overhead."""
    variants: dict[str, Callable[[], object]] = {}
    for name, obj in objects(precision).items():
        weight = torch.randn(8, requires_grad=True)

        def run(obj: Any = obj, weight: torch.Tensor = weight) -> None:
            obj.backward((weight * 2.0).sum(), None)
            weight.grad = None

        variants[name] = run
    weight = torch.randn(8, requires_grad=True)
    scaler = torch.amp.GradScaler("cpu") if precision == "16-mixed" else None

    def hand() -> None:
        loss = (weight * 2.0).sum()
        (loss if scaler is None else scaler.scale(loss)).backward()  # type: ignore[no-untyped-call]
        weight.grad = None

    variants["hand"] = hand
    return variants


def step_variants(precision: str) -> dict[str, Callable[[], object]]:
    """optimizer_step of SGD over one small parameter whose gradient is reset before each step."""

    def optimizer() -> tuple[torch.optim.SGD, torch.Tensor]:
        weight = torch.nn.Parameter(torch.randn(8))
        weight.grad = torch.zeros(8)
        return torch.optim.SGD([weight], lr=1e-3), weight.grad

    def started(scaler: torch.amp.GradScaler | None) -> None:
        if scaler is not None:
            scaler.scale(torch.ones(()))  # a scaler steps only after it has scaled a loss once

    variants: dict[str, Callable[[], object]] = {}
    for name, obj in objects(precision).items():
        opt, grad = optimizer()
        started(obj.scaler)

        def run(obj: Any = obj, opt: torch.optim.SGD = opt, grad: torch.Tensor = grad) -> None:
            grad.fill_(1e-3)
            obj.optimizer_step(opt)

        variants[name] = run
    opt, grad = optimizer()
    scaler = torch.amp.GradScaler("cpu") if precision == "16-mixed" else None
    started(scaler)

    def hand() -> None:
        grad.fill_(1e-3)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()

    variants["hand"] = hand
    return variants


def inherited() -> dict[str, bool]:
    """Which of mixprec's methods are Lightning's own code, unchanged."""
    ours = type(objects("bf16-mixed")["plugin"])
    names = ("convert_input", "convert_output", "forward_context", "backward", "optimizer_step")
    return {name: getattr(ours, name) is getattr(MixedPrecision, name) for name in names}


def main() -> None:
    args = harness.arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    rounds, min_time = (11, 0.002) if args.quick else (101, 0.002)
    same = inherited()
    settings = {"rounds": rounds, "min_time_s": min_time, "threads": args.threads, "clock": args.clock}
    report = harness.Report("plugin_calls", {**settings, "inherited": same})
    print(f"methods inherited unchanged from Lightning's MixedPrecision: {same}")
    for precision in ("bf16-mixed", "16-mixed"):
        x = torch.randn(64, 256)
        cases = {
            "convert_input nested 64": convert_variants(precision, nested_batch()),
            "convert_input ((x,), {})": convert_variants(precision, ((x,), {})),
            "convert_output tensor": output_variants(precision),
            "forward_context": context_variants(precision),
            "backward": backward_variants(precision),
            "optimizer_step": step_variants(precision),
        }
        for call, variants in cases.items():
            result = harness.compare(variants, rounds=rounds, min_time=min_time, timer=harness.clock(args.clock))
            row: dict[str, Any] = {"precision": precision, "call": call}
            for name in variants:
                row[f"{name}_us"] = result.median(name) * 1e6
            ratio = result.ratio("plugin", "lightning")[1]
            row["plugin_over_lightning"] = ratio
            row["plugin_over_lightning_of_mins"] = result.min_ratio("plugin", "lightning")
            overhead = None
            if "floor" in variants:
                ours, theirs = result.difference("plugin", "floor"), result.difference("lightning", "floor")
                row["plugin_overhead_us"], row["lightning_overhead_us"] = ours * 1e6, theirs * 1e6
                overhead = ours / theirs
                row["overhead_ratio"] = overhead
            report.result(**row)
            report.target(f"{precision} {call}: plugin / lightning", ratio, at_most=NOISE)
            if call == "convert_input nested 64" and overhead is not None:
                report.target(
                    f"{precision} {call}: plugin / lightning work beyond the casts", overhead, at_most=SPEEDUP
                )
    report.write(args.json, args.threads)


if __name__ == "__main__":
    main()
