"""``tune``: the fastest safe precision for the caller's own model, measured on the device.

"auto" answers from the hardware alone; whether mixed precision pays also depends on the model
(small layers spend their time casting, not multiplying). ``tune`` trains copies of the caller's
model on the caller's example batch in each candidate precision that some backend can run on the
device, in interleaved rounds, and takes the fastest whose loss stayed finite and close to fp32's.

How it measures (see :mod:`mixprec._tune_measure` for the clocks and the memory):

1. each candidate, fp32 first, gets its own copy of the model and a rebuilt optimizer, and trains
   two warm-up steps: the first pays the one-time costs and is where its memory is measured, the
   second estimates a step; a candidate whose warm-up would not fit in what is left of the budget
   is not measured, and the result says so;
2. from those estimates the remaining budget is shared out: each precision trains at most
   ``steps`` steps, and fewer where more would not fit (the result says what was cut);
3. the precisions then take turns over up to :data:`ROUNDS` rounds, the order rotating each
   round; a step time is the median over the rounds, a speed the median over the rounds of fp32's
   step time divided by the precision's in the same round.

Every precision starts from the caller's weights and random state and trains on the same batch,
so their losses compare step by step: the drift is the largest relative difference from fp32's
loss over the steps both trained. The result is cached on disk (:mod:`mixprec._tune_cache`).
Under an initialised ``torch.distributed`` process group, rank 0 measures (or reads its cache)
and every rank receives its decision, so all ranks train in the same precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import math
import numbers
import os
import random
import statistics
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

import mixprec
from mixprec._auto import AUTO_ORDER
from mixprec._backend import Device
from mixprec._errors import PrecisionError, PrecisionWarning, shown
from mixprec._inputs import check_target
from mixprec._tune_cache import cache_key, key_material, read, refresh, write
from mixprec._tune_defaults import (
    BASELINE,
    DEFAULT_BUDGET_S,
    DEFAULT_MAX_DRIFT,
    DEFAULT_STEPS,
    MIN_GAIN,
    ROUNDS,
    WARM_UP_STEPS,
)
from mixprec._tune_measure import Clock, MemoryMeter, Trial, clock_for, default_loss, drift, finite, rng_state

if TYPE_CHECKING:
    from lightning.fabric.plugins.precision import Precision
    from lightning.pytorch.plugins.precision import Precision as TrainerPrecision

__all__ = [
    "BASELINE",
    "DEFAULT_BUDGET_S",
    "DEFAULT_MAX_DRIFT",
    "DEFAULT_STEPS",
    "MIN_GAIN",
    "ROUNDS",
    "Measurement",
    "TuneResult",
    "tune",
]

#: What tune measures when the caller names no candidates: what "auto" chooses from.
DEFAULT_CANDIDATES = AUTO_ORDER

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Measurement:
    """One precision's numbers on the caller's model.

    ``step_ms`` is the median over the rounds of the time per step (by the result's ``clock``);
    ``speedup`` the median over the rounds of fp32's step time over this one's in the same round
    (above 1: faster than fp32); ``peak_memory`` the bytes the model's copy, its optimizer and its first
    training step took on the device
    (by the result's ``memory_method``; None where not measured); ``drift`` the largest relative
    difference of the loss from fp32's over the steps both trained. ``safe``: finite and within the
    drift bound. ``note`` says why it is not safe, or what the budget cut.
    """

    precision: str
    backend: str
    status: str
    steps: int
    step_ms: float
    round_ms: tuple[float, ...]
    speedup: float
    peak_memory: int | None
    finite: bool
    drift: float | None
    final_loss: float
    safe: bool
    note: str = ""


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` measured and chose; :meth:`precision_object` builds the chosen precision.

    ``measurements`` are fastest first; ``not_measured`` holds each candidate that did not run and
    why; ``cut`` what the budget cut; ``seconds`` what tuning cost (wall time, 0 when ``cached``).
    """

    precision: str
    backend: str
    reason: str
    device: str
    target: str
    strategy: str | None
    measurements: tuple[Measurement, ...]
    not_measured: tuple[tuple[str, str], ...]
    cut: tuple[str, ...]
    clock: str
    memory_method: str
    budget_s: float
    steps: int
    max_drift: float
    seconds: float
    key: str
    cached: bool = False

    def precision_object(self, **options: Any) -> Precision | TrainerPrecision:
        """A new precision object of the chosen precision, for the result's device, target and strategy.

        ``options`` are the backend settings :func:`mixprec.get_precision` takes (``init_scale``, ...).
        The warning for a precision the backend calls slow is left out: it was measured faster here.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".* is slow here", category=PrecisionWarning)
            return mixprec.get_precision(
                self.precision,
                self.device,
                backend=self.backend,
                target=self.target,
                strategy=self.strategy,
                **options,
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneResult:
        """The result ``to_dict()`` gave (e.g. read back from JSON); a KeyError, TypeError or ValueError if it is
        not one (a field missing or of another kind, or a choice that is none of its measurements)."""
        fields = dict(data)
        fields["measurements"] = tuple(
            Measurement(**{**m, "round_ms": tuple(m["round_ms"])}) for m in fields["measurements"]
        )
        fields["not_measured"] = tuple((str(p), str(why)) for p, why in fields["not_measured"])
        fields["cut"] = tuple(fields["cut"])
        result = cls(**fields)
        chosen = [(m.precision, m.backend) for m in result.measurements]
        if (result.precision, result.backend) not in chosen or not all(isinstance(n, str) for m in chosen for n in m):
            raise ValueError(
                f"the choice {result.precision!r} ({result.backend!r}) is not one of the measurements {chosen}"
            )
        return result

    def table(self) -> str:
        """The measurements as an aligned text table, the chosen precision marked ``->``."""
        from mixprec.bench import milliseconds, table

        rows = [
            (
                "->" if m.precision == self.precision else "",
                m.precision,
                m.backend,
                m.status,
                str(m.steps),
                milliseconds(m.step_ms),
                f"{m.speedup:.2f}x",
                _megabytes(m.peak_memory),
                "yes" if m.finite else "NO",
                "-" if m.drift is None else f"{m.drift:.2%}",
                "yes" if m.safe else "no",
            )
            for m in self.measurements
        ]
        header = ("", "PRECISION", "BACKEND", "STATUS", "STEPS", "STEP TIME", "VS FP32", "PEAK MEMORY", "FINITE")
        return table((*header, "DRIFT", "SAFE"), rows, right=(4, 5, 6, 7, 9))


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


# --- the arguments --------------------------------------------------------------------------------


def _checked_number(name: str, value: object, low: float, integer: bool = False) -> float:
    # numbers' ABCs, so that NumPy's scalars (numpy.int64 from a config array) count as the numbers they are.
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number) or number < low or (low == 0.0 and number == 0.0):
        quoted = shown(int(value)) if isinstance(value, numbers.Integral) else repr(number)
        raise PrecisionError(
            f"{name}={quoted} is out of range: it must be a finite number {'above' if low == 0.0 else 'of at least'}"
            f" {low:g}."
        )
    return number


def _candidates(candidates: Iterable[str | int] | None) -> list[str]:
    """The canonical candidate names, fp32 first; an error for an unknown name, "auto" or an empty list."""
    if candidates is None:
        names: list[str] = list(DEFAULT_CANDIDATES)
    else:
        if isinstance(candidates, (str, int)):
            raise TypeError("candidates must be a list of precisions such as ['bf16-mixed', '32-true'], not one value")
        from mixprec._inputs import canonical_precision
        from mixprec._registry import registry

        snap = registry.snapshot()
        names = []
        for value in candidates:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TypeError(f"each candidate must be a precision str or int, not {type(value).__name__}")
            name = canonical_precision(value, snap)
            if name == "auto":
                raise PrecisionError("'auto' cannot be a candidate of tune: list the precisions to measure.")
            names.append(name)
        if not names:
            raise PrecisionError(f"candidates is empty: list the precisions to measure, or pass None for {AUTO_ORDER}.")
    return list(dict.fromkeys([BASELINE, *names]))


def _resolve_device(device: Any) -> Device:
    explanation = mixprec.explain(BASELINE, device)
    if explanation.error is not None:
        raise PrecisionError(f"tune cannot train on {explanation.device}: {explanation.error}")
    return Device.parse(explanation.device)


# --- tune -------------------------------------------------------------------------------------------


def tune(
    model: torch.nn.Module,
    example: Any,
    *,
    device: Any = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    candidates: Iterable[str | int] | None = None,
    target: str = "fabric",
    strategy: str | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    steps: int = DEFAULT_STEPS,
    max_drift: float = DEFAULT_MAX_DRIFT,
    refresh: bool | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """Measure ``model`` training on ``example`` in each candidate precision here, and choose the fastest safe one.

    Args:
        model: the caller's model; it is copied, never changed.
        example: one batch as the model takes it: a tensor (``model(example)``), a tuple or list
            (``model(*example)``) or a dict (``model(**example)``).
        device: where to measure, as for :func:`mixprec.get_precision` (None: the best device present).
        loss_fn: the model's output to a scalar loss. Default: a scalar floating tensor in the
            output is the loss, else the mean of the squares of the output's floating tensors.
        optimizer: the caller's optimizer; one of its class with its param-group settings is built
            for each copy (its state is not copied). Default: SGD, learning rate 1e-3.
        candidates: the precisions to measure; default "bf16-mixed", "16-mixed" and "32-true".
            "True" half precisions and "fp8-mixed" are measured only when listed here. fp32
            ("32-true") is always measured: every speed and drift is relative to it.
        target, strategy: of the precision object :meth:`TuneResult.precision_object` builds.
        budget_s: wall-clock seconds the measurement is planned to fit in; it cuts steps and candidates
            to fit and says what it cut (learning that a precision is slow costs its first step).
        steps: the most training steps each precision trains (at least 3: two warm up, one is timed).
        max_drift: the largest relative difference from fp32's loss that counts as safe.
        refresh: measure again even if the cache holds this measurement; None reads ``MIXPREC_TUNE_REFRESH``.
        progress: called with the fraction of the work done (0 to 1) as the measurement runs.

    Returns:
        a :class:`TuneResult`; never a precision that is not safe, and fp32 when nothing is faster.

    Raises:
        PrecisionError: for an argument the caller can fix, a device that is not here, or a model
            whose loss is not finite in fp32 either.
        TypeError: for an argument of the wrong type.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if example is None:
        raise PrecisionError("example is None: pass one batch of the model's input, as the model's forward takes it.")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, not {type(loss_fn).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, not {type(optimizer).__name__}")
    if refresh is not None and not isinstance(refresh, bool):
        raise TypeError(f"refresh must be True, False or None, not {type(refresh).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function of the fraction done, or None, not {type(progress).__name__}")
    _check_trainable(model)
    _check_steps_without_closure(optimizer)
    check_target(target)
    call = _Call(
        model,
        example,
        _resolve_device(device),
        _candidates(candidates),
        target,
        strategy,
        loss_fn,
        optimizer,
        _checked_number("budget_s", budget_s, 0.0),
        int(_checked_number("steps", steps, WARM_UP_STEPS + 1, integer=True)),
        _checked_number("max_drift", max_drift, 0.0),
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _agreed(call, refresh, progress)
    _warn_if_ranks_may_disagree()
    return _cached(call, refresh, progress)


def _check_trainable(model: torch.nn.Module) -> None:
    """Refuse a model tune cannot train a step of: one without data (on "meta") or with nothing to train."""
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise PrecisionError(
            "The model's tensors are on the 'meta' device and hold no data, so it cannot train: materialise it"
            " first (model.to_empty(device=...) and initialise or load its weights), then call tune."
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise PrecisionError(
            "The model has no parameter that requires grad, so there is no training step to measure: tune the"
            " model with the parameters it trains unfrozen (requires_grad_(True)), or ask"
            " get_precision('auto', device) without model= for the answer from the hardware alone."
        )


def _check_steps_without_closure(optimizer: torch.optim.Optimizer | None) -> None:
    """Refuse an optimizer whose ``step`` needs a closure (LBFGS): tune steps as Fabric's loop does, without one."""
    if optimizer is None:
        return
    closure = inspect.signature(type(optimizer).step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise PrecisionError(
            f"{type(optimizer).__name__}.step needs a closure, and tune trains steps of the model without one: pass"
            " optimizer=None (SGD) or an optimizer that steps without a closure (Adam, AdamW), whose speed in each"
            " precision is the same forward and backward."
        )


def _warn_if_ranks_may_disagree() -> None:
    """Warn where the environment says there are several ranks but no process group lets them agree."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    if world > 1:
        warnings.warn(
            f"WORLD_SIZE={world} but no torch.distributed process group is initialised: each rank measures on its"
            " own and ranks may choose different precisions. Initialise the process group before calling tune"
            " (docs/distributed.md).",
            PrecisionWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class _Call:
    """The arguments of one ``tune`` call, checked."""

    model: torch.nn.Module
    example: Any
    device: Device
    candidates: list[str]
    target: str
    strategy: str | None
    loss_fn: Callable[[Any], torch.Tensor] | None
    optimizer: torch.optim.Optimizer | None
    budget_s: float
    steps: int
    max_drift: float

    def key(self) -> tuple[str, dict[str, Any]]:
        """The cache key of this call and what it hashes."""
        versions = {
            f"{r.backend} {r.distribution}": r.version or "" for r in mixprec.available(str(self.device)) if r.precision
        }
        versions["mixprec"] = mixprec.__version__
        optimizer = self.optimizer
        settings = {
            "candidates": self.candidates,
            "target": self.target,
            "strategy": self.strategy,
            "loss_fn": None if self.loss_fn is None else [_qualified(self.loss_fn), _code(self.loss_fn)],
            "optimizer": None
            if optimizer is None
            else [
                _qualified(optimizer),
                [{k: repr(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            ],
            "budget_s": self.budget_s,
            "steps": self.steps,
            "max_drift": self.max_drift,
        }
        material = key_material(self.model, self.example, torch.device(str(self.device)), versions, settings)
        return cache_key(material), material


def _qualified(value: object) -> str:
    kind = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(kind))}"


def _code(function: object) -> str:
    """A digest of what a Python function computes (its bytecode, names and constants), "" for other callables.

    Two lambdas share a qualified name (``module.<lambda>``): the code tells them apart, so that one
    loss function's measurement is never read back for another.
    """
    code = getattr(function, "__code__", None)
    return "" if not isinstance(code, types.CodeType) else hashlib.sha256(_code_text(code).encode()).hexdigest()[:16]


def _code_text(code: types.CodeType) -> str:
    constants = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{constants}"


def _cached(call: _Call, again: bool | None, progress: Progress | None) -> TuneResult:
    """The cached result of ``call`` unless asked to measure again; else a new measurement, then cached."""
    key, material = call.key()
    if not refresh(again):
        stored = read(key)
        if stored is not None:
            try:
                result = TuneResult.from_dict(stored)
            except (KeyError, TypeError, ValueError) as exc:
                warnings.warn(
                    f"mixprec tune's cache entry {key} does not hold a measurement ({type(exc).__name__}: {exc});"
                    " it is ignored and the model is measured again.",
                    PrecisionWarning,
                    stacklevel=3,
                )
            else:
                return dataclasses.replace(result, cached=True, seconds=0.0, device=str(call.device))
    result = _measure(call, key, progress)
    write(key, material, result.to_dict())
    return result


def _agreed(call: _Call, again: bool | None, progress: Progress | None) -> TuneResult:
    """Rank 0's result on every rank of the process group, for this rank's device; rank 0's error on every rank."""
    import torch.distributed as dist

    payload: list[Any] = [None]
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload = [("result", _cached(call, again, progress).to_dict())]
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            failure = exc
            payload = [("error", f"{type(exc).__name__}: {exc}")]
    dist.broadcast_object_list(payload, src=0)
    if failure is not None:
        raise failure
    kind, value = payload[0]
    if kind == "error":
        raise PrecisionError(f"tune failed on rank 0, so no rank can choose a precision: {value}")
    return dataclasses.replace(TuneResult.from_dict(value), device=str(call.device))


# --- measuring ------------------------------------------------------------------------------------


#: Held while a process measures: the random states are the process's, and concurrent trials would time each other.
_MEASURING = threading.RLock()


def _measure(call: _Call, key: str, progress: Progress | None) -> TuneResult:
    """Train every candidate that can run here on copies, and choose; the caller's random state is restored.

    One measurement runs at a time in a process: another thread's call waits for it.
    """
    with _MEASURING:
        return _measure_alone(call, key, progress)


def _measure_alone(call: _Call, key: str, progress: Progress | None) -> TuneResult:
    start = time.perf_counter()
    device = torch.device(str(call.device))
    runnable, not_measured = _runnable(call)
    clock = clock_for(device)
    meter = MemoryMeter(device)
    with _caller_state_kept(device):
        pairs, left_out, cut = _warm_up(call, runnable, device, meter, start, progress)
        cut += _rounds(pairs, call, clock, start, progress)
    if progress is not None:
        progress(1.0)
    measurements = _measurements(pairs, call.max_drift, cut)
    chosen, reason = _choose(measurements, call.device)
    return TuneResult(
        precision=chosen.precision,
        backend=chosen.backend,
        reason=reason,
        device=str(call.device),
        target=call.target,
        strategy=call.strategy,
        measurements=tuple(sorted(measurements, key=lambda m: -m.speedup)),
        not_measured=tuple(not_measured + left_out),
        cut=tuple(cut),
        clock=clock.name,
        memory_method=meter.method,
        budget_s=call.budget_s,
        steps=call.steps,
        max_drift=call.max_drift,
        seconds=time.perf_counter() - start,
        key=key,
    )


class _Option(NamedTuple):
    """A candidate some backend can run here: the backend mixprec selects for it, and its status."""

    precision: str
    backend: str
    status: str


def _runnable(call: _Call) -> tuple[list[_Option], list[tuple[str, str]]]:
    """The candidates some backend can run on the device (available or slow), and the others with why."""
    runnable: list[_Option] = []
    not_measured: list[tuple[str, str]] = []
    for name in call.candidates:
        explanation = mixprec.explain(name, str(call.device))
        chosen = next((c for c in explanation.candidates if c.chosen), None)
        if chosen is None:
            not_measured.append((name, explanation.error or "no backend can run it here"))
        else:
            runnable.append(_Option(name, chosen.backend, chosen.status))
    if not runnable or runnable[0].precision != BASELINE:
        raise PrecisionError(f"tune needs '32-true' on {call.device} to compare with, and no backend can run it here.")
    return runnable, not_measured


@contextlib.contextmanager
def _caller_state_kept(device: torch.device) -> Iterator[None]:
    """Leave the caller's random states (torch's CPU and device generators, Python's, NumPy's) as they were."""
    python = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = None if numpy is None else numpy.random.get_state()
    # A device module without a generator of its own (some out-of-tree devices) draws from the CPU's.
    seeded = device.type != "cpu" and hasattr(torch.get_device_module(device.type), "get_rng_state")
    devices = [device] if seeded else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        try:
            yield
        finally:
            random.setstate(python)
            if numpy is not None:
                numpy.random.set_state(numpy_state)


def _precision(call: _Call, option: _Option) -> Any:
    with warnings.catch_warnings():
        # A slow precision is measured to see whether it is slow for this model; the warning would only repeat it.
        warnings.simplefilter("ignore", PrecisionWarning)
        return mixprec.get_precision(option.precision, str(call.device), backend=option.backend)


def _warm_up(
    call: _Call,
    runnable: Sequence[_Option],
    device: torch.device,
    meter: MemoryMeter,
    start: float,
    progress: Progress | None,
) -> tuple[list[tuple[_Option, Trial]], list[tuple[str, str]], list[str]]:
    """Build each candidate's trial and train its warm-up steps, fp32 first, while the budget allows.

    Returns the trials, the candidates the budget left out (with why), and what was cut.
    """
    # Built first, so that what building imports (lightning, a backend's modules) is in neither the memory nor the time.
    precisions = [_precision(call, option) for option in runnable]
    pairs: list[tuple[_Option, Trial]] = []
    left_out: list[tuple[str, str]] = []
    cut: list[str] = []
    wall = Clock("wall time", time.perf_counter)
    # Every precision starts from the caller's random state, so that dropout draws the same masks in each.
    initial = rng_state(device)
    for option, precision in zip(runnable, precisions, strict=True):
        if pairs:
            # A further candidate needs its warm-up and one timed step: at least three of fp32's steps.
            fp32 = pairs[0][1]
            if time.perf_counter() - start + (WARM_UP_STEPS + 1) * fp32.estimate_s > call.budget_s:
                left_out.append((option.precision, f"not measured: the {call.budget_s:g} s budget ran out"))
                cut.append(
                    f"{option.precision} was not measured: the {call.budget_s:g} s budget ran out (fp32 trains at"
                    f" about {fp32.estimate_s:.3g} s a step); raise budget_s to measure it"
                )
                continue
        meter.start()
        try:
            trial = Trial(
                precision, call.model, call.optimizer, call.example, call.loss_fn or default_loss, device, initial
            )
            first = trial.train(1, wall)
        except PrecisionError:
            raise
        except Exception as exc:
            if not pairs:  # fp32 itself: the model, the example or the loss is at fault
                raise PrecisionError(
                    f"Training the model on the example failed in '32-true' ({type(exc).__name__}: {exc}): check that"
                    " model(example) runs and that loss_fn takes its output and returns a scalar."
                ) from exc
            left_out.append((option.precision, f"not measured: training failed ({type(exc).__name__}: {exc})"))
            continue
        trial.memory = meter.peak()
        # Its first step is the first estimate of it: two more (a warm step and a timed one) must fit.
        if pairs and time.perf_counter() - start + 2 * first > call.budget_s:
            left_out.append((option.precision, f"not measured: its first step took {first:.3g} s"))
            cut.append(
                f"{option.precision} was not measured: its first step took {first:.3g} s, so measuring it would"
                f" pass the {call.budget_s:g} s budget; raise budget_s to measure it"
            )
            continue
        trial.estimate_s = trial.train(1, wall)
        pairs.append((option, trial))
        if progress is not None:
            progress(min(0.99, (time.perf_counter() - start) / call.budget_s))
    return pairs, left_out, cut


def _rounds(
    pairs: Sequence[tuple[_Option, Trial]], call: _Call, clock: Clock, start: float, progress: Progress | None
) -> list[str]:
    """Share what is left of the budget out and train the trials in interleaved rounds; what was cut."""
    trials = [trial for _, trial in pairs]
    share = max(0.0, call.budget_s - (time.perf_counter() - start)) / len(trials)
    most = call.steps - WARM_UP_STEPS
    # min before int: a huge budget over a fast step is an infinite float, which int() refuses.
    planned = [max(1, int(min(most, share / max(t.estimate_s, 1e-9)))) for t in trials]
    cut = [
        f"{option.precision} trained {n + WARM_UP_STEPS} of {call.steps} steps: at about {trial.estimate_s:.3g} s"
        f" a step, more would pass the {call.budget_s:g} s budget"
        for (option, trial), n in zip(pairs, planned, strict=True)
        if n < most
    ]
    rounds = min(ROUNDS, max(planned))
    schedule = [*zip(trials, [_split(n, min(rounds, n)) for n in planned], strict=True)]
    total = sum(t.estimate_s * n for t, n in zip(trials, planned, strict=True))
    before = 0.0 if progress is None else min(0.99, (time.perf_counter() - start) / call.budget_s)
    done = 0.0
    for index in range(rounds):
        turn = index % len(trials)  # the order rotates, so no precision always runs first or last
        for trial, counts in schedule[turn:] + schedule[:turn]:
            if index < len(counts):
                trial.rounds[index] = trial.train(counts[index], clock)
                done += trial.estimate_s * counts[index]
                if progress is not None and total > 0:
                    progress(before + (1.0 - before) * min(1.0, done / total))
        if index + 1 < rounds and time.perf_counter() - start > call.budget_s:
            cut.append(f"measuring stopped after round {index + 1} of {rounds}: the {call.budget_s:g} s budget ran out")
            break
    return cut


def _split(steps: int, rounds: int) -> list[int]:
    return [steps * (i + 1) // rounds - steps * i // rounds for i in range(rounds)]


# --- choosing -------------------------------------------------------------------------------------


def _measurements(pairs: Sequence[tuple[_Option, Trial]], max_drift: float, cut: Sequence[str]) -> list[Measurement]:
    """Each trial's numbers against fp32's (the first); an error if fp32's own loss was not finite."""
    base = pairs[0][1]
    if not finite(base.losses):
        raise PrecisionError(
            f"The loss is not finite in fp32 either ({base.losses[-1]} after {len(base.losses)} steps), so no precision"
            " can be judged: check the model, the example and loss_fn, or lower the optimizer's learning rate."
        )
    return [_measurement(option, trial, base, max_drift, cut) for option, trial in pairs]


def _measurement(option: _Option, trial: Trial, base: Trial, max_drift: float, cut: Sequence[str]) -> Measurement:
    shared = sorted(base.rounds.keys() & trial.rounds.keys())
    is_finite = finite(trial.losses)
    moved = drift(trial.losses, base.losses) if is_finite else math.inf
    notes = []
    if not is_finite:
        step = next(i for i, value in enumerate(trial.losses) if not math.isfinite(value))
        notes.append(f"refused: the loss became {trial.losses[step]} at step {step + 1}")
    elif moved is not None and moved > max_drift:
        notes.append(f"refused: the loss drifted {moved:.1%} from fp32's, more than the {max_drift:.1%} allowed")
    notes += [line for line in cut if line.startswith(f"{option.precision} ")]
    return Measurement(
        precision=option.precision,
        backend=option.backend,
        status=option.status,
        steps=len(trial.losses),
        step_ms=statistics.median(trial.rounds.values()) * 1e3,
        round_ms=tuple(trial.rounds[r] * 1e3 for r in sorted(trial.rounds)),
        speedup=statistics.median(base.rounds[r] / trial.rounds[r] for r in shared),
        peak_memory=trial.memory,
        finite=is_finite,
        drift=moved,
        final_loss=trial.losses[-1],
        safe=is_finite and moved is not None and moved <= max_drift,
        note="; ".join(notes),
    )


def _choose(measurements: Sequence[Measurement], device: Device) -> tuple[Measurement, str]:
    """The fastest safe measurement, and why: fp32 unless another is clearly faster (:func:`_clearly_faster`)."""
    baseline = next(m for m in measurements if m.precision == BASELINE)
    faster = [m for m in measurements if m.safe and m is not baseline and _clearly_faster(m, baseline)]
    chosen = max(faster, key=lambda m: m.speedup, default=baseline)
    others = []
    for m in sorted(measurements, key=lambda m: -m.speedup):
        if m is chosen or m is baseline:
            continue
        if not m.safe:
            others.append(f"{m.precision} was {m.note.split(';')[0]}")
        elif m.speedup >= MIN_GAIN and not _clearly_faster(m, baseline):
            others.append(
                f"{m.precision} ran at {m.speedup:.2f}x fp32's speed, but its fastest round was not faster than"
                " fp32's: within the noise"
            )
        else:
            others.append(f"{m.precision} ran at {m.speedup:.2f}x fp32's speed")
    passed = f"; {'; '.join(others)}" if others else ""
    if chosen is baseline:
        return chosen, (
            f"'32-true': no other safe precision measured on {device} was clearly faster"
            f" (by {MIN_GAIN - 1:.0%}){passed}."
        )
    return chosen, (
        f"{chosen.precision!r} is the fastest safe precision measured on {device}: {chosen.speedup:.2f}x fp32's"
        f" speed, its loss within {chosen.drift or 0.0:.2%} of fp32's{passed}."
    )


def _clearly_faster(m: Measurement, baseline: Measurement) -> bool:
    """At least MIN_GAIN times fp32's speed by the median of per-round ratios, and faster in its fastest round.

    The fastest round is the one least disturbed by other work on the machine (as in the benchmarks'
    harness): a precision that wins the median only because fp32's rounds were disturbed loses there.
    """
    return m.speedup >= MIN_GAIN and min(m.round_ms) < min(baseline.round_ms)


def tuned_precision(
    precision: object,
    device: Any,
    backend: str | None,
    target: str,
    strategy: str | None,
    model: Any,
    example: Any,
    options: dict[str, Any],
) -> Precision | TrainerPrecision:
    """``get_precision("auto", device, model=..., example=...)``: the object of :func:`tune`'s choice."""
    if precision != "auto":
        raise PrecisionError(
            f"model= and example= are for precision 'auto' only (measure, then choose), not {shown(precision)}:"
            " drop them, or ask for 'auto'."
        )
    if model is None or example is None:
        missing = "model" if model is None else "example"
        raise PrecisionError(f"'auto' with model= needs example= too, and with example= model=: pass {missing}=.")
    if backend is not None:
        raise PrecisionError(
            "backend= cannot be combined with model=: tune measures the backend mixprec selects for each precision;"
            " drop backend=, or ask for a precision by name."
        )
    result = tune(model, example, device=device, target=target, strategy=strategy)
    return result.precision_object(**options)
