"""What ``tune`` measures: a copy of the caller's model trained in one precision, step by step.

A :class:`Trial` owns one precision's copy of the model, an optimizer rebuilt for that copy and its
own random state, and trains through the precision object's own methods in the order Lightning
Fabric calls them. It records each step's loss, the time per step of each round it trains in, and
the memory its first step needed. The caller's model, optimizer and random state are never touched.

The clocks (:func:`clock_for`), as the benchmarks time: on the CPU with one torch thread, the
thread's CPU time (``time.thread_time``), so that time spent descheduled on a busy machine is not
counted; otherwise wall time, up to the end of the device's work.

The memory (:class:`MemoryMeter`): on an accelerator, torch's peak-allocation statistics of that
device (``torch.accelerator``), the peak over what was allocated before; on the CPU under Linux, the
rise of the process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``)
over its resident size before: what the process really took from the system, tensors included,
but memory freed earlier by the process and reused is not counted again. Elsewhere: not measured.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mixprec._errors import PrecisionError

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "Clock",
    "MemoryMeter",
    "RNGState",
    "Trial",
    "clock_for",
    "default_loss",
    "drift",
    "finite",
    "rebuild_optimizer",
    "rng_state",
]

#: The learning rate of the SGD optimizer tune trains with when the caller passes none.
DEFAULT_LEARNING_RATE = 1e-3

LossFn = Callable[[Any], torch.Tensor]


class RNGState(NamedTuple):
    """The random states a trial restores before each of its rounds (see :func:`rng_state`)."""

    cpu: torch.Tensor
    #: the device's generator; None on the CPU and for a device module without one
    device: torch.Tensor | None
    python: Any
    #: NumPy's global generator; None where NumPy is not imported
    numpy: Any


def default_loss(output: Any) -> torch.Tensor:
    """The loss tune trains with when the caller passes no ``loss_fn``.

    A scalar floating tensor in the output (the first one, e.g. a model that computes its own loss)
    is the loss; otherwise the sum over the output's floating tensors of the mean of their squares.
    """
    tensors = list(_floating(output))
    scalar = next((t for t in tensors if t.ndim == 0), None)
    if scalar is not None:
        return scalar
    if not tensors:
        raise PrecisionError(
            "The model's output holds no floating-point tensor to make a loss from: pass loss_fn=, a function"
            " that takes the model's output and returns a scalar tensor."
        )
    return torch.stack([t.float().pow(2).mean() for t in tensors]).sum()


def _floating(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _floating(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _floating(item)


def rebuild_optimizer(
    optimizer: torch.optim.Optimizer | None, source: torch.nn.Module, target: torch.nn.Module
) -> torch.optim.Optimizer:
    """An optimizer of ``optimizer``'s class and param-group settings over ``target``'s parameters.

    Parameters are matched by their position in ``source.parameters()``; the optimizer's state
    (momentum and the like) is not copied, so every precision starts alike. None gives SGD with
    :data:`DEFAULT_LEARNING_RATE`.
    """
    params = list(target.parameters())
    if optimizer is None:
        return torch.optim.SGD(params, lr=DEFAULT_LEARNING_RATE)
    position = {id(p): i for i, p in enumerate(source.parameters())}
    if len(position) != len(params):
        raise PrecisionError(
            f"The precision's convert_module changed the model's parameter count ({len(position)} to {len(params)}),"
            " so optimizer= cannot be rebuilt for it: leave that precision out of candidates, or pass optimizer=None."
        )
    groups = []
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in position]
        if missing:
            raise PrecisionError(
                f"optimizer= holds {len(missing)} parameter(s) that are not the model's: pass the optimizer built"
                " over model.parameters(), or optimizer=None for SGD."
            )
        settings = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
        groups.append({**settings, "params": [params[position[id(p)]] for p in group["params"]]})
    # The defaults hold settings the constructor does not take (AdamW's decoupled_weight_decay): pass those it takes.
    accepted = inspect.signature(type(optimizer).__init__).parameters
    settings = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    try:
        return type(optimizer)(groups, **settings)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PrecisionError(
            f"Cannot build another {type(optimizer).__name__} from its settings ({exc}): pass optimizer=None"
            " to tune with SGD."
        ) from None


class Clock(NamedTuple):
    """What step times are measured with: its name, as results report it, and the function that reads it."""

    name: str
    read: Callable[[], float]


def clock_for(device: torch.device) -> Clock:
    """The calling thread's CPU time on the CPU with one torch thread; wall time otherwise.

    With one thread all of a CPU step's work runs on the calling thread, and its CPU time leaves out
    the time the thread waited while other processes ran: a busy machine does not move it. With
    several threads, CPU time would count the worker threads' spinning as work, so wall time it is,
    as on an accelerator.
    """
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return Clock("thread CPU time", time.thread_time)
    return Clock("wall time", time.perf_counter)


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class MemoryMeter:
    """The peak memory one block of work takes on a device, by the method :attr:`method` names."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = self._method()
        self._before = 0

    def _method(self) -> str:
        if self.device.type != "cpu":
            accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
            if accelerator is not None and accelerator.type == self.device.type and _keeps_statistics(self.device):
                return f"peak bytes allocated on {self.device.type} over those before (torch.accelerator)"
            return "not measured"
        if _STATUS.exists() and _clear_peak():
            return "rise of the process's peak resident set size (Linux VmHWM) over its resident size before"
        return "not measured"

    def start(self) -> None:
        if self.method.startswith("peak bytes"):
            torch.accelerator.synchronize(self.device)
            torch.accelerator.reset_peak_memory_stats(self.device)
            self._before = torch.accelerator.memory_allocated(self.device)
        elif self.method.startswith("rise"):
            _clear_peak()
            self._before = _status_bytes("VmRSS")

    def peak(self) -> int | None:
        """Bytes above the level at :meth:`start`, at the peak since; None where not measured."""
        if self.method.startswith("peak bytes"):
            torch.accelerator.synchronize(self.device)
            return max(0, torch.accelerator.max_memory_allocated(self.device) - self._before)
        if self.method.startswith("rise"):
            return max(0, _status_bytes("VmHWM") - self._before)
        return None


def _keeps_statistics(device: torch.device) -> bool:
    """Whether ``device``'s allocator keeps the statistics torch.accelerator reads: an out-of-tree device's own
    allocator may not (torch then raises "Allocator for ... is not a DeviceAllocator")."""
    try:
        torch.accelerator.memory_allocated(device)
    except RuntimeError:
        return False
    return True


def _clear_peak() -> bool:
    """Reset the process's peak resident set size to its current size (Linux 4.0+); whether that worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


class Trial:
    """One precision training its own copy of the caller's model on the caller's example batch."""

    def __init__(
        self,
        precision: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        example: Any,
        loss_fn: LossFn,
        device: torch.device,
        rng: RNGState | None = None,
    ) -> None:
        """``rng``: the random state its first step starts from (default: the current one); give every
        precision the same, so that a model that draws random numbers (dropout) draws the same in each."""
        from lightning.fabric.utilities.apply_func import move_data_to_device

        self.precision = precision
        self.device = device
        self.loss_fn = loss_fn
        self.model = precision.convert_module(copy.deepcopy(model).to(device))
        self.optimizer = rebuild_optimizer(optimizer, model, self.model)
        self.example = move_data_to_device(example, device)
        self.rng = rng_state(device) if rng is None else rng
        #: the loss of every step trained, in order
        self.losses: list[float] = []
        #: seconds per step by the clock, in each round trained, by round number
        self.rounds: dict[int, float] = {}
        #: bytes the model's copy, its optimizer and its first step took on the device (None where not measured)
        self.memory: int | None = None
        #: wall seconds a step takes once warm: the estimate the rounds are planned with
        self.estimate_s = 0.0

    def train(self, steps: int, clock: Clock) -> float:
        """Train ``steps`` steps; return the clock's seconds per step, measured to the end of the device's work."""
        _set_rng_state(self.device, self.rng)
        losses = []
        start = clock.read()
        for _ in range(steps):
            losses.append(self._step())
        values = torch.stack(losses).tolist()  # waits for the device, so an asynchronous device is timed whole
        elapsed = (clock.read() - start) / steps
        self.rng = rng_state(self.device)
        self.losses.extend(values)
        return elapsed

    def _step(self) -> torch.Tensor:
        precision = self.precision
        with torch.enable_grad():
            args, kwargs = precision.convert_input(_call_arguments(self.example))
            with precision.forward_context():
                output = self.model(*args, **kwargs)
            output = precision.convert_output(output)
            loss = self.loss_fn(output)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise PrecisionError(
                    "loss_fn must return a scalar tensor (one element), such as a mean over the batch."
                )
            precision.pre_backward(loss, self.model)
            precision.backward(loss, self.model)
            precision.post_backward(loss, self.model)
            precision.optimizer_step(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().float().reshape(())


def _call_arguments(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """How the model is called with the example: a tuple or list is the positional arguments, a dict the keywords."""
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    if isinstance(example, Mapping):
        return (), dict(example)
    return (example,), {}


def rng_state(device: torch.device) -> RNGState:
    """The random states a model's forward may draw from: torch's CPU generator, the device's where ``device`` is
    not the CPU, Python's, and NumPy's where NumPy is imported."""
    module = None if device.type == "cpu" else torch.get_device_module(device.type)
    # A device module without a generator of its own (some out-of-tree devices) draws from the CPU's.
    get_state = getattr(module, "get_rng_state", None)
    numpy = sys.modules.get("numpy")
    return RNGState(
        torch.get_rng_state(),
        None if get_state is None else get_state(device),
        random.getstate(),
        None if numpy is None else numpy.random.get_state(),
    )


def _set_rng_state(device: torch.device, state: RNGState) -> None:
    torch.set_rng_state(state.cpu)
    if state.device is not None:
        torch.get_device_module(device.type).set_rng_state(state.device, device)
    random.setstate(state.python)
    numpy = sys.modules.get("numpy")
    if numpy is not None and state.numpy is not None:
        numpy.random.set_state(state.numpy)


def drift(losses: Sequence[float], reference: Sequence[float]) -> float | None:
    """The largest relative difference of ``losses`` from ``reference`` over the steps both trained; None if none."""
    shared = list(zip(losses, reference, strict=False))
    if not shared:
        return None
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in shared)


def finite(losses: Sequence[float]) -> bool:
    return all(math.isfinite(value) for value in losses)
